"""The store writer: changes run in order on its own thread, the event loop never waits on SQLite, and a
busy database or a full disk makes a job wait, never lose itself (real SQLite, a real full tmpfs)."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from simulator.lane import fill_disk
from station.store import OutboxMessage, Store
from station.writer import StoreWriter


def message(i: int, size: int = 100) -> OutboxMessage:
    return OutboxMessage(f"m{i}", "t", "x" * size)


async def loop_stall_while(job: asyncio.Future[object], tick: float = 0.005) -> float:
    """The event loop's longest lateness until `job` is done."""
    loop, worst = asyncio.get_running_loop(), 0.0
    while not job.done():
        due = loop.time() + tick
        await asyncio.sleep(tick)
        worst = max(worst, loop.time() - due)
    return worst


def test_jobs_run_in_order_on_the_writer_thread(tmp_path: Path) -> None:
    async def main() -> list[str]:
        async with StoreWriter(tmp_path / "s.db") as writer:
            threads = [writer.submit(lambda store, i=i: (store.enqueue([message(i)]), threading.current_thread().name)[1],
                                     want_result=True) for i in range(50)]
            names = await asyncio.gather(*threads)  # type: ignore[arg-type]
            await writer.drained()
            assert writer.pending == 0
        return names

    names = asyncio.run(main())
    assert set(names) == {"store writer"}
    with Store(tmp_path / "s.db") as store:
        assert [m.msg_id for m in store.outbox_batch(100)] == [f"m{i}" for i in range(50)]


def test_a_failing_job_fails_its_own_future_only(tmp_path: Path) -> None:
    async def main() -> None:
        async with StoreWriter(tmp_path / "s.db") as writer:
            first = writer.submit(lambda store: store.enqueue([message(1)]), want_result=True)
            twice = writer.submit(lambda store: store.enqueue([message(1)]), want_result=True)  # msg_id is unique
            after = writer.submit(lambda store: store.enqueue([message(2)]), want_result=True)
            await first
            with pytest.raises(sqlite3.IntegrityError):
                await twice  # type: ignore[misc]
            await after

    asyncio.run(main())
    with Store(tmp_path / "s.db") as store:
        assert store.outbox_count() == 2


def test_a_writer_held_up_by_another_process_never_stalls_the_loop(tmp_path: Path) -> None:
    """Another connection (`station ead import`, say) holds the write lock for 1.5 s: the job waits past its
    busy timeout and runs after, and the loop goes on being served every few milliseconds."""
    path = tmp_path / "s.db"
    Store(path).close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    threading.Timer(1.5, holder.execute, ("COMMIT",)).start()

    async def main() -> tuple[float, float, int]:
        async with StoreWriter(path, busy_timeout_s=0.3, retry_s=0.1) as writer:
            started = time.monotonic()
            job = writer.submit(lambda store: store.enqueue([message(1)]), want_result=True)
            assert job is not None
            stall = await loop_stall_while(job)
            return stall, time.monotonic() - started, writer.busy_waits

    stall, took, busy_waits = asyncio.run(main())
    holder.close()
    assert took >= 1.4 and busy_waits >= 1, "the job waited for the lock"
    assert stall < 0.05, f"the loop stalled {stall * 1000:.0f} ms"
    with Store(path) as store:
        assert store.outbox_count() == 1


def test_a_full_disk_is_reported_and_the_job_runs_once_space_returns(small_fs: Path) -> None:
    """No free-space floor: SQLite itself meets the full disk. The error it raises is the real one (the
    explicit ROLLBACK once hid it), the writer reports full, keeps the job, and stores it later."""
    path = small_fs / "s.db"
    reports: list[tuple[bool, str]] = []
    with Store(path) as store:
        store.enqueue([message(i, 4000) for i in range(20)])
        fill_disk(small_fs / "filler", 4 * 1024)
        with pytest.raises(sqlite3.OperationalError, match="full"):
            store.enqueue([message(1000 + i, 50_000) for i in range(10)])

    async def main() -> None:
        async with StoreWriter(path, retry_s=0.05, on_full=lambda full, why: reports.append((full, why))) as writer:
            job = writer.submit(lambda store: store.enqueue([message(2000 + i, 50_000) for i in range(10)]),
                                want_result=True)
            while not reports:
                await asyncio.sleep(0.01)
            assert reports[0][0] is True and not job.done()  # type: ignore[union-attr]
            await asyncio.to_thread(fill_disk, small_fs / "filler", 0)
            await job  # type: ignore[misc]
            assert reports[-1][0] is False

    asyncio.run(main())
    with Store(path) as store:
        assert store.outbox_count() == 30
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_below_the_floor_the_writer_waits_before_sqlite_sees_the_disk(small_fs: Path) -> None:
    path = small_fs / "s.db"
    Store(path).close()
    fill_disk(small_fs / "filler", 4 * 2**20)
    reports: list[tuple[bool, str]] = []

    async def main() -> None:
        async with StoreWriter(path, min_free_bytes=8 * 2**20, retry_s=0.05,
                               on_full=lambda full, why: reports.append((full, why))) as writer:
            job = writer.submit(lambda store: store.enqueue([message(1)]), want_result=True)
            while not reports:
                await asyncio.sleep(0.01)
            assert "below the floor of 8 MiB" in reports[0][1] and not job.done()  # type: ignore[union-attr]
            await asyncio.to_thread(fill_disk, small_fs / "filler", 0)
            await job  # type: ignore[misc]

    asyncio.run(main())
    assert [full for full, _ in reports] == [True, False]


def test_the_store_is_created_owner_only_and_an_old_readable_one_is_tightened(tmp_path: Path) -> None:
    fresh = tmp_path / "new" / "station.db"
    Store(fresh).close()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600 and stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700
    old = tmp_path / "old.db"
    sqlite3.connect(old).close()
    old.chmod(0o644)
    Store(old).close()
    assert stat.S_IMODE(old.stat().st_mode) == 0o600


def test_an_interjected_job_runs_in_its_turn_and_while_the_head_waits_for_room(tmp_path: Path) -> None:
    """Retention's way in (station/retention.py): from another thread, between queued jobs, and below the
    free-space floor too, where the queue's head waits (its job frees the space the head waits for)."""
    order: list[str] = []

    async def main() -> None:
        async with StoreWriter(tmp_path / "s.db", retry_s=0.05) as writer:
            first = writer.submit(lambda store: order.append("queued 1"), want_result=True)
            done = await asyncio.to_thread(writer.interject, lambda store: order.append("interjected") or 7)
            second = writer.submit(lambda store: order.append("queued 2"), want_result=True)
            await asyncio.gather(first, second)  # type: ignore[arg-type]
            assert done == 7 and order == ["queued 1", "interjected", "queued 2"]

            writer.min_free_bytes = 2**62  # no disk has that much free: the head waits for room
            head = writer.submit(lambda store: store.enqueue([message(1)]), want_result=True)
            assert head is not None
            freed = await asyncio.to_thread(writer.interject, lambda store: store.outbox_count())
            assert freed == 0 and not head.done() and writer.full
            with pytest.raises(ZeroDivisionError):  # its failure is its sender's, and the head still waits
                await asyncio.to_thread(writer.interject, lambda store: 1 // 0)
            writer.min_free_bytes = 0
            await head
        with pytest.raises(RuntimeError):  # once the writer stopped
            writer.interject(lambda store: None)

    asyncio.run(main())
