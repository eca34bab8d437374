"""The audit chain: every action appended with the hash of the one before, so that `station audit verify`
finds a row changed, removed or inserted behind the station's back, and names it."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from station.store import Store


def station(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "station.cli", *args], capture_output=True, text=True, timeout=60)


def filled(tmp_path: Path, rows: int = 5) -> Path:
    db = tmp_path / "station.db"
    with Store(db) as store:
        for n in range(rows):
            store.add_audit("ann", f"lane start #{n}")
    return db


def test_an_untouched_chain_verifies(tmp_path: Path) -> None:
    filled(tmp_path)
    done = station("audit", "verify", "--data-dir", str(tmp_path))
    assert done.returncode == 0 and "audit chain intact: 5 rows" in done.stdout
    listed = station("audit", "list", "--last", "2", "--data-dir", str(tmp_path))
    assert listed.returncode == 0 and listed.stdout.count("ann") == 2 and "lane start #4" in listed.stdout


@pytest.mark.parametrize("tamper, row, what", [
    ("UPDATE audit SET action = 'lane stop #2' WHERE id = 3", 3, "its content was changed"),
    ("UPDATE audit SET who = 'bob' WHERE id = 1", 1, "its content was changed"),
    ("DELETE FROM audit WHERE id = 2", 3, "does not follow the row before it"),
    ("INSERT INTO audit (id, at, who, action, prev, hash) SELECT 10, at, who, action, prev, hash FROM audit "
     "WHERE id = 2", 10, "does not follow the row before it"),
])
def test_a_row_edited_behind_the_stations_back_is_named(tmp_path: Path, tamper: str, row: int, what: str) -> None:
    db = filled(tmp_path)
    with sqlite3.connect(db) as raw:
        raw.execute(tamper)
    done = station("audit", "verify", "--data-dir", str(tmp_path))
    assert done.returncode == 1
    assert f"audit chain BROKEN at row {row} " in done.stderr and what in done.stderr


def test_two_writers_at_once_still_make_one_chain(tmp_path: Path) -> None:
    """The daemon and a command appending at the same moment: each reads the last hash inside its write."""
    db = filled(tmp_path, rows=1)

    def append(who: str) -> None:
        with Store(db) as store:
            for n in range(50):
                store.add_audit(who, f"action {n}")

    writers = [threading.Thread(target=append, args=(who,)) for who in ("daemon", "technician")]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    with Store(db) as store:
        assert store.verify_audit() == (101, None)


def test_rows_from_before_the_chain_are_chained_when_the_store_opens(tmp_path: Path) -> None:
    db = tmp_path / "station.db"
    with sqlite3.connect(db) as raw:  # the audit table as the previous version made it
        raw.execute("CREATE TABLE audit (id INTEGER PRIMARY KEY, at REAL NOT NULL, who TEXT NOT NULL, "
                    "action TEXT NOT NULL)")
        raw.execute("INSERT INTO audit (at, who, action) VALUES (1.5, 'ann', 'lane reset'), (2.5, 'ann', 'lane start')")
    with Store(db) as store:
        store.add_audit("bob", "alarm ack SCANNER_DOWN")
        assert store.verify_audit() == (3, None)
