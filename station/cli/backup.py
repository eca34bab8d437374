"""`station backup DEST` and `station restore SRC`: the store, copied with SQLite's online backup API.

A backup runs while the lane runs: SQLite copies the database page by page on a connection of its
own, and restarts the copy where the station wrote meanwhile, so the copy is one consistent moment of
the store (WAL: the station is never blocked for longer than one step). The copy is checked
(`integrity_check`) before it is called done. Kept images are files: copy `data_dir/images/` beside
it with rsync (their SHA-256 is in the store).

A restore needs the station stopped (it takes the data folder's lock), refuses a backup that is not a
sound store or was written by a newer station, and never deletes the store it replaces: that one is
moved aside as `station.db.replaced-{time}` first. The restored store is migrated forward at the next
start if it is older.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
import time
from pathlib import Path

from station.cli.common import FAILED, OK, USAGE, config_args, load

PAGES_PER_STEP = 256  # 1 MiB of 4 KiB pages a step: the station's writer waits at most one step


def add_backup_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    backup = sub.add_parser("backup", help="copy the store (while the lane runs) to a file or folder")
    config_args(backup)
    backup.add_argument("dest", type=Path, help="a file, or a folder for station-YYYYmmdd-HHMMSS.db")
    backup.set_defaults(handler=_backup)
    restore = sub.add_parser("restore", help="put a backup in place of the store (the station stopped)")
    config_args(restore)
    restore.add_argument("source", type=Path, help="a file made by `station backup`")
    restore.set_defaults(handler=_restore)


def _backup(args: argparse.Namespace) -> int:
    store = load(args).storage.data_dir / "station.db"
    if not store.is_file():
        print(f"error: no store at {store}", file=sys.stderr)
        return USAGE
    dest: Path = args.dest
    if dest.is_dir():
        dest = dest / time.strftime("station-%Y%m%d-%H%M%S.db")
    if dest.exists():
        print(f"error: {dest} exists: a backup never overwrites a file", file=sys.stderr)
        return USAGE
    started = time.monotonic()
    partial = dest.with_name(dest.name + ".partial")
    try:
        copy(store, partial)
        problem = check(partial)
        if problem:
            print(f"error: the copy of {store} is not sound: {problem}", file=sys.stderr)
            return FAILED
        partial.rename(dest)
    except (OSError, sqlite3.Error) as err:
        print(f"error: backup of {store} to {dest} failed: {err}", file=sys.stderr)
        return FAILED
    finally:
        partial.unlink(missing_ok=True)
    print(f"backed up {store} to {dest}: {describe(dest)}, {dest.stat().st_size / 2**20:.1f} MiB in "
          f"{time.monotonic() - started:.1f} s")
    return OK


def _restore(args: argparse.Namespace) -> int:
    from station.lock import DataDirLock, DataDirLocked
    from station.store import SCHEMA_VERSION

    source: Path = args.source
    data_dir = load(args).storage.data_dir
    problem = check(source) if source.is_file() else f"{source} is not a file"
    if problem:
        print(f"error: {source} cannot be restored: {problem}", file=sys.stderr)
        return USAGE
    version = schema_version(source)
    if version > SCHEMA_VERSION:
        print(f"error: {source} has store schema version {version}, newer than this station's {SCHEMA_VERSION}: "
              "restore it with the station that made it", file=sys.stderr)
        return USAGE
    store = data_dir / "station.db"
    try:
        with DataDirLock(data_dir):
            aside = None
            if store.exists():
                aside = store.with_name(f"station.db.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
                copy(store, aside)  # the whole store, its WAL included, before anything is touched
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{store}{suffix}").unlink(missing_ok=True)
            copy(source, store)
            store.chmod(0o600)
    except DataDirLocked as err:
        print(f"error: {err}: stop it first (systemctl stop station)", file=sys.stderr)
        return USAGE
    kept = f"; the store it replaced is kept as {aside}" if aside else ""
    print(f"restored {source} to {store}: {describe(store)}{kept}")
    return OK


def copy(source: Path, dest: Path) -> None:
    """SQLite's online backup of `source` into a new file `dest` (source read-only, never blocked long).
    The copy is one self-contained file (rollback journal, no -wal or -shm beside it); the station
    switches a restored store back to WAL when it opens it."""
    with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=10)) as src, \
            contextlib.closing(sqlite3.connect(dest)) as out:
        src.backup(out, pages=PAGES_PER_STEP, sleep=0.005)
        out.execute("PRAGMA journal_mode=DELETE")


def check(path: Path) -> str:
    """'' for a sound store, otherwise what is wrong with it."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            result = db.execute("PRAGMA integrity_check").fetchone()[0]
            if result != "ok":
                return f"integrity_check: {result}"
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'items'").fetchone() is None:
                return "not a station store (no items table)"
    except sqlite3.Error as err:
        return f"not an SQLite database ({err})"
    return ""


def schema_version(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def describe(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        items, outbox = (db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("items", "outbox"))
    return f"{items} items, {outbox} outbox messages, schema version {schema_version(path)}"
