"""Upgrades and backups (issue 17, item 5): a store made by the previous release's code migrates forward
in one transaction at the start; a store from a newer station is refused untouched; `station backup`
copies the store while the lane writes to it, and `station restore` puts a copy back.

tests/fixtures/stores/release-4076d25.db was made by the code of commit 4076d25 (the last release
before store versions): `station run --simulate --items 25` (seed 4), `station user add alice`, and two
verdicts by alice; then switched to a rollback journal so that it is one file.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from station.store import SCHEMA_VERSION, ItemRow, OutboxMessage, Store, StoreTooNew, audit_hash

FIXTURE = Path(__file__).parents[1] / "fixtures" / "stores" / "release-4076d25.db"


def station(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "station.cli", *args], capture_output=True, text=True, timeout=120)


def old_store(tmp_path: Path) -> Path:
    folder = tmp_path / "var"
    folder.mkdir(mode=0o700)
    path = folder / "station.db"
    shutil.copy(FIXTURE, path)
    return path


def config(tmp_path: Path) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(f'[storage]\ndata_dir = "{tmp_path / "var"}"\n[web]\nenabled = false\n')
    return path


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def test_a_store_of_the_previous_release_migrates_forward_and_keeps_everything(tmp_path: Path) -> None:
    path = old_store(tmp_path)
    before = {t: rows(path, f"SELECT count(*) FROM {t}")[0][0] for t in ("items", "outbox", "verdicts", "audit")}
    assert rows(path, "PRAGMA user_version") == [(0,)] and before["items"] == 25 and before["verdicts"] == 2
    assert "methods" not in {r[1] for r in rows(path, "PRAGMA table_info(verdicts)")}  # the old schema
    with Store(path) as store:
        assert store.schema_version == SCHEMA_VERSION
        after = {t: store.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in before}
        assert after == before
        # the new columns and tables are there, and usable on the old rows
        assert "methods" in {r["name"] for r in store.db.execute("PRAGMA table_info(verdicts)")}
        assert store.db.execute("SELECT count(*) FROM customs_instructions").fetchone()[0] == 0
        indexed = store.db.execute("SELECT count(DISTINCT item) FROM item_reasons").fetchone()[0]
        inspected = store.db.execute("SELECT count(*) FROM items WHERE decision = 'INSPECT'").fetchone()[0]
        assert indexed == inspected  # the reasons index covers the items stored before it
        chain = store.db.execute("SELECT at, who, action, prev, hash FROM audit ORDER BY id").fetchall()
        assert all(audit_hash(r["prev"], r["at"], r["who"], r["action"]) == r["hash"] for r in chain)
        store.record_item(ItemRow(str(uuid.uuid4()), 1, None, None, "scan-new", None, None, "INSPECT", "INSPECT",
                                  0.5, [{"code": "EAD_MISSING", "detail": "x"}], "missing", None, None, "default-4",
                                  None, time.time()), [OutboxMessage("new/result", "t", "{}")])
    # and the CLI reads it as any store: the verdicts, the audit chain
    done = station("audit", "verify", "--config", str(config(tmp_path)))
    assert done.returncode == 0, done.stderr


def test_the_migration_is_one_transaction_a_failure_leaves_the_old_store(tmp_path: Path) -> None:
    path = old_store(tmp_path)
    with sqlite3.connect(path) as db:  # a late step of the migration cannot be done: its name is taken
        db.execute("CREATE VIEW customs_instructions AS SELECT 1 AS x")
    with pytest.raises(sqlite3.Error):
        Store(path)
    assert rows(path, "PRAGMA user_version") == [(0,)]
    tables = {r[0] for r in rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "meta" not in tables and "commands" not in tables  # made before the failing step, and rolled back
    assert rows(path, "SELECT count(*) FROM items") == [(25,)]


def test_a_store_from_a_newer_station_is_refused_untouched(tmp_path: Path) -> None:
    path = old_store(tmp_path)
    with Store(path):
        pass
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = path.read_bytes()
    with pytest.raises(StoreTooNew, match=rf"schema version {SCHEMA_VERSION + 1}, and this station knows"):
        Store(path)
    done = station("run", "--simulate", "--items", "1", "--config", str(config(tmp_path)))
    assert done.returncode == 2, done.stderr
    assert f"store schema version {SCHEMA_VERSION + 1}, newer than this station's {SCHEMA_VERSION}" in done.stderr
    assert "Traceback" not in done.stderr
    assert path.read_bytes() == before


def test_backup_while_the_store_is_written_and_restore(tmp_path: Path) -> None:
    path = old_store(tmp_path)
    cfg = config(tmp_path)
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:  # as the lane does: items with their messages, one transaction each
        with Store(path) as store:
            while not stop.is_set():
                uid = str(uuid.uuid4())
                store.record_item(ItemRow(uid, 1, None, None, f"scan-{uid[:8]}", None, None, "CLEAR", "CLEAR", 0.0,
                                          [], "matched", 1, None, "default-4", 12.0, time.time()),
                                  [OutboxMessage(f"{uid}/result", "t", "{}")])
                written.append(uid)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 50:
            time.sleep(0.01)
        done = station("backup", str(tmp_path), "--config", str(cfg))
    finally:
        stop.set()
        thread.join()
    assert done.returncode == 0, done.stderr
    copies = sorted(tmp_path.glob("station-*.db"))
    assert len(copies) == 1 and not list(tmp_path.glob("*.partial*"))
    copy = copies[0]
    assert rows(copy, "PRAGMA integrity_check") == [("ok",)]
    # one consistent moment: every item in the copy has its message, and the copy holds 25 + some
    items = {r[0] for r in rows(copy, "SELECT uid FROM items")}
    messages = {str(r[0]) for r in rows(copy, "SELECT msg_id FROM outbox")}
    new = items & set(written)
    assert new and all(f"{uid}/result" in messages for uid in new)
    assert f"{len(items)} items" in done.stdout

    assert station("backup", str(copy), "--config", str(cfg)).returncode == 2  # never overwrites
    # restore (the station is not running): the store it replaces is kept beside it
    done = station("restore", str(copy), "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert {r[0] for r in rows(path, "SELECT uid FROM items")} == items
    replaced = list(path.parent.glob("station.db.replaced-*"))
    assert len(replaced) == 1 and rows(replaced[0], "SELECT count(*) FROM items")[0][0] == 25 + len(written)


def test_restore_refuses_a_running_station_and_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    from station.lock import DataDirLock

    path = old_store(tmp_path)
    cfg = config(tmp_path)
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 100)
    done = station("restore", str(junk), "--config", str(cfg))
    assert done.returncode == 2 and "not an SQLite database" in done.stderr
    before = path.read_bytes()
    with DataDirLock(path.parent):  # as the running station holds it
        done = station("restore", str(FIXTURE), "--config", str(cfg))
    assert done.returncode == 2 and "a station is already running" in done.stderr
    assert path.read_bytes() == before
