"""Evidence retention: scans and item records deleted by age and by disk share, never evidence still needed.

One pass (`Retention.run`), in this order:
1. scans whose deletion committed but whose file a crash left on disk are unlinked (`pruned_images.path`);
2. by age: scans of items routed more than `storage.keep_images_days` ago, then records older than
   `keep_items_days` (a record goes only once its scan has), and declarations older than that which no
   stored item and no customs referral needs;
3. by share: while scans and store use more than `max_disk_share` of the data folder's filesystem, the
   oldest deletable scans of any age, then the oldest deletable records;
4. by free space: while the filesystem has less than `warn_free_mb` (and 10 % more) free, the oldest
   deletable scans. Records do not give disk space back (SQLite keeps its file and reuses the pages).

Never deleted, scan or record (`kept_sql`): an item flagged and not yet reviewed (INSPECT, no verdict not
undone: `reviews.awaiting_verdict`), not yet synced (a message of it still in the outbox; their msg_ids
start with the item's uid, station/lane/recorder.py), under a customs referral (`customs.referred_sql`)
or under a legal hold (`holds.held_sql`). The check runs again inside the transaction that deletes, so a
hold or a message committed before it counts. A deleted scan's row keeps its `image_sha256`, and
`pruned_images` says when it went; its file is unlinked after that commit, outside any transaction.

Every write is one small job (at most `Policy.batch` items) handed to the store's writer (`write`:
`StoreWriter.interject` in the daemon), so a queued record waits for one such job at most; the pass
reads on its own connection. A pass stops between two jobs once `stop` is set.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sqlite3
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar

from station import customs, holds, reviews
from station.config import StorageSection
from station.store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")
BATCH = 200  # items per store job
HYSTERESIS = 0.1  # DISK_LOW clears, and deleting for space stops, this share above warn_free_mb
# After each batch (its read, its store job, its unlinks) a pass rests as long as the batch took, and 5 ms
# at least: it takes at most half of the writer's time and of a core, and leaves the GIL to the loop
# between its bursts of system calls (bench/retention.py measures the lane's decisions meanwhile).
REST, MIN_REST_S = 1.0, 0.005
DAY_S = 86_400.0


class Usage(Protocol):
    """A filesystem's size and free space, in bytes, as shutil.disk_usage answers."""

    @property
    def total(self) -> int: ...

    @property
    def free(self) -> int: ...


class Space(NamedTuple):
    """A `Usage` of one's own (a test's stand-in for shutil.disk_usage)."""

    total: int
    used: int
    free: int


DiskUsage = Callable[[Path], Usage]


class Write(Protocol):
    """Runs a job on the store's writer and returns its result (`StoreWriter.interject`)."""

    def __call__(self, job: Callable[[Store], T], /) -> T: ...


class Stopped(Exception):
    """The pass was asked to stop between two jobs."""


@dataclass(frozen=True)
class Policy:
    keep_images_s: float = 30 * DAY_S  # 0: forever
    keep_items_s: float = 365 * DAY_S  # 0: forever
    max_share: float = 0.8  # of the filesystem, for scans + store; 1: no limit
    warn_free_bytes: int = 0  # 0: no floor
    batch: int = BATCH
    rest: float = REST  # after each batch, rest this many times as long as it took

    @classmethod
    def of(cls, storage: StorageSection) -> Policy:
        return cls(storage.keep_images_days * DAY_S, storage.keep_items_days * DAY_S, storage.max_disk_share,
                   int(storage.warn_free_mb * 2**20))

    @property
    def clear_free_bytes(self) -> int:
        return int(self.warn_free_bytes * (1 + HYSTERESIS))


@dataclass
class Report:
    images: Counter[str] = field(default_factory=Counter)  # scans deleted, by why: age, share, space
    rows: Counter[str] = field(default_factory=Counter)
    declarations: int = 0
    bytes_freed: int = 0
    seconds: float = 0.0
    jobs: int = 0
    longest_job_s: float = 0.0
    short: list[str] = field(default_factory=list)  # what only protected items stand in the way of
    stopped: bool = False

    def line(self) -> str:
        def counted(c: Counter[str], what: str) -> str:
            why = ", ".join(f"{n} by {k}" for k, n in sorted(c.items()))
            return f"{c.total()} {what}" + (f" ({why})" if why else "")

        return (f"retention: {counted(self.images, 'scans')}, {counted(self.rows, 'records')} and "
                f"{self.declarations} declarations deleted, {_size(self.bytes_freed)} freed, in "
                f"{self.seconds:.2f} s ({self.jobs} store jobs, longest {self.longest_job_s * 1000:.0f} ms)"
                + "".join(f"; {s}" for s in self.short) + ("; stopped" if self.stopped else ""))


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def kept_sql(item: str) -> str:
    """SQL, true while the item aliased `item` must be kept whole: its record and its scan."""
    return " OR ".join(f"({c})" for c in (
        reviews.awaiting_verdict(item),
        f"EXISTS (SELECT 1 FROM outbox AS o WHERE o.msg_id >= {item}.uid || '/' AND o.msg_id < {item}.uid || '0')",
        f"{item}.item_id IS NOT NULL AND {customs.referred_sql(f'{item}.item_id')}",
        holds.held_sql(item)))


_IDS = "(SELECT value FROM json_each(?))"
_NO_FILE_LEFT = ("i.image_path IS NULL AND NOT EXISTS (SELECT 1 FROM pruned_images AS p WHERE p.item = i.id"
                 " AND p.path IS NOT NULL)")


class Retention:
    def __init__(self, store: Store, images_dir: Path, policy: Policy, *, write: Write,
                 disk_usage: DiskUsage = shutil.disk_usage, now: Callable[[], float] = time.time,
                 stop: threading.Event | None = None) -> None:
        self.store = store  # a reading connection of the pass's own thread
        self.images_dir = images_dir
        # where scans may be unlinked: the folder as the recorder names it (the paths in the store), and resolved
        self._roots = tuple(dict.fromkeys((os.path.abspath(images_dir), str(images_dir.resolve()))))
        self.policy = policy
        self.write = write
        self.disk_usage = disk_usage
        self.now = now
        self.stop = stop or threading.Event()
        self.sizes = FolderSizes(images_dir)
        self._unlinked: list[int] = []  # items whose pruned file is gone, to be marked so in the next job
        self._report = Report()

    @property
    def data_dir(self) -> Path:
        return self.store.path.parent

    def run(self) -> Report:
        started, report = time.monotonic(), Report()
        self._report = report
        try:
            self._finish_unlinking()
            now, p = self.now(), self.policy
            if p.keep_images_s:
                self._images("age", before=now - p.keep_images_s)
            if p.keep_items_s:
                self._rows("age", before=now - p.keep_items_s)
                self._declarations(before=now - p.keep_items_s)
            self._share()
            self._space()
        except Stopped:
            report.stopped = True
        finally:
            self._flush_unlinked()
            self._tidy_folders()
            report.seconds = time.monotonic() - started
        return report

    # ---- what goes ----------------------------------------------------------------------------

    def _images(self, why: str, *, before: float = math.inf, need: int | None = None) -> int:
        """Delete the scans of deletable items routed before `before`, oldest first (until `need` bytes
        are freed, when given). Returns the bytes freed."""
        after: tuple[float, int] = (-math.inf, 0)
        freed = 0
        while need is None or freed < need:
            began = time.monotonic()
            rows = self.store.db.execute(
                "SELECT i.id, i.routed_at, i.image_path FROM items AS i WHERE i.image_path IS NOT NULL"
                f" AND i.routed_at < ? AND (i.routed_at, i.id) > (?, ?) AND NOT ({kept_sql('i')})"
                " ORDER BY i.routed_at, i.id LIMIT ?", (before, *after, self.policy.batch)).fetchall()
            if not rows:
                break
            if need is not None:
                rows = _enough(rows, need - freed)
            after = (rows[-1]["routed_at"], rows[-1]["id"])
            gone = self._job(partial(_forget_images, ids=[r["id"] for r in rows], unlinked=self._take_unlinked(),
                                     at=self.now()))
            freed += self._unlink(gone)
            self._report.images[why] += len(gone)
            self._rest(began)
        return freed

    def _rows(self, why: str, *, before: float = math.inf, enough: Callable[[], bool] = lambda: False) -> None:
        """Delete the records of deletable items routed before `before` whose scan is gone, oldest first."""
        if self._unlinked:  # scans unlinked by this pass: their records may go now
            self._job(partial(_mark_unlinked, items=self._take_unlinked()))
        after: tuple[float, int] = (-math.inf, 0)
        while not enough():
            began = time.monotonic()
            rows = self.store.db.execute(
                f"SELECT i.id, i.routed_at FROM items AS i WHERE i.routed_at < ? AND (i.routed_at, i.id) > (?, ?)"
                f" AND {_NO_FILE_LEFT} AND NOT ({kept_sql('i')}) ORDER BY i.routed_at, i.id LIMIT ?",
                (before, *after, self.policy.batch)).fetchall()
            if not rows:
                break
            after = (rows[-1]["routed_at"], rows[-1]["id"])
            self._report.rows[why] += self._job(partial(_forget_items, ids=[r["id"] for r in rows]))
            self._rest(began)

    def _declarations(self, *, before: float) -> None:
        after: tuple[float, str] = (-math.inf, "")
        while True:
            began = time.monotonic()
            rows = self.store.db.execute(
                f"SELECT e.item_id, e.received_at FROM ead_records AS e WHERE {_UNNEEDED}"
                " AND (e.received_at, e.item_id) > (?, ?) ORDER BY e.received_at, e.item_id LIMIT ?",
                (before, *after, self.policy.batch)).fetchall()
            if not rows:
                return
            after = (rows[-1]["received_at"], rows[-1]["item_id"])
            self._report.declarations += self._job(partial(_forget_declarations, ids=[r[0] for r in rows],
                                                           before=before))
            self._rest(began)

    def _share(self) -> None:
        if self.policy.max_share >= 1:
            return
        used, total = self.usage()
        limit = int(self.policy.max_share * total)
        if used <= limit:
            return
        if self._images("share", need=used - limit) >= used - limit:
            return
        self._rows("share", enough=lambda: self.usage()[0] <= limit)
        used, total = self.usage()
        if used > limit:
            self._report.short.append(f"scans and store use {used / total:.0%} of the disk, over the "
                                      f"{self.policy.max_share:.0%} of storage.max_disk_share: the rest is protected")

    def _space(self) -> None:
        """Under the warning floor, the oldest deletable scans until free space is 10 % above it."""
        if not self.policy.warn_free_bytes:
            return
        free, target = self.disk_usage(self.data_dir).free, self.policy.clear_free_bytes
        if free < self.policy.warn_free_bytes and self._images("space", need=target - free) < target - free:
            self._report.short.append(f"{self.disk_usage(self.data_dir).free / 2**20:.0f} MiB free, under the "
                                      f"{target / 2**20:.0f} MiB retention aims for: no deletable scan is left")

    # ---- plumbing -----------------------------------------------------------------------------

    def _job(self, job: Callable[[Store], T]) -> T:
        if self.stop.is_set():
            raise Stopped
        started = time.monotonic()
        result = self.write(job)
        took = time.monotonic() - started
        self._report.jobs += 1
        self._report.longest_job_s = max(self._report.longest_job_s, took)
        return result

    def _rest(self, since: float) -> None:
        """After a batch that began at `since` (time.monotonic())."""
        if self.policy.rest:
            self.stop.wait(max(MIN_REST_S, (time.monotonic() - since) * self.policy.rest))

    def _unlink(self, gone: Sequence[tuple[int, str]]) -> int:
        freed = 0
        for item, path in gone:
            freed += remove_image(Path(path), self._roots)
            self._unlinked.append(item)
        self._report.bytes_freed += freed
        return freed

    def _flush_unlinked(self) -> None:
        """Mark the files unlinked since the last job (not marked: the next pass unlinks them again, harmlessly)."""
        if not self._unlinked:
            return
        try:
            self.write(partial(_mark_unlinked, items=self._take_unlinked()))
        except Exception as err:  # the writer stopped under us (shutdown), or the store is busy
            log.info("retention: deleted scans not marked as unlinked yet (%s): the next pass does it", err)

    def _take_unlinked(self) -> list[int]:
        taken, self._unlinked = self._unlinked, []
        return taken

    def _finish_unlinking(self) -> None:
        """Files whose deletion committed but which a crash (or a full disk) kept from being unlinked."""
        left = self.store.db.execute("SELECT item, path FROM pruned_images WHERE path IS NOT NULL").fetchall()
        self._unlink([(r["item"], r["path"]) for r in left])

    def usage(self) -> tuple[int, int]:
        """(bytes the station uses, the filesystem's size). The station's bytes: the scans, and the store's
        pages in use (deleted records free pages that SQLite reuses, not the file's size; its WAL, which
        the checkpoints keep to a few MiB, is not counted)."""
        db = self.store.db
        pages = db.execute("PRAGMA page_count").fetchone()[0] - db.execute("PRAGMA freelist_count").fetchone()[0]
        store = int(pages) * int(db.execute("PRAGMA page_size").fetchone()[0])
        return self.sizes.total() + store, self.disk_usage(self.data_dir).total

    def _tidy_folders(self) -> None:
        """Remove the empty day folders of images/ older than yesterday (never today's: a scan may be
        being kept into it)."""
        oldest_kept = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
        try:
            folders = [e for e in os.scandir(self.images_dir) if e.is_dir(follow_symlinks=False)]
        except FileNotFoundError:
            return
        for folder in folders:
            if _is_day(folder.name) and folder.name < oldest_kept:
                try:
                    os.rmdir(folder.path)
                except OSError:
                    pass  # not empty: a protected item's scan is in it


_UNNEEDED = ("e.received_at < ? AND NOT EXISTS (SELECT 1 FROM items AS i WHERE i.item_id = e.item_id)"
             f" AND NOT {customs.referred_sql('e.item_id')}")


def _forget_images(store: Store, *, ids: list[int], unlinked: list[int], at: float) -> list[tuple[int, str]]:
    """On the writer: the scans of those `ids` still deletable, forgotten (their file is the caller's to
    unlink after this commit). Returns (item, path) of each."""
    with store.transaction() as db:
        _mark(db, unlinked)
        gone = [(r[0], r[1]) for r in db.execute(
            f"SELECT i.id, i.image_path FROM items AS i WHERE i.id IN {_IDS} AND i.image_path IS NOT NULL"
            f" AND NOT ({kept_sql('i')})", (json.dumps(ids),))]
        db.executemany("UPDATE items SET image_path = NULL WHERE id = ?", [(item,) for item, _ in gone])
        db.executemany("INSERT INTO pruned_images (item, path, pruned_at) VALUES (?,?,?) ON CONFLICT (item)"
                       " DO UPDATE SET path = excluded.path, pruned_at = excluded.pruned_at",
                       [(item, path, at) for item, path in gone])
    return gone


def _forget_items(store: Store, *, ids: list[int]) -> int:
    """On the writer: the records of those `ids` still deletable (scan gone), with their detections,
    verdicts and released holds. The audit keeps what was done to them. Returns how many."""
    with store.transaction() as db:
        doomed = json.dumps([r[0] for r in db.execute(
            f"SELECT i.id FROM items AS i WHERE i.id IN {_IDS} AND {_NO_FILE_LEFT} AND NOT ({kept_sql('i')})",
            (json.dumps(ids),))])
        for table in ("detections", "verdicts", "legal_holds", "pruned_images"):
            db.execute(f"DELETE FROM {table} WHERE item IN {_IDS}", (doomed,))
        return db.execute(f"DELETE FROM items WHERE id IN {_IDS}", (doomed,)).rowcount


def _forget_declarations(store: Store, *, ids: list[str], before: float) -> int:
    with store.transaction() as db:
        return db.execute(f"DELETE FROM ead_records AS e WHERE e.item_id IN {_IDS} AND {_UNNEEDED}",
                          (json.dumps(ids), before)).rowcount


def _mark_unlinked(store: Store, *, items: list[int]) -> None:
    with store.transaction() as db:
        _mark(db, items)


def _mark(db: sqlite3.Connection, items: list[int]) -> None:
    """The pruned files of `items` are gone from the disk."""
    if items:
        db.execute(f"UPDATE pruned_images SET path = NULL WHERE item IN {_IDS}", (json.dumps(items),))


def _enough(rows: list[sqlite3.Row], need: int) -> list[sqlite3.Row]:
    """The first of `rows` (with image_path) whose files add up to `need` bytes."""
    total = 0
    for n, row in enumerate(rows, 1):
        try:
            total += os.stat(row["image_path"]).st_size
        except OSError:
            pass
        if total >= need:
            return rows[:n]
    return rows


def remove_image(path: Path, roots: tuple[str, ...]) -> int:
    """Unlink a scan the store no longer names; the bytes freed. Only a regular file under one of `roots`
    (absolute folders) is touched, never a link: two system calls, no walk of the path."""
    where = os.path.normpath(os.path.abspath(path))
    if not any(os.path.commonpath((where, root)) == root for root in roots):
        log.warning("retention: %s is outside %s: left where it is", path, roots[0])
        return 0
    try:
        st = os.lstat(where)
        if not stat.S_ISREG(st.st_mode):
            log.warning("retention: %s is not a regular file: left where it is", where)
            return 0
        os.unlink(where)
    except FileNotFoundError:
        return 0
    return st.st_size


def _is_day(name: str) -> bool:
    try:
        datetime.strptime(name, "%Y-%m-%d")
    except ValueError:
        return False
    return True


class FolderSizes:
    """Bytes under images/, by day folder. A folder is listed again only when its mtime moves (a file came
    or went: kept scans never change in place), and the newest one always (a copy may be growing)."""

    def __init__(self, images_dir: Path) -> None:
        self.images_dir = images_dir
        self._folders: dict[str, tuple[int, int]] = {}  # name -> (mtime_ns, bytes)

    def total(self) -> int:
        try:
            entries = sorted(os.scandir(self.images_dir), key=lambda e: e.name)
        except FileNotFoundError:
            return 0
        folders = [e for e in entries if e.is_dir(follow_symlinks=False)]
        seen: dict[str, tuple[int, int]] = {}
        for folder in folders:
            stamp = folder.stat(follow_symlinks=False).st_mtime_ns
            cached = self._folders.get(folder.name)
            fresh = cached is not None and cached[0] == stamp and folder is not folders[-1]
            seen[folder.name] = cached if fresh and cached else (stamp, _bytes_in(folder.path))
        self._folders = seen
        loose = sum(e.stat(follow_symlinks=False).st_size for e in entries if e.is_file(follow_symlinks=False))
        return loose + sum(size for _, size in seen.values())


def _bytes_in(folder: str) -> int:
    total = 0
    try:
        with os.scandir(folder) as entries:
            for e in entries:
                if e.is_file(follow_symlinks=False):
                    try:
                        total += e.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        pass
    except FileNotFoundError:
        pass
    return total
