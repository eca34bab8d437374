"""EAD records: strict parsing whose errors name the field, and an import that never stops early."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from station.intake import import_ead_file
from station.ead.record import (
    BadLine,
    EadRecord,
    RecordInvalid,
    parse_json_record,
    parse_record,
    read_jsonl,
)
from station.store import Store


def record_dict(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "item_id": "RR473124829GB", "version": 1,
        "sender": {"name": "L. Chen", "address": "1 High Street", "postcode": "10000", "country": "CN"},
        "addressee": {"name": "J. Smith", "address": "2 Station Road", "postcode": "SW1", "country": "GB"},
        "category": "sale_of_goods",
        "contents": [{"description": "cotton T-shirts", "quantity": 2, "net_weight_kg": 0.4, "value": 20.0,
                      "currency": "EUR", "hs_code": "610910", "origin_country": "CN"}],
        "total_gross_weight_kg": 0.6, "total_value": 20.0, "currency": "EUR",
        "declared_at": "2026-11-28T10:00:00+00:00",
    }
    base.update(changes)
    return base


def test_a_good_record_parses() -> None:
    record = parse_record(record_dict())
    assert record.item_id == "RR473124829GB" and record.contents[0].hs_code == "610910"


def test_errors_name_the_field() -> None:
    bad = record_dict(category="bribe", colour="red")
    bad["contents"][0]["quantity"] = "2"  # strict: a string is not a quantity
    with pytest.raises(RecordInvalid) as caught:
        parse_record(bad)
    assert {field for field, _ in caught.value.problems} == {"category", "colour", "contents[0].quantity"}
    assert "contents[0].quantity" in str(caught.value)


def test_an_incomplete_record_is_still_a_record() -> None:
    """Empty or missing fields customs needs are findings (EAD_INCOMPLETE), not a reason to drop the data."""
    record = parse_record({"item_id": "RR473124829GB", "sender": {"country": "UK"}, "contents": [{}]})
    assert record.sender.name == "" and record.contents[0].value is None and record.category is None


@pytest.mark.parametrize(("value", "field", "words"), [
    ([1, 2], "record", "not a JSON object but an array"),
    ("RR473124829GB", "record", "not a JSON object but a string"),
    ({}, "item_id", "Field required"),
    ({"item_id": ""}, "item_id", "at least 1 character"),
    (record_dict(declared_at="2026-11-28T10:00:00"), "declared_at", "timezone"),
    (record_dict(total_value=float("inf")), "total_value", "finite"),
    (record_dict(version=True), "version", "integer"),
])
def test_what_cannot_be_a_record(value: object, field: str, words: str) -> None:
    with pytest.raises(RecordInvalid) as caught:
        parse_record(value)
    assert [(f, words in m) for f, m in caught.value.problems] == [(field, True)]


def test_import_reports_bad_lines_and_keeps_going(tmp_path: Path) -> None:
    path = tmp_path / "ead.jsonl"
    lines = [json.dumps(record_dict()), "{not json", "[1, 2]", json.dumps(record_dict(item_id="RR000000005GB",
                                                                                     total_value=-1))]
    lines.append(json.dumps(record_dict(item_id="CP123456785FR")))
    path.write_text("\n".join(lines) + "\n")
    with Store(tmp_path / "s.db") as store:
        outcomes = list(import_ead_file(store, path, "test"))
        bad = [o for o in outcomes if isinstance(o, BadLine)]
        assert [b.line for b in bad] == [2, 3, 4]
        assert bad[0].problem.startswith("not JSON") and bad[2].item_id == "RR000000005GB"
        assert "total_value" in bad[2].problem
        assert store.ead_for("RR473124829GB") is not None and store.ead_for("CP123456785FR") is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(st.one_of(json_values, st.builds(lambda k, v: {**record_dict(), k: v}, st.sampled_from(list(record_dict())),
                                        json_values)))
def test_parser_never_crashes_and_names_a_field(value: object) -> None:
    try:
        record = parse_record(value)
    except RecordInvalid as err:
        assert err.problems and all(field and message for field, message in err.problems)
        top = set(EadRecord.model_fields) | {"record"} | (set(value) if isinstance(value, dict) else set())
        assert all(field in top or field.split(".")[0].split("[")[0] in top for field, _ in err.problems)
    else:
        assert isinstance(record, EadRecord)


@given(st.binary(max_size=300))
def test_reading_arbitrary_bytes_never_raises(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("ead") / "x.jsonl"
    path.write_bytes(data)
    for outcome in read_jsonl(path):
        assert isinstance(outcome, (EadRecord, BadLine))


@pytest.mark.parametrize(("payload", "words"), [
    (b"\xc3\x28{}", "not UTF-8"), (b"{", "not JSON"), (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"null", "not a JSON object but null"), (b'{"item_id": 5}', "valid string"),
])
def test_a_payload_that_is_not_a_record_raises_only_record_invalid(payload: bytes, words: str) -> None:
    with pytest.raises(RecordInvalid) as caught:
        parse_json_record(payload)
    assert words in str(caught.value) and all(field for field, _ in caught.value.problems)


def test_a_json_payload_that_is_a_record_parses() -> None:
    assert parse_json_record(json.dumps(record_dict()).encode()).item_id == "RR473124829GB"
