"""The running daemon's free-space watch and retention thread.

One thread, off the event loop, with a reading connection of its own: it runs a retention pass
(station/retention.py) `first_pass_s` after the start (the start's own work, the model's warm-up and the
readers' first answers, goes first), then every `storage.retention_interval_min`, and at once when free
space falls under `storage.warn_free_mb` or the writer reports the disk full (`wake`); between passes it reads
the filesystem's free space every `check_s` (one statvfs). Free space under the warning floor is the
DISK_LOW alarm (`on_low(True, why)`, called on the loop), cleared by the station once free space is 10 %
above the floor (`on_low(False, why)`); the first reading is always reported, so a DISK_LOW left by an
earlier run is cleared when space is back. The hard floor stays the writer's (`storage.min_free_mb`:
DISK_FULL, the belt paused), which it checks before every job, so SQLite never sees the disk full.

A pass logs one INFO line; a pass that fails logs an ERROR and the next one runs at the next interval.
The lane never waits for this thread: its writes are small jobs interjected into the store's writer.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from station.retention import DiskUsage, Policy, Report, Retention
from station.store import Store
from station.writer import StoreWriter

log = logging.getLogger(__name__)

CHECK_S = 5.0
FIRST_PASS_S = 30.0


class SpaceKeeper:
    """Async context manager: the retention thread, from entry to exit."""

    def __init__(self, store_path: Path, images_dir: Path, policy: Policy, writer: StoreWriter, *,
                 interval_s: float, on_low: Callable[[bool, str], None], check_s: float = CHECK_S,
                 first_pass_s: float = FIRST_PASS_S, disk_usage: DiskUsage = shutil.disk_usage) -> None:
        self.store_path, self.images_dir, self.policy, self.writer = store_path, images_dir, policy, writer
        self.interval_s, self.on_low, self.check_s, self.disk_usage = interval_s, on_low, check_s, disk_usage
        self.first_pass_s = first_pass_s
        self.low: bool | None = None  # free space under the warning floor, as last reported
        self.passes = 0
        self.last: Report | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._short: list[str] = []

    async def __aenter__(self) -> SpaceKeeper:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()  # a pass stops between two store jobs
        self._wake.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)

    def wake(self) -> None:
        """Run a pass now (from any thread): the writer reported the disk full."""
        self._wake.set()

    # ---- the thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            store = Store(self.store_path)
        except sqlite3.Error as err:
            log.error("retention: cannot open %s: %s; nothing is deleted this run", self.store_path, err)
            return
        with store:
            retention = Retention(store, self.images_dir, self.policy, write=self.writer.interject,
                                  disk_usage=self.disk_usage, stop=self._stop)
            due = time.monotonic() + self.first_pass_s
            while not self._stop.is_set():
                fell = self._check()
                if fell or self._wake.is_set() or time.monotonic() >= due:
                    self._wake.clear()  # a wake during the pass runs another after it
                    self._pass(retention)
                    due = time.monotonic() + self.interval_s
                    continue  # free space read again at once: a fall during the pass runs another
                self._wake.wait(max(0.0, min(self.check_s, due - time.monotonic())))

    def _pass(self, retention: Retention) -> None:
        try:
            report = retention.run()
        except (sqlite3.Error, OSError, RuntimeError, TimeoutError) as err:
            log.error("retention: pass failed (%s); the next one in %.0f min", err, self.interval_s / 60)
            return
        except Exception:
            log.exception("retention: pass failed; the next one in %.0f min", self.interval_s / 60)
            return
        self.passes += 1
        self.last = report
        log.info("%s", report.line())
        for short in sorted(set(report.short) - set(self._short)):  # news, once; the INFO line repeats it
            log.warning("%s", short)
        self._short = report.short

    def _check(self) -> bool:
        """Read free space and report a change of DISK_LOW; True when it just fell under the floor."""
        floor = self.policy.warn_free_bytes
        if not floor:
            if self.low is None:
                self._report(False, "storage.warn_free_mb is 0: no free-space warning")
            return False
        try:
            free = self.disk_usage(self.store_path.parent).free
        except OSError as err:
            log.warning("retention: cannot tell free space of %s: %s", self.store_path.parent, err)
            return False
        said = (f"{self.store_path.parent}: {free / 2**20:.0f} MiB free, the warning floor is "
                f"{floor / 2**20:.0f} MiB (storage.warn_free_mb)")
        if free < floor and self.low is not True:
            self._report(True, said + "; deleting the oldest scans that may go")
            return True
        if self.low is not False and free >= (self.policy.clear_free_bytes if self.low else floor):
            self._report(False, said)
        return False

    def _report(self, low: bool, why: str) -> None:
        self.low = low
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(self.on_low, low, why)
        except RuntimeError:  # the loop is closed: nobody is left to tell
            pass
