"""Evidence retention on a real store and real scan files: by age, by disk share and for free space, never
an item that is flagged and not reviewed, not synced, held by customs or under a legal hold; the DISK_LOW
alarm; and a queued record never waits behind more than one of retention's small store jobs."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from station import customs, holds, reviews
from station.config import ConfigError, StorageSection, parse_config
from station.retention import DAY_S, Policy, Report, Retention, Space, kept_sql
from station.space import SpaceKeeper
from station.store import ItemRow, OutboxMessage, Store
from station.writer import StoreWriter

SITE, LANE = "S", "L"
SCAN_BYTES = 10_000


class Lane:
    """A data folder with a store and kept scans, made as the recorder makes them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.images = folder / "images"
        self.store = Store(folder / "station.db")
        self.n = 0

    def item(self, *, age_days: float, decision: str = "CLEAR", item_id: str | None = None, queued: bool = False,
             scan_bytes: int = SCAN_BYTES, detections: int = 1) -> int:
        """An item routed `age_days` ago with its scan kept; `queued`: its result message not yet sent."""
        self.n += 1
        uid, routed_at = str(uuid.uuid4()), time.time() - age_days * DAY_S
        day = self.images / datetime.fromtimestamp(routed_at, UTC).strftime("%Y-%m-%d")
        day.mkdir(parents=True, exist_ok=True)
        scan = day / f"S{self.n}-{uid[:12]}.xde"
        data = os.urandom(scan_bytes)
        scan.write_bytes(data)
        row = ItemRow(uid=uid, track_id=self.n, item_id=item_id, barcode=item_id, scan_id=f"S{self.n}",
                      image_path=str(scan), image_sha256=hashlib.sha256(data).hexdigest(), decision=decision,
                      routed=decision, score=0.9 if decision == "INSPECT" else 0.1, reasons=[],
                      ead_status="found", ead_version=1, model_hash=None, rules_version="t",
                      decision_latency_ms=5.0, routed_at=routed_at,
                      detections=tuple(("knife", 0.8, True, (1.0, 2.0, 3.0, 4.0)) for _ in range(detections)))
        messages = [OutboxMessage(f"{uid}/result", "t", "{}")] if queued else []
        return self.store.record_item(row, messages)

    def retention(self, policy: Policy, **kw: Any) -> Retention:
        return Retention(self.store, self.images, policy, write=lambda job: job(self.store), **kw)

    def row(self, pk: int) -> Any:
        return self.store.db.execute("SELECT * FROM items WHERE id = ?", (pk,)).fetchone()

    def scan_of(self, pk: int) -> Path | None:
        row = self.row(pk)
        return None if row is None or row["image_path"] is None else Path(row["image_path"])

    def scan_files(self) -> int:
        return sum(1 for _ in self.images.rglob("*.xde"))

    def send(self, pk: int) -> None:
        """Central acknowledged every message of the item."""
        uid = self.row(pk)["uid"]
        seqs = [r[0] for r in self.store.db.execute("SELECT seq FROM outbox WHERE msg_id LIKE ?", (uid + "/%",))]
        self.store.outbox_delete(seqs)


@pytest.fixture
def lane(tmp_path: Path) -> Any:
    lane = Lane(tmp_path)
    yield lane
    lane.store.close()


AGES = Policy(keep_images_s=30 * DAY_S, keep_items_s=365 * DAY_S, max_share=1.0)


def judge(lane: Lane, pk: int, verdict: str = "CLEARED") -> None:
    reviews.record_verdict(lane.store, pk, verdict, "alice", topic="v", site=SITE, lane=LANE,
                           reason_code="OPENED_AND_CHECKED")


def instruct(lane: Lane, s10: str, kind: str, n: int) -> None:
    customs.store_instruction(lane.store, customs.Instruction(f"I{n}", s10, kind, (), "", "customs", 1000.0 + n))  # type: ignore[arg-type]


# ---- by age ------------------------------------------------------------------------------------


def test_scans_go_after_keep_images_days_and_records_after_keep_items_days(lane: Lane) -> None:
    young, month, year = lane.item(age_days=1), lane.item(age_days=40), lane.item(age_days=400)
    old_scan = lane.scan_of(month)
    report = lane.retention(AGES).run()
    assert report.images["age"] == 2 and report.rows["age"] == 1, report.line()
    assert lane.scan_of(young) is not None and lane.scan_of(young).exists()  # type: ignore[union-attr]
    kept = lane.row(month)
    assert kept["image_path"] is None and kept["image_sha256"] and old_scan is not None and not old_scan.exists()
    pruned = lane.store.db.execute("SELECT pruned_at, path FROM pruned_images WHERE item = ?", (month,)).fetchone()
    assert pruned["pruned_at"] == pytest.approx(time.time(), abs=60) and pruned["path"] is None  # unlinked, marked
    assert lane.row(year) is None  # older than a year: the record too, with its detections and reasons
    for table in ("detections", "item_reasons", "pruned_images"):
        assert not lane.store.db.execute(f"SELECT 1 FROM {table} WHERE item = ?", (year,)).fetchone(), table
    assert lane.scan_files() == 1 and report.bytes_freed == 2 * SCAN_BYTES
    assert [p.name for p in lane.images.iterdir()] == [lane.scan_of(young).parent.name]  # type: ignore[union-attr]
    again = lane.retention(AGES).run()  # nothing left to do
    assert again.images.total() == again.rows.total() == again.jobs == 0


def test_keep_zero_keeps_for_ever(lane: Lane) -> None:
    pk = lane.item(age_days=5000)
    report = lane.retention(Policy(keep_images_s=0, keep_items_s=0, max_share=1.0)).run()
    assert report.jobs == 0 and lane.scan_of(pk) is not None and lane.scan_of(pk).exists()  # type: ignore[union-attr]


def test_old_declarations_go_unless_an_item_or_a_customs_referral_needs_them(lane: Lane) -> None:
    from station.ead.record import EadRecord

    rows = [("RR000000001GB", None), ("RR000000002GB", "item"), ("RR000000003GB", "hold")]
    for s10, need in rows:
        record = EadRecord.model_validate({"item_id": s10, "version": 1})
        lane.store.upsert_ead(record, "test")
        lane.store.db.execute("UPDATE ead_records SET received_at = ? WHERE item_id = ?",
                              (time.time() - 400 * DAY_S, s10))
        if need == "item":
            lane.item(age_days=1, item_id=s10)
        if need == "hold":
            instruct(lane, s10, "hold", 1)
    assert lane.retention(AGES).run().declarations == 1
    assert {r[0] for r in lane.store.db.execute("SELECT item_id FROM ead_records")} == {s10 for s10, n in rows if n}


# ---- what is never deleted ---------------------------------------------------------------------


def test_protected_items_are_kept_whole_until_reviewed_synced_released(lane: Lane) -> None:
    unreviewed = lane.item(age_days=400, decision="INSPECT")
    unsynced = lane.item(age_days=400, queued=True)
    referred = lane.item(age_days=400, item_id="RR123456785GB")
    instruct(lane, "RR123456785GB", "hold", 1)
    legal = lane.item(age_days=400, item_id="RR000000017GB")
    holds.hold(lane.store, "RR000000017GB", by="clerk", reason="case 42")
    free = lane.item(age_days=400)
    protected = (unreviewed, unsynced, referred, legal)

    first = lane.retention(AGES).run()
    assert lane.row(free) is None and first.rows.total() == 1
    for pk in protected:
        assert lane.scan_of(pk) is not None and lane.scan_of(pk).exists(), pk  # type: ignore[union-attr]

    judge(lane, unreviewed)  # its verdict message is queued: reviewed, but not synced yet
    lane.send(unsynced)
    instruct(lane, "RR123456785GB", "release", 2)
    holds.release(lane.store, "RR000000017GB", by="clerk")
    assert lane.retention(AGES).run().rows.total() == 3 and lane.row(unreviewed) is not None
    lane.send(unreviewed)
    assert lane.retention(AGES).run().rows.total() == 1
    assert lane.store.item_count() == 0 and lane.scan_files() == 0
    assert not lane.store.db.execute("SELECT 1 FROM legal_holds").fetchone()  # released holds went with the item
    assert lane.store.verify_audit() == (3, None)  # the hold, the verdict, the release: the chain stays whole


def test_an_undone_verdict_makes_the_item_unreviewed_again(lane: Lane) -> None:
    pk = lane.item(age_days=1, decision="INSPECT")
    verdict = reviews.record_verdict(lane.store, pk, "CLEARED", "alice", topic="v", site=SITE, lane=LANE,
                                     reason_code="OPENED_AND_CHECKED")
    reviews.undo_verdict(lane.store, verdict.id, "alice", topic="v", site=SITE, lane=LANE)
    lane.store.outbox_delete([r[0] for r in lane.store.db.execute("SELECT seq FROM outbox")])
    assert _kept(lane, pk)
    judge(lane, pk, "REFERRED")  # referred to customs is a verdict too: reviewed
    lane.store.outbox_delete([r[0] for r in lane.store.db.execute("SELECT seq FROM outbox")])
    assert not _kept(lane, pk)


def _kept(lane: Lane, pk: int) -> bool:
    return bool(lane.store.db.execute(f"SELECT {kept_sql('i')} FROM items AS i WHERE i.id = ?", (pk,)).fetchone()[0])


@pytest.mark.parametrize("sequence", [
    ["hold"], ["hold", "release"], ["release", "hold"], ["screen", "info"], ["do_not_load", "release", "screen"],
    ["info"], [], ["hold", "release", "release"], ["screen", "hold", "release"],
])
def test_retention_reads_a_customs_referral_as_customs_does(lane: Lane, sequence: list[str]) -> None:
    pk = lane.item(age_days=1, item_id="RR123456785GB")
    for n, kind in enumerate(sequence):
        instruct(lane, "RR123456785GB", kind, n)
    assert _kept(lane, pk) == (customs.active(lane.store, "RR123456785GB") is not None)


def test_a_hold_committed_while_a_pass_runs_is_honoured_by_the_deleting_transaction(lane: Lane) -> None:
    """The pass picks candidates on its reading connection; the job that deletes checks again."""
    pk = lane.item(age_days=400)

    def write(job: Callable[[Store], Any]) -> Any:
        if not holds.current(lane.store.db, pk):  # between the pass's read and its write
            with Store(lane.folder / "station.db") as cli:
                holds.hold(cli, str(pk), by="clerk")
        return job(lane.store)

    report = Retention(lane.store, lane.images, AGES, write=write).run()
    assert report.images.total() == report.rows.total() == 0 and lane.scan_of(pk).exists()  # type: ignore[union-attr]


def test_a_scan_whose_deletion_committed_but_whose_unlink_a_crash_stopped_goes_at_the_next_pass(lane: Lane) -> None:
    pk = lane.item(age_days=40)
    scan = lane.scan_of(pk)
    lane.store.db.execute("UPDATE items SET image_path = NULL WHERE id = ?", (pk,))  # as _forget_images commits
    lane.store.db.execute("INSERT INTO pruned_images (item, path, pruned_at) VALUES (?,?,?)", (pk, str(scan), 1.0))
    assert scan is not None and scan.exists()
    lane.retention(AGES).run()
    assert not scan.exists()
    assert lane.store.db.execute("SELECT path FROM pruned_images WHERE item = ?", (pk,)).fetchone()[0] is None


def test_a_path_outside_the_images_folder_is_never_unlinked(lane: Lane, tmp_path: Path) -> None:
    pk = lane.item(age_days=40)
    elsewhere = tmp_path / "elsewhere.xde"
    elsewhere.write_bytes(b"x")
    lane.store.db.execute("UPDATE items SET image_path = ? WHERE id = ?", (str(elsewhere), pk))
    lane.retention(AGES).run()
    assert elsewhere.exists() and lane.row(pk)["image_path"] is None


# ---- by share and for free space -----------------------------------------------------------------


def stand_in_disk(lane: Lane, total: int) -> Callable[[Path], Space]:
    """A stand-in for shutil.disk_usage: a filesystem of `total` bytes holding only the station's scans
    (measured on the real files), so that its free space follows what retention deletes to the byte."""
    def usage(_: Path) -> Space:
        used = sum(p.stat().st_size for p in lane.images.rglob("*") if p.is_file())
        return Space(total, used, max(0, total - used))
    return usage


def test_above_the_share_the_oldest_deletable_scans_go_first_then_the_oldest_records(lane: Lane) -> None:
    pks = [lane.item(age_days=10 - n * 0.1) for n in range(40)]  # young: no age rule applies
    protected = lane.item(age_days=20, decision="INSPECT")  # the oldest of all, and flagged
    disk = stand_in_disk(lane, total=10_000_000)
    used, total = lane.retention(AGES, disk_usage=disk).usage()  # 41 scans (410 kB), the store and its WAL
    assert total == 10_000_000 and used > 41 * SCAN_BYTES
    share = (used - 10 * SCAN_BYTES) / total  # room for all but 10 scans
    retention = lane.retention(Policy(keep_images_s=30 * DAY_S, keep_items_s=365 * DAY_S, max_share=share),
                               disk_usage=disk)
    report = retention.run()
    gone = [pk for pk in pks if lane.scan_of(pk) is None]
    assert gone == pks[:10], report.line()  # the oldest, in order, and no more than needed
    assert report.images["share"] == 10 and report.rows.total() == 0  # scans were enough
    assert lane.scan_of(protected).exists() and retention.usage()[0] <= share * total  # type: ignore[union-attr]

    # Room for less than the store alone: every deletable scan goes, then the oldest records.
    tiny = lane.retention(Policy(max_share=0.01), disk_usage=disk).run()
    assert lane.scan_files() == 1 and tiny.rows["share"] > 0 and lane.row(protected) is not None
    assert any("protected" in s for s in tiny.short), tiny.short


def test_under_the_warning_floor_the_oldest_deletable_scans_go_until_space_is_back(lane: Lane) -> None:
    pks = [lane.item(age_days=5 - n * 0.1) for n in range(30)]
    floor = 100_000  # and 110,000 to clear
    disk = stand_in_disk(lane, total=stand_in_disk(lane, 0)(lane.folder).used + floor - 8 * SCAN_BYTES)
    report = lane.retention(Policy(warn_free_bytes=floor, max_share=1.0), disk_usage=disk).run()
    assert disk(lane.folder).free == Policy(warn_free_bytes=floor).clear_free_bytes == 110_000, report.line()
    gone = [pk for pk in pks if lane.scan_of(pk) is None]
    assert gone == pks[:9] and report.images["space"] == 9  # 90,000 bytes short of 110,000: the 9 oldest
    assert lane.store.item_count() == 30  # records give no disk back: they stay


def test_the_space_keeper_raises_disk_low_runs_a_pass_at_once_and_clears_it(lane: Lane) -> None:
    """Over the daemon's own writer and thread: DISK_LOW raised when the stand-in's free space falls under
    the floor, a pass at once (not after the interval), DISK_LOW cleared once the scans are gone."""
    for n in range(20):
        lane.item(age_days=3 - n * 0.1)
    lane.store.close()
    total = [10**12]  # plenty of room at first
    real = stand_in_disk(lane, 1)

    def disk(path: Path) -> Space:
        used = real(path).used
        return Space(total[0], used, total[0] - used)

    said: list[tuple[bool, str]] = []

    async def main() -> None:
        async with StoreWriter(lane.folder / "station.db") as writer:
            floor = 200_000
            keeper = SpaceKeeper(lane.folder / "station.db", lane.images, Policy(warn_free_bytes=floor, max_share=1.0),
                                 writer, interval_s=3600, on_low=lambda low, why: said.append((low, why)),
                                 check_s=0.02, first_pass_s=0, disk_usage=disk)
            async with keeper:
                await until(lambda: keeper.passes == 1 and said == [(False, said[0][1])] if said else False)
                total[0] = disk(lane.folder).used + floor - 5 * SCAN_BYTES  # 5 scans short of the floor
                await until(lambda: len(said) == 3)
                assert keeper.passes == 2  # at once, not after the hour
        assert [low for low, _ in said] == [False, True, False], said
        assert "MiB free, the warning floor is" in said[1][1]

    asyncio.run(main())
    with Store(lane.folder / "station.db") as store:
        assert store.db.execute("SELECT count(*) FROM items WHERE image_path IS NULL").fetchone()[0] >= 5


async def until(what: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


# ---- never in the way of the lane ----------------------------------------------------------------


def test_a_big_prune_never_keeps_a_queued_record_waiting_behind_more_than_one_of_its_jobs(tmp_path: Path) -> None:
    """5,000 old items and scans pruned over the daemon's writer while the loop stores a record every 10 ms:
    each record waits for at most one of retention's jobs (counted, not timed), and the figures are printed.
    bench/retention.py does the same with 50,000 items under a running simulated lane."""
    lane = Lane(tmp_path)
    for _ in range(5000):
        lane.item(age_days=400, scan_bytes=100, detections=2)
    lane.store.close()
    ran: list[str] = []  # on the writer thread, in order: "R" a retention job done, "N" a queued record
    waits: list[int] = []
    latencies: list[float] = []

    async def main() -> None:
        async with StoreWriter(tmp_path / "station.db") as writer:
            def write(job: Callable[[Store], Any]) -> Any:
                def counted(store: Store) -> Any:
                    try:
                        return job(store)
                    finally:
                        ran.append("R")
                return writer.interject(counted)

            def pass_on_its_own_thread() -> Report:
                with Store(tmp_path / "station.db") as reader:
                    return Retention(reader, lane.images, AGES, write=write).run()

            prune = asyncio.ensure_future(asyncio.to_thread(pass_on_its_own_thread))
            n = 0
            while not prune.done():
                n += 1
                seen, submitted = len(ran), time.perf_counter()

                def job(store: Store, seen: int = seen, n: int = n) -> None:
                    waits.append(ran[seen:].count("R"))  # retention jobs that ended after it was queued
                    ran.append("N")
                    store.enqueue([OutboxMessage(f"n{n}", "t", "{}")])

                record = writer.submit(job, want_result=True)
                assert record is not None
                record.add_done_callback(lambda _, t=submitted: latencies.append(time.perf_counter() - t))
                await asyncio.sleep(0.01)
            report = await prune
            await writer.drained()
            print(f"\n{report.line()}; {len(latencies)} records stored meanwhile, waited p50 "
                  f"{sorted(latencies)[len(latencies) // 2] * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
            assert report.images["age"] == 5000 and report.rows["age"] == 5000

    asyncio.run(main())
    assert len(waits) > 20 and max(waits) <= 1, waits  # never more than one retention job ahead of a record


def test_a_pass_stops_between_two_jobs_when_asked(lane: Lane) -> None:
    for _ in range(600):
        lane.item(age_days=400, scan_bytes=10)
    stop = threading.Event()
    jobs = 0

    def write(job: Callable[[Store], Any]) -> Any:
        nonlocal jobs
        jobs += 1
        if jobs == 2:
            stop.set()
        return job(lane.store)

    report = Retention(lane.store, lane.images, AGES, write=write, stop=stop).run()
    assert report.stopped and report.images.total() == 400 and lane.scan_files() == 200


# ---- configuration -------------------------------------------------------------------------------


def test_the_storage_keys_are_checked() -> None:
    assert Policy.of(StorageSection()) == Policy(30 * DAY_S, 365 * DAY_S, 0.8, 256 * 2**20)
    for bad, says in (({"warn_free_mb": 64, "min_free_mb": 64}, "warn_free_mb"),
                      ({"keep_images_days": 40, "keep_items_days": 30}, "keep_items_days"),
                      ({"keep_images_days": 0}, "keep_items_days"),
                      ({"max_disk_share": 0}, "max_disk_share")):
        with pytest.raises(ConfigError, match=says):
            parse_config({"storage": bad})
    parse_config({"storage": {"warn_free_mb": 0, "keep_images_days": 0, "keep_items_days": 0}})  # all off
