"""EAD records: strict parsing whose errors name the field, and an import that never stops early."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from station.ead.importer import import_ead_file
from station.ead.record import BadLine, EadRecord, parse_record, read_jsonl
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
    bad = record_dict(category="bribe")
    bad["contents"][0]["currency"] = "euro"
    try:
        parse_record(bad)
    except ValueError as err:
        assert "category" in str(err) and "contents.0.currency" in str(err)
    else:
        raise AssertionError("a bad record was accepted")


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
    except ValueError as err:
        assert str(err) and ":" in str(err)
    else:
        assert isinstance(record, EadRecord)


@given(st.binary(max_size=300))
def test_reading_arbitrary_bytes_never_raises(tmp_path_factory: Any, data: bytes) -> None:
    path = tmp_path_factory.mktemp("ead") / "x.jsonl"
    path.write_bytes(data)
    for outcome in read_jsonl(path):
        assert isinstance(outcome, (EadRecord, BadLine))
