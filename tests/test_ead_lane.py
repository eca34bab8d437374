"""EAD end to end: the simulated lane with central's feed over a real Mosquitto broker.

Declarations arrive on `ead/v1/{site}/records` (some with seeded defects, some only after their item
passed the gate); the station checks them, weighs them against the scan and the scale, decides with
the default rules, revises decisions when a declaration comes late, and publishes a data-quality
summary.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import aiomqtt
import pytest

from simulator.ead_feed import DEFECTS
from station.cli.simulated import run_simulated
from station.config import (
    Config,
    LaneSection,
    MqttSection,
    SimulatorSection,
    StationSection,
    StorageSection,
)
from station.daemon import Lane
from station.store import Store
from tests.conftest import Broker
from tests.contract_check import validated
from tests.station.ead.test_ead_bounds import AUDIT_MESSAGE
from tests.station.ead.test_ead_record import record_dict
from tests.test_faults import stored, until

pytestmark = pytest.mark.slow  # the whole lane runs: daemon, simulator (and broker)

ITEMS = 40


def config(tmp_path: Path, broker: Broker) -> Config:
    return Config(
        station=StationSection(site="TEST", lane="L1"),
        lane=LaneSection(belt_speed_mm_s=1000),
        storage=StorageSection(data_dir=tmp_path),
        mqtt=MqttSection(host=broker.host, port=broker.port, ead_quality_interval_s=1),
        # seed 74: among its first 40 items, late declarations, two parcels declared 2-3x off their
        # weight, and three whose threats (two guns, a battery) the declaration does not mention
        simulator=SimulatorSection(seed=74, item_rate_per_s=2.0, threat_share=0.5, noread_share=0.0,
                                   invalid_s10_share=0.0, ead_missing_share=0.0, ead_late_share=0.15,
                                   ead_defect_share=0.5),
    )


def test_declarations_from_central_are_checked_weighed_against_the_scan_and_revised_when_late(
        tmp_path: Path, broker: Broker) -> None:
    published: list[tuple[str, dict[str, object]]] = []
    truths: dict[str, object] = {}

    async def central_listens(ready: asyncio.Event) -> None:
        async with aiomqtt.Client(broker.host, broker.port, identifier="test-central-listener") as client:
            await client.subscribe("screening/v1/TEST/L1/#", qos=1)
            ready.set()
            async for message in client.messages:
                published.append((str(message.topic), validated(str(message.topic), message.payload)))

    async def control(lane: Lane) -> None:
        assert lane.sim is not None
        await stored(lane, ITEMS, timeout=60)
        late = [o.truth for o in lane.sim.outcomes.values() if o.truth.ead_late and o.bin is not None]
        assert late, "the seed must send some declarations late"

        def revised() -> bool:
            rows = {r["scan_id"]: r for r in lane.store.items()}
            return all(t.scan_id in rows and rows[t.scan_id]["revision"] > 1 for t in late)

        await until(revised, 10, "every late declaration applied to its stored item")
        await until(lambda: any(t.endswith("/ead/quality") for t, _ in published), 5, "a quality summary")
        truths.update({o.truth.scan_id: o.truth for o in lane.sim.outcomes.values()})

    async def main() -> None:
        ready = asyncio.Event()
        listener = asyncio.create_task(central_listens(ready))
        await ready.wait()
        try:
            await run_simulated(config(tmp_path, broker), control=control)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    asyncio.run(main())
    with Store(tmp_path / "station.db") as store:
        rows = {r["scan_id"]: r for r in store.items()}
        alarms = {r["code"] for r in store.db.execute("SELECT code FROM alarms")}
    assert "EAD_REJECTED" not in alarms
    codes = {scan: {x["code"] for x in json.loads(r["reasons"])} for scan, r in rows.items()}

    # Late declarations: the item went to INSPECT (no declaration at the gate), then was decided again.
    late = [t for t in truths.values() if t.ead_late and t.scan_id in rows]  # type: ignore[attr-defined]
    results = {(m["uid"], m["revision"]): m for topic, m in published if topic.endswith("/items/result")}
    for t in late:
        row = rows[t.scan_id]  # type: ignore[attr-defined]
        assert row["routed"] == "INSPECT" and row["ead_status"] == "found" and "EAD_MISSING" not in codes[row["scan_id"]]
        first, revision = results[(row["uid"], 1)], results[(row["uid"], row["revision"])]
        assert first["ead"]["status"] == "missing" and "EAD_MISSING" in {r["code"] for r in first["reasons"]}  # type: ignore[index]
        assert revision["ead"]["status"] == "found" and revision["decision"] == row["decision"]  # type: ignore[index]
        assert revision["msg_id"] == f"{row['uid']}/result/{row['revision']}"

    # Seeded defects give their reason code; weight and content mismatches send the item to INSPECT.
    defective = [t for t in truths.values() if t.ead_defect and t.scan_id in rows]  # type: ignore[attr-defined]
    content_checked = 0
    for t in defective:
        row, code = rows[t.scan_id], DEFECTS[t.ead_defect]  # type: ignore[attr-defined]
        detected = {d["label"] for d in json.loads(row["explanation"])["evidence"]["detections"]}
        if t.ead_defect == "content_mismatch" and not detected & set(t.threats):  # type: ignore[attr-defined]
            continue  # the model missed the threat: nothing for the declaration to contradict
        content_checked += t.ead_defect == "content_mismatch"  # type: ignore[attr-defined]
        assert code in codes[t.scan_id], (t, dict(row))  # type: ignore[attr-defined]
        if code in ("WEIGHT_MISMATCH", "CONTENT_MISMATCH"):
            assert row["decision"] == "INSPECT", (t, dict(row))
    assert content_checked >= 1 and sum(t.ead_defect == "wrong_weight" for t in defective) >= 2  # type: ignore[attr-defined]

    # Clean declarations of honest parcels raise nothing, except where the model saw what is not there
    # (a false alarm, or a gun taken for a knife), which the declaration may fail to account for.
    clean = [t for t in truths.values() if not t.ead_defect and t.scan_id in rows]  # type: ignore[attr-defined]
    ead_codes = set(DEFECTS.values()) | {"EAD_MISSING"}
    assert clean
    for t in clean:
        detected = {d["label"] for d in json.loads(rows[t.scan_id]["explanation"])["evidence"]["detections"]}  # type: ignore[attr-defined]
        model_error = bool(detected - set(t.threats))  # type: ignore[attr-defined]
        assert codes[t.scan_id] & ead_codes <= ({"CONTENT_MISMATCH"} if model_error else set()), (t, detected)  # type: ignore[attr-defined]

    # Every result carries the EAD status and findings; central gets a data-quality summary.
    assert all("findings" in m["ead"] for topic, m in published if topic.endswith("/items/result"))  # type: ignore[operator]
    summaries = [m for topic, m in published if topic.endswith("/ead/quality")]
    assert sum(int(s["records"]) for s in summaries) > 0  # type: ignore[call-overload]
    assert all(set(s) >= {"by_origin_country", "by_sender", "codes", "defective"} for s in summaries)


def test_a_message_the_store_cannot_hold_is_an_alarm_and_the_station_keeps_routing(tmp_path: Path,
                                                                                    broker: Broker) -> None:
    """The audit's messages (a version of 2**63, a lone surrogate) once ended the daemon within a second."""
    item_id = "CP000000015FR"  # not in the simulator's feed
    surrogate = record_dict(item_id=item_id)
    surrogate["contents"][0]["description"] = "cotto\ud800n"

    async def control(lane: Lane) -> None:
        await stored(lane, 2, timeout=60)
        async with aiomqtt.Client(broker.host, broker.port, identifier="test-central-forger") as client:
            for payload in (AUDIT_MESSAGE, json.dumps(surrogate)):
                await client.publish("ead/v1/TEST/records", payload, qos=1)
            await until(lambda: lane.runtime.alarms.get("EAD_REJECTED", 0) >= 2, 10, "two EAD_REJECTED alarms")
            await client.publish("ead/v1/TEST/records", json.dumps(record_dict(item_id=item_id)), qos=1)
            await until(lambda: lane.store.ead_for(item_id) is not None, 10, "the valid record stored")
        await stored(lane, lane.runtime.items_stored + 2, timeout=30)  # still routing
        assert lane.runtime.alarms["EAD_REJECTED"] == 2

    asyncio.run(run_simulated(config(tmp_path, broker), control=control))
    with Store(tmp_path / "station.db") as store:
        details = [r["detail"] for r in store.db.execute("SELECT detail FROM alarms WHERE code = 'EAD_REJECTED'")]
    assert len(details) == 2 and "version" in details[0] and "contents[0].description" in details[1]


def test_a_file_imported_while_the_lane_runs_reaches_the_lane_the_way_centrals_declarations_do(
        tmp_path: Path) -> None:
    """`station ead import` into a running station's data folder: the station hears of it and decides
    again an item it stored without its declaration (the same way in as a declaration over MQTT)."""
    import numpy as np

    from simulator.ead_feed import make_record

    cfg = Config(storage=StorageSection(data_dir=tmp_path), lane=LaneSection(belt_speed_mm_s=1500),
                 simulator=SimulatorSection(seed=5, item_rate_per_s=3.0, threat_share=0.0, noread_share=0.0,
                                            invalid_s10_share=0.0, ead_missing_share=0.6, ead_late_share=0.0,
                                            ead_defect_share=0.0))
    seen: dict[str, object] = {}

    def only_missing(lane: Lane) -> dict[str, object] | None:
        for row in lane.store.items():
            if [r["code"] for r in json.loads(row["reasons"])] == ["EAD_MISSING"]:
                return dict(row)
        return None

    async def control(lane: Lane) -> None:
        await until(lambda: only_missing(lane) is not None, 30, "an item inspected only for its missing EAD")
        row = only_missing(lane)
        assert row is not None
        truth = next(o.truth for o in lane.sim.outcomes.values() if o.truth.scan_id == row["scan_id"])
        file = tmp_path / "late.jsonl"
        file.write_text(json.dumps(make_record(np.random.default_rng(1), str(row["item_id"]),
                                               gross_weight_kg=truth.weight_kg, threats=truth.threats)) + "\n")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "station.cli", "ead", "import", str(file), "--data-dir", str(tmp_path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        _, err = await proc.communicate()
        seen["rc"], seen["err"], seen["uid"] = proc.returncode, err.decode(), row["uid"]
        await until(lambda: lane.store.db.execute("SELECT revision FROM items WHERE uid = ?",
                                                  (row["uid"],)).fetchone()[0] == 2, 10, "the item revised")
        await stored(lane, lane.runtime.items_stored + 1)

    asyncio.run(run_simulated(cfg, control=control))
    assert seen["rc"] == 0, seen["err"]
    assert "the running station (PID" in str(seen["err"]) and "1 stored items decided again" in str(seen["err"])
    with Store(tmp_path / "station.db") as store:
        row = store.db.execute("SELECT * FROM items WHERE uid = ?", (seen["uid"],)).fetchone()
        revisions = [r["msg_id"] for r in store.db.execute("SELECT msg_id FROM outbox WHERE msg_id LIKE ?",
                                                           (f"{seen['uid']}/%",))]
    assert row["decision"] == "CLEAR" and row["ead_status"] == "found" and row["routed"] == "INSPECT"
    assert f"{seen['uid']}/result/2" in revisions
