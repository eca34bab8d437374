"""EAD data-quality feedback for central: what was wrong with the declarations this lane received.

Every `interval_s` the station publishes, on `screening/v1/{site}/{lane}/ead/quality`, a summary of
the declarations it received in that interval: by origin country (the sender's country) and by
sender, how many records came, how many had at least one finding, and which reason codes; each code
tagged with the WCO data-quality dimension it measures (completeness, accuracy, consistency,
timeliness: `station.ead.codes.FINDING_DIMENSIONS`), and how many declarations came late: after
their item had passed the gate, too late to decide it by (timeliness). Posts use it to go back to the
senders and origins whose data is poor (WCO-UPU joint declaration, 2023: improve the quality and
accuracy of the data exchanged). The message goes through the outbox like every other, so it is
durable and in order with the item results.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Collection
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from station.contract import iso_time
from station.ead.checks import check_record
from station.ead.codes import DIMENSIONS, FINDING_DIMENSIONS, LATE
from station.ead.record import EadRecord
from station.store import OutboxMessage, Store
from station.writer import StoreWriter

TOP_SENDERS = 20  # the senders with the most defective records; the rest are counted, not named


def summarise(records: list[EadRecord], since: float, until: float, late: Collection[str] = ()) -> dict[str, Any]:
    """The quality summary of `records` (received between `since` and `until`, Unix seconds); `late`:
    the item ids among them whose declaration arrived after the item passed the gate."""
    by_country: dict[str, dict[str, Any]] = defaultdict(lambda: {"records": 0, "defective": 0, "codes": Counter()})
    by_sender: dict[tuple[str, str], dict[str, Any]] = defaultdict(
        lambda: {"records": 0, "defective": 0, "codes": Counter()})
    total: Counter[str] = Counter()
    dimensions: Counter[str] = Counter()  # records with a finding in each dimension
    defective = 0
    for record in records:
        codes = sorted({r.code for r in check_record(record)})
        dimensions.update({FINDING_DIMENSIONS[code] for code in codes})
        country, sender = record.sender.country, (record.sender.name, record.sender.country)
        for bucket in (by_country[country], by_sender[sender]):
            bucket["records"] += 1
            bucket["defective"] += bool(codes)
            bucket["codes"].update(codes)
        total.update(codes)
        defective += bool(codes)
    senders = sorted(by_sender.items(), key=lambda kv: (-kv[1]["defective"], -kv[1]["records"], kv[0]))
    late_records = [r for r in records if r.item_id in late]
    return {
        "schema": "screening/v1/ead-quality",
        "from": _iso(since), "to": _iso(until),
        "records": len(records), "defective": defective, "codes": dict(sorted(total.items())),
        "by_origin_country": {c: _plain(v) for c, v in sorted(by_country.items())},
        "by_sender": [{"name": name, "country": country, **_plain(v)} for (name, country), v in senders[:TOP_SENDERS]],
        "senders_not_listed": max(0, len(senders) - TOP_SENDERS),
        "dimensions": _dimensions(total, dimensions, len(late_records)),
        "late": {"records": len(late_records),
                 "by_origin_country": dict(sorted(Counter(r.sender.country for r in late_records).items()))},
    }


def _dimensions(codes: Counter[str], records: Counter[str], late: int) -> dict[str, Any]:
    """Per WCO dimension: how many records have a finding in it, and its codes with their counts (each
    counted once per record, as `codes` is); a late declaration is a timeliness finding (LATE)."""
    found: dict[str, Any] = {d: {"records": records[d], "codes": {}} for d in DIMENSIONS}
    for code, count in sorted(codes.items()):
        found[FINDING_DIMENSIONS[code]]["codes"][code] = count
    if late:
        found[FINDING_DIMENSIONS[LATE]]["records"] += late
        found[FINDING_DIMENSIONS[LATE]]["codes"][LATE] = late
    return found


def _plain(bucket: dict[str, Any]) -> dict[str, Any]:
    return {"records": bucket["records"], "defective": bucket["defective"],
            "codes": dict(sorted(bucket["codes"].items()))}


def _iso(t: float) -> str:
    return iso_time(t)


async def publish_quality(path: Path, writer: StoreWriter, topic: str, interval_s: float,
                          notify: Callable[[], None], *, site: str = "", lane: str = "") -> None:
    """Forever: every `interval_s`, the summary of the records received since the last one, into
    the outbox (an interval with no records publishes nothing). Read and summed up in a process of its
    own: a bulk import can bring hundreds of thousands of records into one interval, and parsing them
    on a thread held the GIL long enough to stall the event loop for seconds (bench/import_stall.py)."""
    loop = asyncio.get_running_loop()
    pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    since = time.time()
    try:
        while True:
            await asyncio.sleep(interval_s)
            until = time.time()
            summary = await loop.run_in_executor(pool, _summary, path, since, until)
            if summary is not None:
                msg_id = f"{site}/{lane}/ead-quality/{until:.3f}"
                summary = {"msg_id": msg_id, "schema": summary.pop("schema"), "site": site, "lane": lane, **summary}
                message = OutboxMessage(msg_id, topic, json.dumps(summary))

                def enqueue(store: Store, message: OutboxMessage = message) -> None:
                    store.enqueue([message])

                done = writer.submit(enqueue, want_result=True)
                assert done is not None
                done.add_done_callback(lambda _: notify())
            since = until
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _summary(path: Path, since: float, until: float) -> dict[str, Any] | None:
    with Store(path) as store:
        records = store.ead_received(since, until)
        late = late_declarations(store, since, until)
    return summarise(records, since, until, late) if records else None


def late_declarations(store: Store, since: float, until: float) -> set[str]:
    """The item ids whose declaration (or its latest version) was received in [since, until) after an
    item with that id had passed the gate."""
    rows = store.db.execute(
        "SELECT e.item_id FROM ead_records e WHERE e.received_at >= ? AND e.received_at < ? AND EXISTS"
        " (SELECT 1 FROM items i WHERE i.item_id = e.item_id AND i.routed_at < e.received_at)",
        (since, until)).fetchall()
    return {str(r[0]) for r in rows}
