"""The store: items and their messages land together; EAD versions only move forward."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from station.ead.record import EadRecord
from station.store import ItemRow, OutboxMessage, Store
from tests.station.ead.test_ead_record import record_dict


def item(uid: str, decision: str = "CLEAR") -> ItemRow:
    return ItemRow(uid=uid, track_id=1, item_id="RR473124829GB", barcode="RR473124829GB", scan_id="scan-1",
                   image_path=None, image_sha256=None, decision=decision, routed=decision, score=0.1, reasons=[],
                   ead_status="found", ead_version=1, model_hash="abc", rules_version="builtin-1",
                   decision_latency_ms=12.0, routed_at=0.0,
                   detections=(("gun", 0.9, True, (1.0, 2.0, 3.0, 4.0)),))


def test_item_and_messages_are_written_together(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        store.record_item(item("a"), [OutboxMessage("a/result", "t/result", "{}")])
        assert store.item_count() == 1 and store.outbox_count() == 1
        # A failing write (a duplicate message id) rolls the whole item back.
        with pytest.raises(sqlite3.IntegrityError):
            store.record_item(item("b"), [OutboxMessage("a/result", "t/result", "{}")])
        assert store.item_count() == 1 and store.outbox_count() == 1
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_outbox_drains_in_order_and_deletes_only_what_is_acknowledged(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        store.enqueue(OutboxMessage(f"m{i}", "t", json.dumps(i)) for i in range(5))
        batch = store.outbox_batch(3)
        assert [m.msg_id for m in batch] == ["m0", "m1", "m2"]
        store.outbox_delete([batch[0].seq, batch[2].seq])
        assert [m.msg_id for m in store.outbox_batch(10)] == ["m1", "m3", "m4"]
    with Store(tmp_path / "s.db") as again:  # survives a restart
        assert again.outbox_count() == 3


def test_ead_later_version_supersedes_and_earlier_is_ignored(tmp_path: Path) -> None:
    v1 = EadRecord.model_validate(record_dict())
    v2 = EadRecord.model_validate(record_dict(version=2, total_value=99.0))
    with Store(tmp_path / "s.db") as store:
        assert store.upsert_ead(v1, "test")
        assert store.upsert_ead(v2, "test")
        assert not store.upsert_ead(v1, "test")
        found = store.ead_for(v1.item_id)
        assert found is not None and found.version == 2 and found.total_value == 99.0
        assert store.ead_for("XX000000000XX") is None
