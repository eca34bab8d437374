"""The local store: SQLite in WAL mode under the data directory.

An item, its detections and its outgoing messages are written in one transaction, so a crash can
never leave an item without its result message or a message without its item. The outbox is drained
in `seq` order and a row is deleted only once the broker has acknowledged it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from station.ead.record import EadRecord, RecordInvalid

log = logging.getLogger(__name__)

MAX_VERSION_STEP = 1000  # the most one EAD amendment may raise the stored version

# The store's schema version (SQLite's user_version). 0: a store made before versions were kept (every
# release up to 0.1.0); 1: versions kept; 2: retention's tables (legal_holds, pruned_images) and indexes
# (items_with_image, ead_records_received_at). Any change to SCHEMA raises it (an open of a store at this
# version touches nothing): a new table or index is made by SCHEMA itself, a changed table needs a
# step in `_bring_up_to_date`.
SCHEMA_VERSION = 2


class StoreTooNew(Exception):
    """The store was written by a newer station: this one must not touch it (the message says what to do)."""

def _statements(script: str) -> Iterator[str]:
    """The SQL statements of `script`, one by one (executescript would commit the transaction first)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            yield statement
            statement = ""
    if statement.strip():
        raise ValueError(f"an unfinished SQL statement at the end of the schema: {statement.strip()[:60]!r}")


def _reason_rows(reasons: str, item: str, source: str = "") -> str:
    """SELECT (code, item) for each reason in the JSON array `reasons` that is an object with a text code.
    A malformed reason, or reasons that are not JSON, give no row and never make an item's INSERT fail;
    CASE, not AND, because only CASE guarantees that json_type sees JSON."""
    code = ("CASE WHEN j.type = 'object' THEN CASE WHEN json_type(j.value, '$.code') = 'text'"
            " THEN json_extract(j.value, '$.code') END END")
    return (f"SELECT {code}, {item} FROM {source} json_each(CASE WHEN json_valid({reasons}) THEN {reasons}"
            f" ELSE '[]' END) AS j WHERE {code} IS NOT NULL")


SCHEMA = f"""
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    track_id INTEGER NOT NULL,
    item_id TEXT,
    barcode TEXT,
    scan_id TEXT,
    image_path TEXT,
    image_sha256 TEXT,
    decision TEXT NOT NULL CHECK (decision IN ('CLEAR', 'INSPECT')),
    routed TEXT NOT NULL,
    score REAL NOT NULL,
    reasons TEXT NOT NULL,
    ead_status TEXT NOT NULL,
    ead_version INTEGER,
    model_hash TEXT,
    rules_version TEXT NOT NULL,
    decision_latency_ms REAL,
    routed_at REAL NOT NULL,
    explanation TEXT,  -- JSON: evidence, reasons and rule trace (risk.Decision.explanation_json); NULL before rules
    revision INTEGER NOT NULL DEFAULT 1  -- 2, 3...: decided again after routing (a declaration arrived late)
);
CREATE INDEX IF NOT EXISTS items_item_id ON items (item_id);
CREATE INDEX IF NOT EXISTS items_scan_id ON items (scan_id);
CREATE TABLE IF NOT EXISTS detections (
    item INTEGER NOT NULL REFERENCES items (id),
    label TEXT NOT NULL,
    score REAL NOT NULL,
    threat INTEGER NOT NULL,
    x1 REAL, y1 REAL, x2 REAL, y2 REAL
);
CREATE INDEX IF NOT EXISTS detections_item ON detections (item);
CREATE TABLE IF NOT EXISTS ead_records (
    item_id TEXT PRIMARY KEY,
    version INTEGER NOT NULL,
    record TEXT NOT NULL,
    source TEXT NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS ead_records_received_at ON ead_records (received_at);  -- the newest, and what came since
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (  -- single values the station keeps across runs (the MQTT session counter)
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (  -- every command central sent (station/commands.py): a cmd_id is used once
    cmd_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    issued_by TEXT NOT NULL,
    expires_at REAL NOT NULL,
    received_at REAL NOT NULL,
    outcome TEXT NOT NULL  -- "accepted", or "refused: why"
);
CREATE TABLE IF NOT EXISTS on_belt (  -- items the running station is tracking, kept so a crash cannot lose them
    key TEXT PRIMARY KEY,  -- run id / track id
    track TEXT NOT NULL,  -- JSON: what is known of it (ids, decision, whether its CLEAR was armed)
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS alarms (  -- one row per raise; rows of a code not yet cleared are its active alarm
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    code TEXT NOT NULL,
    detail TEXT NOT NULL,
    acked_at REAL,
    acked_by TEXT,
    cleared_at REAL,
    cleared_by TEXT
);
CREATE TABLE IF NOT EXISTS users (  -- console accounts (station/accounts.py): no default account exists
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,  -- argon2id
    created_at REAL NOT NULL,
    disabled_at REAL
);
CREATE TABLE IF NOT EXISTS audit (  -- every operator and technician action, with who did it, hash-chained
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    prev TEXT,  -- the hash of the row before (AUDIT_GENESIS for the first)
    hash TEXT   -- audit_hash(prev, at, who, action): an edited, removed or inserted row breaks the chain
);
CREATE INDEX IF NOT EXISTS items_routed_at ON items (routed_at);
CREATE INDEX IF NOT EXISTS items_decision ON items (decision);  -- (decision, id): the queue and history, by id
CREATE TABLE IF NOT EXISTS item_reasons (  -- the codes of items.reasons, one row each, kept by the triggers below
    code TEXT NOT NULL,
    item INTEGER NOT NULL,  -- items.id (no foreign key: a copy of the item's own column, not a fact of its own)
    PRIMARY KEY (code, item)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS item_reasons_item ON item_reasons (item);
CREATE TRIGGER IF NOT EXISTS items_reasons_insert AFTER INSERT ON items BEGIN
    INSERT OR IGNORE INTO item_reasons (code, item) {_reason_rows("new.reasons", "new.id")};
END;
CREATE TRIGGER IF NOT EXISTS items_reasons_update AFTER UPDATE OF reasons ON items BEGIN
    DELETE FROM item_reasons WHERE item = old.id;
    INSERT OR IGNORE INTO item_reasons (code, item) {_reason_rows("new.reasons", "new.id")};
END;
CREATE TRIGGER IF NOT EXISTS items_reasons_delete AFTER DELETE ON items BEGIN
    DELETE FROM item_reasons WHERE item = old.id;
END;
CREATE TABLE IF NOT EXISTS verdicts (  -- an operator's judgement of an INSPECT item (station/reviews.py)
    id INTEGER PRIMARY KEY,
    item INTEGER NOT NULL REFERENCES items (id),
    verdict TEXT NOT NULL CHECK (verdict IN ('CLEARED', 'THREAT', 'REFERRED', 'FALSE_ALARM')),
    threat_class TEXT,  -- THREAT: the detector's label of what it is
    reason_code TEXT,  -- why the operator overrode the machine (reviews.OVERRIDE_REASONS)
    note TEXT,
    by TEXT NOT NULL,
    at REAL NOT NULL,
    shown_at REAL,  -- when the console showed the item to the operator
    undone_at REAL,  -- undone by the same operator within seconds: the item is back in the queue
    undone_by TEXT,
    methods TEXT  -- JSON list of the screening methods the operator used besides the X-ray (PHS, ETD...)
);
CREATE INDEX IF NOT EXISTS verdicts_item ON verdicts (item);
-- An item has at most one verdict that is not undone; the partial indexes serve the current verdict only.
CREATE UNIQUE INDEX IF NOT EXISTS verdicts_current ON verdicts (item) WHERE undone_at IS NULL;
CREATE INDEX IF NOT EXISTS verdicts_current_verdict ON verdicts (verdict, item) WHERE undone_at IS NULL;
CREATE INDEX IF NOT EXISTS verdicts_current_by ON verdicts (by, item) WHERE undone_at IS NULL;
CREATE TABLE IF NOT EXISTS customs_instructions (  -- what customs asked of an item (station/customs.py)
    id INTEGER PRIMARY KEY,
    instruction_id TEXT NOT NULL UNIQUE,  -- customs' own id: one seen again is not stored again
    item_id TEXT NOT NULL,  -- S10
    type TEXT NOT NULL CHECK (type IN ('hold', 'release', 'do_not_load', 'screen', 'info')),
    methods TEXT NOT NULL,  -- JSON list of screening method codes (for screen)
    text TEXT NOT NULL,
    issued_by TEXT NOT NULL,
    issued_at REAL NOT NULL,  -- customs' time (Unix seconds)
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS customs_instructions_item ON customs_instructions (item_id, issued_at);
CREATE TABLE IF NOT EXISTS legal_holds (  -- `station item hold`: retention never deletes a held item (station/holds.py)
    id INTEGER PRIMARY KEY,
    item INTEGER NOT NULL REFERENCES items (id),
    reason TEXT NOT NULL,
    held_by TEXT NOT NULL,
    held_at REAL NOT NULL,
    released_by TEXT,
    released_at REAL
);
CREATE INDEX IF NOT EXISTS legal_holds_item ON legal_holds (item);
CREATE UNIQUE INDEX IF NOT EXISTS legal_holds_current ON legal_holds (item) WHERE released_at IS NULL;
CREATE TABLE IF NOT EXISTS pruned_images (  -- scans retention deleted (station/retention.py); items keep image_sha256
    item INTEGER PRIMARY KEY REFERENCES items (id),
    path TEXT,  -- the file until it is unlinked (after the commit): one a crash left on disk goes at the next pass
    pruned_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS pruned_images_unlinking ON pruned_images (item) WHERE path IS NOT NULL;
CREATE INDEX IF NOT EXISTS items_with_image ON items (routed_at) WHERE image_path IS NOT NULL;  -- retention's scan
"""


@dataclass(frozen=True)
class OutboxMessage:
    msg_id: str
    topic: str
    payload: str
    seq: int = 0
    created_at: float = 0.0  # time.time() it was queued (read back from the store)


@dataclass(frozen=True)
class ItemRow:
    """What `record_item` writes for one item (detections are (label, score, threat, box))."""

    uid: str
    track_id: int
    item_id: str | None
    barcode: str | None
    scan_id: str | None
    image_path: str | None
    image_sha256: str | None
    decision: str
    routed: str
    score: float
    reasons: list[dict[str, str]]
    ead_status: str
    ead_version: int | None
    model_hash: str | None
    rules_version: str
    decision_latency_ms: float | None
    routed_at: float
    detections: tuple[tuple[str, float, bool, tuple[float, float, float, float]], ...] = ()
    explanation: str | None = None  # JSON of the decision's evidence and rule trace, for `station rules explain`


class Store:
    """One SQLite connection, used from one thread only (the daemon writes through `station.writer`).

    The database holds names and addresses: its folder is created 0700 and the file 0600 (SQLite gives
    its -wal and -shm files the database file's permissions).
    """

    def __init__(self, path: Path, busy_timeout_s: float = 5.0) -> None:
        _owner_only(path)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=True, timeout=busy_timeout_s)
        self.db.row_factory = sqlite3.Row
        self._wal(busy_timeout_s)
        self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        self.db.execute("PRAGMA foreign_keys=ON")
        self._bring_up_to_date()

    def _wal(self, timeout_s: float) -> None:
        """Switch to WAL, which readers and the writer rely on never to block each other. SQLite keeps the
        old mode, and says so only in the pragma's answer, when another connection holds the file then."""
        deadline = time.monotonic() + timeout_s
        while (mode := self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]) != "wal":
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError(f"{self.path}: cannot switch to WAL (journal mode {mode})")
            time.sleep(0.01)

    def _has_table(self, name: str) -> bool:
        row = self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone()
        return row is not None

    @property
    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _bring_up_to_date(self) -> None:
        """Create what is missing and migrate an older store forward, all in one transaction (a crash
        half-way leaves the store as it was); refuse a store of a newer schema before touching it."""
        found = self.schema_version
        if found > SCHEMA_VERSION:
            raise StoreTooNew(
                f"{self.path}: the store has schema version {found}, and this station knows versions up to "
                f"{SCHEMA_VERSION}: a newer station wrote it. Install that station again (or a newer one), or "
                f"restore a backup made by this one (station restore); the store is left untouched")
        if found == SCHEMA_VERSION:
            return
        with self.transaction() as db:
            found = self.schema_version  # again, under the write lock: another process may have done it
            if found == SCHEMA_VERSION:
                return
            existed, indexed = self._has_table("items"), self._has_table("item_reasons")
            for statement in _statements(SCHEMA):
                db.execute(statement)
            if found < 1:
                self._migrate(reasons_indexed=indexed)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if existed:
            log.info("%s: store migrated from schema version %d to %d", self.path, found, SCHEMA_VERSION)

    def _migrate(self, *, reasons_indexed: bool) -> None:
        """Version 0 -> 1, inside `_bring_up_to_date`'s transaction: a store made before versions were kept
        (columns and tables were only ever added). `reasons_indexed`: item_reasons was there before SCHEMA
        ran, so its triggers saw every item."""
        columns = {row["name"] for row in self.db.execute("PRAGMA table_info(items)")}
        if "explanation" not in columns:
            self.db.execute("ALTER TABLE items ADD COLUMN explanation TEXT")
        if "revision" not in columns:
            self.db.execute("ALTER TABLE items ADD COLUMN revision INTEGER NOT NULL DEFAULT 1")
        audit_columns = {row["name"] for row in self.db.execute("PRAGMA table_info(audit)")}
        if "hash" not in audit_columns:  # rows written before the chain: chained now, in their order
            self.db.execute("ALTER TABLE audit ADD COLUMN prev TEXT")
            self.db.execute("ALTER TABLE audit ADD COLUMN hash TEXT")
            prev = AUDIT_GENESIS
            for row in self.db.execute("SELECT id, at, who, action FROM audit ORDER BY id").fetchall():
                digest = audit_hash(prev, row["at"], row["who"], row["action"])
                self.db.execute("UPDATE audit SET prev = ?, hash = ? WHERE id = ?", (prev, digest, row["id"]))
                prev = digest
        alarm_columns = {row["name"] for row in self.db.execute("PRAGMA table_info(alarms)")}
        for name, kind in (("acked_at", "REAL"), ("acked_by", "TEXT"), ("cleared_at", "REAL"), ("cleared_by", "TEXT")):
            if name not in alarm_columns:
                self.db.execute(f"ALTER TABLE alarms ADD COLUMN {name} {kind}")
        verdict_columns = {row["name"] for row in self.db.execute("PRAGMA table_info(verdicts)")}
        if "methods" not in verdict_columns:
            self.db.execute("ALTER TABLE verdicts ADD COLUMN methods TEXT")
        if not reasons_indexed:  # items stored before the triggers; OR IGNORE: another process may be at it too
            rows = _reason_rows("i.reasons", "i.id", source="items AS i,")
            self.db.execute(f"INSERT OR IGNORE INTO item_reasons (code, item) {rows}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT. On an error the transaction is rolled back and *that* error raised:
        SQLite may have rolled back already (a full disk does), and a failed ROLLBACK must not hide why."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                try:
                    self.db.execute("ROLLBACK")
                except sqlite3.Error as err:
                    log.warning("%s: rollback failed after an error: %s", self.path, err)
            raise

    # ---- items --------------------------------------------------------------------------------

    def record_item(self, item: ItemRow, messages: Iterable[OutboxMessage], on_belt_key: str | None = None) -> int:
        """Store a routed item, its detections and its messages in one transaction (and forget it as on
        the belt, under `on_belt_key`)."""
        with self.transaction() as db:
            if on_belt_key is not None:
                db.execute("DELETE FROM on_belt WHERE key = ?", (on_belt_key,))
            row = db.execute(
                "INSERT INTO items (uid, track_id, item_id, barcode, scan_id, image_path, image_sha256, decision,"
                " routed, score, reasons, ead_status, ead_version, model_hash, rules_version, decision_latency_ms,"
                " routed_at, explanation) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (item.uid, item.track_id, item.item_id, item.barcode, item.scan_id, item.image_path,
                 item.image_sha256, item.decision, item.routed, item.score, json.dumps(item.reasons),
                 item.ead_status, item.ead_version, item.model_hash, item.rules_version,
                 item.decision_latency_ms, item.routed_at, item.explanation),
            ).lastrowid
            db.executemany(
                "INSERT INTO detections (item, label, score, threat, x1, y1, x2, y2) VALUES (?,?,?,?,?,?,?,?)",
                [(row, label, score, int(threat), *box) for label, score, threat, box in item.detections],
            )
            self._enqueue(db, messages)
        assert row is not None
        return row

    def items(self, limit: int = 1_000_000) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM items ORDER BY id LIMIT ?", (limit,)).fetchall()

    def items_for(self, item_id: str) -> list[sqlite3.Row]:
        """Every stored item with this S10 id, oldest first (an id can pass the lane twice)."""
        return self.db.execute("SELECT * FROM items WHERE item_id = ? ORDER BY id", (item_id,)).fetchall()

    def revise_item(self, item: ItemRow, revision: int, messages: Iterable[OutboxMessage]) -> None:
        """Record a routed item's new decision (`item`, from the stored row; its routing stays what it
        was) as `revision`, with the messages that announce it, in one transaction."""
        with self.transaction() as db:
            db.execute(
                "UPDATE items SET decision=?, score=?, reasons=?, ead_status=?, ead_version=?, rules_version=?,"
                " explanation=?, revision=? WHERE uid=?",
                (item.decision, item.score, json.dumps(item.reasons), item.ead_status, item.ead_version,
                 item.rules_version, item.explanation, revision, item.uid))
            self._enqueue(db, messages)

    def find_item(self, ref: str) -> sqlite3.Row | None:
        """The newest item whose item id, barcode, scan id or uid is `ref` (an item id can be scanned twice)."""
        row: sqlite3.Row | None = self.db.execute(
            "SELECT * FROM items WHERE item_id = ?1 OR barcode = ?1 OR scan_id = ?1 OR uid = ?1"
            " ORDER BY id DESC LIMIT 1",
            (ref,),
        ).fetchone()
        return row

    def item_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM items").fetchone()[0])

    def keep_on_belt(self, key: str, track: dict[str, object]) -> None:
        self.db.execute("INSERT INTO on_belt (key, track, at) VALUES (?,?,?) ON CONFLICT (key) DO UPDATE"
                        " SET track=excluded.track, at=excluded.at", (key, json.dumps(track), time.time()))

    def on_belt(self) -> list[tuple[str, dict[str, Any]]]:
        """Items an earlier run was tracking when it stopped (key, what it knew), oldest first."""
        rows = self.db.execute("SELECT key, track FROM on_belt ORDER BY at").fetchall()
        return [(r["key"], json.loads(r["track"])) for r in rows]

    def add_alarm(self, code: str, detail: str, at: float | None = None, cleared_by: str | None = None,
                  messages: Iterable[OutboxMessage] = ()) -> None:
        """One raise of an alarm (and its `alarms` message); a notice is stored cleared (`cleared_by`)."""
        at = time.time() if at is None else at
        with self.transaction() as db:
            db.execute("INSERT INTO alarms (at, code, detail, cleared_at, cleared_by) VALUES (?,?,?,?,?)",
                       (at, code, detail, at if cleared_by else None, cleared_by))
            append_outbox(db, messages)

    def ack_alarm(self, code: str, by: str, at: float, messages: Iterable[OutboxMessage] = ()) -> None:
        with self.transaction() as db:
            db.execute("UPDATE alarms SET acked_at = ?, acked_by = ? WHERE code = ? AND cleared_at IS NULL",
                       (at, by, code))
            append_outbox(db, messages)

    def clear_alarm(self, code: str, by: str, at: float, messages: Iterable[OutboxMessage] = ()) -> None:
        with self.transaction() as db:
            db.execute("UPDATE alarms SET cleared_at = ?, cleared_by = ? WHERE code = ? AND cleared_at IS NULL",
                       (at, by, code))
            append_outbox(db, messages)

    # ---- the central link's own records ---------------------------------------------------------

    def next_session(self) -> int:
        """The MQTT session counter, risen by one and stored before the link connects with it."""
        with self.transaction() as db:
            db.execute("INSERT INTO meta (key, value) VALUES ('mqtt_session', 1) "
                       "ON CONFLICT (key) DO UPDATE SET value = value + 1")
            return int(db.execute("SELECT value FROM meta WHERE key = 'mqtt_session'").fetchone()[0])

    def add_command(self, cmd_id: str, name: str, issued_by: str, expires_at: float, outcome: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO commands (cmd_id, name, issued_by, expires_at, received_at, outcome)"
                        " VALUES (?,?,?,?,?,?)", (cmd_id, name, issued_by, expires_at, time.time(), outcome))

    def command_ids(self, unexpired_at: float) -> set[str]:
        """The cmd_ids seen whose command has not expired yet (an expired one is refused anyway)."""
        rows = self.db.execute("SELECT cmd_id FROM commands WHERE expires_at >= ?", (unexpired_at,)).fetchall()
        return {r["cmd_id"] for r in rows}

    def active_alarms(self) -> list[sqlite3.Row]:
        """Per code not yet cleared: first and last raise, count, latest detail and acknowledgement."""
        return self.db.execute(
            "SELECT code, min(at) AS first_at, max(at) AS last_at, count(*) AS count, "
            "(SELECT detail FROM alarms b WHERE b.code = a.code AND b.cleared_at IS NULL ORDER BY b.id DESC LIMIT 1)"
            " AS detail, "
            "(SELECT acked_by FROM alarms b WHERE b.code = a.code AND b.cleared_at IS NULL ORDER BY b.id DESC LIMIT 1)"
            " AS acked_by, "
            "(SELECT acked_at FROM alarms b WHERE b.code = a.code AND b.cleared_at IS NULL ORDER BY b.id DESC LIMIT 1)"
            " AS acked_at "
            "FROM alarms a WHERE cleared_at IS NULL GROUP BY code ORDER BY min(id)").fetchall()

    def add_audit(self, who: str, action: str, at: float | None = None) -> None:
        """Append one row to the audit chain. The last hash is read and the row written in one write
        transaction, so two processes appending at once (the daemon, a command) still make one chain."""
        with self.transaction() as db:
            append_audit(db, who, action, time.time() if at is None else at)

    def verify_audit(self) -> tuple[int, str | None]:
        """Recompute the audit chain: (rows checked, the first broken row's description, or None)."""
        prev, count = AUDIT_GENESIS, 0
        for row in self.db.execute("SELECT id, at, who, action, prev, hash FROM audit ORDER BY id"):
            count += 1
            if row["prev"] != prev:
                return count, (f"row {row['id']} ({row['who']}: {row['action']!r}): it does not follow the row "
                               "before it (a row was removed or inserted)")
            if row["hash"] != audit_hash(prev, row["at"], row["who"], row["action"]):
                return count, f"row {row['id']} ({row['who']}: {row['action']!r}): its content was changed"
            prev = str(row["hash"])
        return count, None

    # ---- EAD ----------------------------------------------------------------------------------

    def upsert_ead(self, record: EadRecord, source: str) -> bool:
        """Keep the record unless a same-or-later version is already stored. True when stored.

        A version more than MAX_VERSION_STEP above the stored one (or, for a first record, above 0) raises
        RecordInvalid and stores nothing: a forged huge version would otherwise lock out every amendment.
        """
        row = self.db.execute("SELECT version FROM ead_records WHERE item_id = ?", (record.item_id,)).fetchone()
        stored = 0 if row is None else int(row["version"])
        if record.version - stored > MAX_VERSION_STEP:
            raise RecordInvalid((("version", f"jumps from {stored} to {record.version}: more than "
                                             f"{MAX_VERSION_STEP} above the stored version"),))
        cur = self.db.execute(  # the step again in SQL: another process may write between the two statements
            "INSERT INTO ead_records (item_id, version, record, source, received_at) VALUES (?,?,?,?,?)"
            " ON CONFLICT (item_id) DO UPDATE SET version=excluded.version, record=excluded.record,"
            " source=excluded.source, received_at=excluded.received_at WHERE excluded.version > ead_records.version"
            " AND excluded.version - ead_records.version <= ?",
            (record.item_id, record.version, record.to_json(), source, time.time(), MAX_VERSION_STEP),
        )
        return cur.rowcount > 0

    def ead_news(self, since: float, item_ids: Iterable[str]) -> list[EadRecord]:
        """Declarations received since `since` (Unix seconds) that concern the lane: for one of `item_ids`
        (items on the belt), or for an item already stored (which a declaration may decide again)."""
        ids = list(item_ids)
        marks = ",".join("?" * len(ids))
        rows = self.db.execute(
            "SELECT record FROM ead_records e WHERE received_at >= ? AND "
            f"(item_id IN ({marks}) OR EXISTS (SELECT 1 FROM items i WHERE i.item_id = e.item_id))",
            (since, *ids)).fetchall()
        return [EadRecord.model_validate_json(row["record"]) for row in rows]

    def ead_received(self, since: float, until: float) -> list[EadRecord]:
        """Declarations received (or amended) in [since, until), Unix seconds."""
        rows = self.db.execute("SELECT record FROM ead_records WHERE received_at >= ? AND received_at < ?"
                               " ORDER BY received_at",
                               (since, until)).fetchall()
        return [EadRecord.model_validate_json(row["record"]) for row in rows]

    def ead_stats(self) -> tuple[int, float | None]:
        """How many declarations the cache holds, and when the newest was received (time.time())."""
        # Two statements: each alone is quick on the received_at index (SQLite's count and max shortcuts)
        count = self.db.execute("SELECT count(*) FROM ead_records").fetchone()[0]
        return int(count), self.db.execute("SELECT max(received_at) FROM ead_records").fetchone()[0]

    def ead_for(self, item_id: str) -> EadRecord | None:
        row = self.db.execute("SELECT record FROM ead_records WHERE item_id = ?", (item_id,)).fetchone()
        return None if row is None else EadRecord.model_validate_json(row["record"])

    # ---- outbox -------------------------------------------------------------------------------

    def enqueue(self, messages: Iterable[OutboxMessage]) -> None:
        with self.transaction() as db:
            self._enqueue(db, messages)

    @staticmethod
    def _enqueue(db: sqlite3.Connection, messages: Iterable[OutboxMessage]) -> None:
        append_outbox(db, messages)

    def outbox_batch(self, limit: int = 100, after_seq: int = 0) -> list[OutboxMessage]:
        rows = self.db.execute(
            "SELECT seq, msg_id, topic, payload, created_at FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (after_seq, limit)).fetchall()
        return [OutboxMessage(r["msg_id"], r["topic"], r["payload"], r["seq"], r["created_at"]) for r in rows]

    def outbox_delete(self, seqs: Iterable[int]) -> None:
        """Acknowledged messages out, in one transaction (one commit each cost twice as much: bench/outbox.py)."""
        with self.transaction() as db:
            db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])

    def outbox_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def outbox_depth(self) -> tuple[int, float | None]:
        """Messages waiting for the broker, and when the oldest was queued (time.time())."""
        count, oldest = self.db.execute("SELECT count(*), min(created_at) FROM outbox").fetchone()
        return int(count), oldest


AUDIT_GENESIS = "0" * 64


def append_outbox(db: sqlite3.Connection, messages: Iterable[OutboxMessage]) -> None:
    """Queue messages inside the caller's transaction, so they are stored with what they announce or not
    at all (a duplicate msg_id raises sqlite3.IntegrityError and the caller's transaction rolls back)."""
    now = time.time()
    db.executemany(
        "INSERT INTO outbox (msg_id, topic, payload, created_at) VALUES (?,?,?,?)",
        [(msg.msg_id, msg.topic, msg.payload, now) for msg in messages],
    )


def append_audit(db: sqlite3.Connection, who: str, action: str, at: float) -> None:
    """Append one row to the audit chain inside the caller's write transaction (BEGIN IMMEDIATE, as
    `Store.transaction` opens it): the last hash is read under the write lock, so the chain stays one
    chain, and the row is stored or rolled back with whatever else the transaction writes."""
    if not db.in_transaction:
        raise RuntimeError("append_audit needs an open write transaction (Store.transaction())")
    last = db.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    prev = AUDIT_GENESIS if last is None else str(last[0])
    db.execute("INSERT INTO audit (at, who, action, prev, hash) VALUES (?,?,?,?,?)",
               (at, who, action, prev, audit_hash(prev, at, who, action)))


def audit_hash(prev: str, at: float, who: str, action: str) -> str:
    """One audit row's link in the chain: SHA-256 over the previous hash and the row, canonically."""
    return hashlib.sha256(json.dumps([prev, repr(float(at)), who, action], ensure_ascii=False).encode()).hexdigest()


def _owner_only(path: Path) -> None:
    """Create the database's folder (0700) and file (0600); tighten files an older version left readable.

    An existing file is never opened here: closing any descriptor of a database file drops the POSIX locks
    that this process's SQLite connections hold on it, and another process may then checkpoint and delete
    the WAL under them (the SQLite manual's "how to corrupt your database").
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if file.stat().st_mode & 0o077:
                log.warning("%s was readable by others; making it owner-only", file)
                file.chmod(0o600)
        except FileNotFoundError:
            pass  # SQLite creates -wal and -shm with the database's permissions
