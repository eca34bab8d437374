"""The daemon's one writer to the store: a thread with its own SQLite connection, off the event loop.

The lane never waits on the store. Every change (an item and its messages, an alarm, a declaration,
an outbox acknowledgement) is a job submitted from the loop and run on this thread, in the order
submitted; the loop gets an asyncio future if it wants the result. Readers on the loop use their own
connection: in WAL mode a reader never waits for a writer.

Guarantees:
- a job is never dropped because the database is busy (another process importing declarations) or
  the disk is full: it waits at the head of the queue and runs again, so nothing already routed is
  lost and the order of the outbox holds;
- a full disk is a state, not a crash: below `min_free_bytes` free (checked before every job, so that
  SQLite never sees the disk full in the usual case) or when SQLite reports it full, `on_full(True,
  why)` is called on the loop, and `on_full(False, ...)` once a job has run again;
- a job that fails for any other reason (a bug, a constraint) fails its own future and nothing else;
- a job `interject`ed from another thread (retention's, station/retention.py) takes its turn in the
  queue, and also runs while the head of the queue waits for room or for a busy database (it frees
  space): a queued job waits for at most one interjected job, the one running when it was queued, which
  its sender keeps small (its sender waits for each before it sends the next).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, Final, TypeVar

from station.store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[Store], Any]


class _Stop(Enum):
    """The values that tell the writer thread to stop, or to run what was interjected."""

    STOP = "stop"
    WAKE = "wake"


_STOP: Final = _Stop.STOP
_WAKE: Final = _Stop.WAKE


def disk_full(err: BaseException) -> bool:
    """Whether `err` says the disk (or the database's allowed size) is full."""
    if isinstance(err, sqlite3.OperationalError):
        return getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "disk is full" in str(err)
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


def busy(err: BaseException) -> bool:
    return isinstance(err, sqlite3.OperationalError) and getattr(err, "sqlite_errorcode", None) in (
        sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class StoreWriter:
    """Async context manager running store jobs on one thread. `submit` may only be called from the loop."""

    def __init__(self, path: Path, *, min_free_bytes: int = 0, on_full: Callable[[bool, str], None] = lambda f, w: None,
                 retry_s: float = 0.5, busy_timeout_s: float = 2.0) -> None:
        self.path = path
        self.min_free_bytes = min_free_bytes
        self.on_full = on_full
        self.retry_s = retry_s
        self.busy_timeout_s = busy_timeout_s
        self.full = False
        self.busy_waits = 0  # jobs that had to wait for another writer (an import) beyond the busy timeout
        self.longest_job_s = 0.0
        self._jobs: queue.SimpleQueue[tuple[Job, asyncio.Future[Any] | None] | _Stop] = queue.SimpleQueue()
        self._interjected: queue.SimpleQueue[tuple[Job, concurrent.futures.Future[Any]]] = queue.SimpleQueue()
        self._stopped = False
        self._pending = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._idle = asyncio.Event()

    @property
    def pending(self) -> int:
        """Jobs submitted and not yet done."""
        return self._pending

    async def __aenter__(self) -> StoreWriter:
        self._loop = asyncio.get_running_loop()
        self._idle.set()
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(ready, failure), name="store writer", daemon=True)
        self._thread.start()
        await asyncio.to_thread(ready.wait)
        if failure:
            raise failure[0]
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Finish what was submitted (for up to a minute: a full disk may never clear), then stop."""
        try:
            async with asyncio.timeout(60):
                await self.drained()
        except TimeoutError:
            log.error("store writer: %d jobs not stored at shutdown (%s)", self._pending,
                      "disk full" if self.full else "store busy")
        self._jobs.put(_STOP)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)

    def submit(self, job: Callable[[Store], T], *, want_result: bool = False) -> asyncio.Future[T] | None:
        """Run `job(store)` on the writer thread, after every job submitted before it."""
        assert self._loop is not None, "the writer is not running"
        future: asyncio.Future[T] | None = self._loop.create_future() if want_result else None
        self._pending += 1
        self._idle.clear()
        self._jobs.put((job, future))
        return future

    async def drained(self) -> None:
        """Until every job submitted so far is done."""
        await self._idle.wait()

    def interject(self, job: Callable[[Store], T], timeout_s: float = 60.0) -> T:
        """From a thread other than the loop's: run `job(store)` on the writer thread in its turn after the
        jobs queued before it (or sooner, while the queue's head waits for room: no free-space floor applies
        to it) and return what it returns, or raise what it raises. The caller's thread waits; the jobs
        queued after it wait for it too, so keep it small. A job not started within `timeout_s` is
        cancelled (TimeoutError)."""
        if self._stopped or self._thread is None or threading.current_thread() is self._thread:
            raise RuntimeError("interject: the writer is not running, or this is its own thread")
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._interjected.put((job, future))
        self._jobs.put(_WAKE)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    # ---- the thread ---------------------------------------------------------------------------

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        try:
            store = Store(self.path, busy_timeout_s=self.busy_timeout_s)
        except BaseException as err:  # reported to __aenter__, which raises it on the loop
            failure.append(err)
            ready.set()
            return
        ready.set()
        with store:
            while (item := self._jobs.get()) is not _STOP:
                if item is _WAKE:
                    self._run_interjected(store)
                    continue
                job, future = item
                self._finish(future, *self._run_until_done(store, job))
            self._stopped = True
            while not self._interjected.empty():  # nobody will run them now
                self._interjected.get()[1].cancel()

    def _run_until_done(self, store: Store, job: Job) -> tuple[Any, BaseException | None]:
        while True:
            why = self._no_room()
            if why:
                self._set_full(True, why)
                self._wait(store, self.retry_s)
                continue
            started = time.monotonic()
            try:
                result = job(store)
            except Exception as err:
                if disk_full(err):
                    self._set_full(True, f"{self.path}: {err}")
                elif busy(err):
                    self.busy_waits += 1
                    log.warning("store writer: %s busy for over %.1f s (another writer); trying again",
                                self.path, self.busy_timeout_s)
                else:
                    return None, err
                self._wait(store, self.retry_s)
                continue
            self.longest_job_s = max(self.longest_job_s, time.monotonic() - started)
            if self.full:
                self._set_full(False, f"{self.path}: records are stored again")
            return result, None

    def _run_interjected(self, store: Store) -> None:
        while True:
            try:
                job, future = self._interjected.get_nowait()
            except queue.Empty:
                return
            self._run_one_interjected(store, job, future)

    def _run_one_interjected(self, store: Store, job: Job, future: concurrent.futures.Future[Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return  # its sender gave up waiting
        try:
            future.set_result(job(store))
        except Exception as err:  # the sender's to handle, on its own thread
            future.set_exception(err)

    def _wait(self, store: Store, seconds: float) -> None:
        """Sleep `seconds` before the queue's head runs again, running what is interjected meanwhile."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                job, future = self._interjected.get(timeout=left)
            except queue.Empty:
                return
            self._run_one_interjected(store, job, future)

    def _no_room(self) -> str:
        if self.min_free_bytes <= 0:
            return ""
        try:
            st = os.statvfs(self.path.parent)
        except OSError as err:
            return f"{self.path.parent}: cannot tell free space: {err.strerror}"
        free = st.f_bavail * st.f_frsize
        if free < self.min_free_bytes:
            return (f"{self.path.parent}: {free / 2**20:.1f} MiB free, below the floor of "
                    f"{self.min_free_bytes / 2**20:.0f} MiB (storage.min_free_mb)")
        return ""

    def _set_full(self, full: bool, why: str) -> None:
        if full == self.full:
            return
        self.full = full
        (log.error if full else log.warning)("store writer: %s", why)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.on_full, full, why)

    def _finish(self, future: asyncio.Future[Any] | None, result: Any, err: BaseException | None) -> None:
        assert self._loop is not None

        def done() -> None:
            self._pending -= 1
            if self._pending == 0:
                self._idle.set()
            if future is None:
                if err is not None:
                    log.error("store writer: a job failed", exc_info=err)
            elif not future.done():
                future.set_exception(err) if err is not None else future.set_result(result)

        try:
            self._loop.call_soon_threadsafe(done)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            pass
