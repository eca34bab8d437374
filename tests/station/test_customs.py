"""Customs instructions: parsing a stranger's bytes, keeping them (real SQLite), and which one is in force."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from station import customs
from station.customs import Instruction, InstructionInvalid, parse_instruction
from station.store import Store

ITEM = "RR473124829GB"


def instruction(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"instruction_id": "ins-1", "item_id": ITEM, "type": "hold", "text": "risk profile 7",
                            "issued_by": "customs-lhr", "issued_at": "2026-03-01T10:00:00Z"}
    return {k: v for k, v in {**base, **fields}.items() if v is not ...}


def payload(**fields: Any) -> bytes:
    return json.dumps(instruction(**fields)).encode()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "station.db") as opened:
        yield opened


# ---- parsing -------------------------------------------------------------------------------------


def test_a_valid_instruction_of_each_type_parses() -> None:
    for kind in customs.TYPES:
        methods = ["ETD", "PHS"] if kind == "screen" else []
        got = parse_instruction(payload(type=kind, methods=methods))
        assert (got.type, got.item_id, got.methods, got.issued_by) == (kind, ITEM, tuple(methods), "customs-lhr")
        assert got.issued_at == 1772359200.0
        assert got.refers == (kind in ("hold", "do_not_load", "screen"))
    assert parse_instruction(payload(text=...)).text == ""  # text is optional


@pytest.mark.parametrize(("fields", "named"), [
    ({"type": "detain"}, "type"),
    ({"item_id": "RR473124828GB"}, "item_id"),  # wrong check digit
    ({"item_id": 12}, "item_id"),
    ({"instruction_id": ""}, "instruction_id"),
    ({"instruction_id": "x" * 65}, "instruction_id"),
    ({"issued_by": ...}, "issued_by"),
    ({"issued_at": "2026-03-01 10:00"}, "issued_at"),
    ({"issued_at": "2026-03-01T10:00:00"}, "issued_at"),  # no zone
    ({"issued_at": "2026-02-30T10:00:00Z"}, "issued_at"),
    ({"type": "screen", "methods": []}, "methods"),
    ({"type": "screen", "methods": ["ETD", "XRAY"]}, "methods[1]"),
    ({"methods": "ETD"}, "methods"),
    ({"type": "screen", "methods": ["ETD", "ETD"]}, "methods"),
    ({"text": "line\nbreak"}, "text"),
    ({"text": "x" * 501}, "text"),
    ({"priority": 1}, "priority"),
])
def test_a_bad_instruction_names_its_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(InstructionInvalid) as err:
        parse_instruction(payload(**fields))
    assert named in str(err.value), str(err.value)


@pytest.mark.parametrize("raw", [b"", b"\xff\xfe", b"[1, 2]", b"null", b'"hold"', b"{" * 100_000])
def test_what_is_not_a_json_object_is_refused_with_why(raw: bytes) -> None:
    with pytest.raises(InstructionInvalid):
        parse_instruction(raw)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=15),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner,
                                                                                       max_size=4), max_leaves=12)
near_valid = st.fixed_dictionaries({}, optional={
    "instruction_id": st.text(max_size=70) | json_values,
    "item_id": st.sampled_from([ITEM, "RR473124828GB"]) | json_values,
    "type": st.sampled_from(customs.TYPES) | json_values,
    "methods": st.lists(st.sampled_from(["XRY", "ETD", "PHS", "bad"]), max_size=3) | json_values,
    "text": st.text(max_size=20) | json_values, "issued_by": st.text(max_size=10) | json_values,
    "issued_at": st.sampled_from(["2026-03-01T10:00:00Z", "2026-03-01T10:00:00+01:00", "yesterday"]) | json_values,
    "extra": json_values})


@given(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()),
                 near_valid.map(lambda v: json.dumps(v).encode())))
def test_a_strangers_bytes_give_an_instruction_or_instruction_invalid_never_a_crash(raw: bytes) -> None:
    try:
        got = parse_instruction(raw)
    except InstructionInvalid as err:
        assert str(err)
    else:
        assert isinstance(got, Instruction) and got.type in customs.TYPES and got.issued_by
        assert not (got.type == "screen" and not got.methods)


# ---- keeping them, and which is in force ------------------------------------------------------------


def given_(store: Store, ident: str, kind: str, at: str, **fields: Any) -> bool:
    methods = ["ETD"] if kind == "screen" else []
    return customs.store_instruction(store, parse_instruction(payload(instruction_id=ident, type=kind, issued_at=at,
                                                                      methods=methods, **fields)))


def test_an_instruction_id_seen_again_changes_nothing(store: Store) -> None:
    assert given_(store, "ins-1", "hold", "2026-03-01T10:00:00Z")
    assert not given_(store, "ins-1", "release", "2026-03-01T11:00:00Z", text="a different message, same id")
    (only,) = customs.instructions_for(store.db, ITEM)
    assert only.type == "hold" and customs.active(store, ITEM) == only


def test_the_latest_referral_holds_until_a_later_release_and_info_never_holds(store: Store) -> None:
    assert customs.active(store, ITEM) is None
    given_(store, "i1", "info", "2026-03-01T09:00:00Z")
    assert customs.active(store, ITEM) is None
    given_(store, "h1", "hold", "2026-03-01T10:00:00Z")
    assert customs.active(store, ITEM).instruction_id == "h1"  # type: ignore[union-attr]
    given_(store, "i2", "info", "2026-03-01T10:30:00Z")
    assert customs.active(store, ITEM).instruction_id == "h1"  # type: ignore[union-attr]
    given_(store, "r1", "release", "2026-03-01T11:00:00Z")
    assert customs.active(store, ITEM) is None
    assert customs.referral(store.db, ITEM).instruction_id == "h1"  # type: ignore[union-attr]  # still answered
    given_(store, "s1", "screen", "2026-03-01T12:00:00Z")
    assert customs.active(store, ITEM).instruction_id == "s1"  # type: ignore[union-attr]
    assert customs.active(store, "RR000000014FR") is None  # another item


def test_order_is_customs_issue_time_not_arrival(store: Store) -> None:
    """QoS 1 may deliver a release issued after the hold before it: the hold does not come back to life."""
    given_(store, "r1", "release", "2026-03-01T11:00:00Z")
    given_(store, "h1", "hold", "2026-03-01T10:00:00Z")
    assert customs.active(store, ITEM) is None
    given_(store, "d1", "do_not_load", "2026-03-01T12:00:00+01:00")  # 11:00 UTC, the release's second
    assert customs.active(store, ITEM).instruction_id == "d1"  # type: ignore[union-attr]  # same time: arrival


def test_a_referral_is_a_reason_naming_the_instruction() -> None:
    hold = parse_instruction(payload(type="screen", methods=["ETD", "PHS"], text="powder"))
    reason = hold.reason()
    assert reason.code == "CUSTOMS_SCREEN"
    assert "ins-1" in reason.detail and "customs-lhr" in reason.detail and "ETD, PHS" in reason.detail
    assert "powder" in reason.detail


def test_an_old_database_gains_the_tables_and_the_verdicts_methods_column(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the verdicts table as an earlier version made it
        db.execute("CREATE TABLE verdicts (id INTEGER PRIMARY KEY, item INTEGER NOT NULL, verdict TEXT NOT NULL,"
                   " threat_class TEXT, reason_code TEXT, note TEXT, by TEXT NOT NULL, at REAL NOT NULL,"
                   " shown_at REAL, undone_at REAL, undone_by TEXT)")
    with Store(path) as store:
        assert "methods" in {r["name"] for r in store.db.execute("PRAGMA table_info(verdicts)")}
        assert given_(store, "h1", "hold", "2026-03-01T10:00:00Z")
