"""Every value that parses into a record can be stored and published; a forged version locks nothing out.

The audit that found these: a version of 2**63 ended the daemon (SQLite's OverflowError), and a lone
surrogate in a nested string (json.loads accepts it, SQLite's UTF-8 encode does not) failed the store.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station.ead.record import MAX_PAYLOAD, EadRecord, RecordInvalid, parse_json_record, parse_record
from station.store import MAX_VERSION_STEP, Store
from tests.station.ead.test_ead_record import record_dict

AUDIT_MESSAGE = '{"item_id":"RR473124829GB","version":9223372036854775808}'

texts = st.one_of(
    st.text(max_size=20),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),  # lone surrogates only
    st.builds(lambda a, s, b: a + s + b, st.text(max_size=8), st.characters(categories=["Cs"]), st.text(max_size=8)),
    st.builds(lambda c, n: c * n, st.characters(), st.integers(0, 5000)),  # very long
)
integers = st.integers(-(2**80), 2**80) | st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, -(2**63) - 1])
floats = st.floats() | st.sampled_from([1e9, 1e9 + 1, 1e308, 5e-324, -0.0])  # inf and nan included
leaves = texts | integers | floats | st.none() | st.booleans()
nested = st.recursive(leaves, lambda kids: st.lists(kids, max_size=3) | st.dictionaries(texts, kids, max_size=3),
                      max_leaves=6)


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for key, v in value.items() for p in leaf_paths(v, (*path, key))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in leaf_paths(v, (*path, i))]
    return [path]


@st.composite
def fuzzed_json(draw: st.DrawFn) -> str:
    """A valid-looking record (up to three content lines) with some leaves replaced by fuzzed values, mostly
    of the leaf's own type (so that many still parse), else by anything, nested."""
    raw = record_dict()
    raw["contents"] = raw["contents"] * draw(st.integers(0, 3))
    raw = copy.deepcopy(raw)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(leaf_paths(raw)))
        if not path:
            break
        parent = raw
        for key in path[:-1]:
            parent = parent[key]
        like = {str: texts, int: integers, float: floats | integers}.get(type(parent[path[-1]]), leaves)
        parent[path[-1]] = draw(st.sampled_from([like, like, like, nested]).flatmap(lambda kind: kind))
    text = json.dumps(raw)  # ensure_ascii: a lone surrogate becomes "\ud800", inf and nan Infinity and NaN
    return text.replace("Infinity", "1e999") if draw(st.booleans()) else text  # inf also as an overflow


def assert_names_fields(err: RecordInvalid) -> None:
    assert err.problems
    for field, message in err.problems:
        assert field and message
        assert field == "record" or field.split(".")[0].split("[")[0] in EadRecord.model_fields
        (field + message).encode("utf-8")  # an alarm or a report can always store and print it


@settings(max_examples=300)
@given(fuzzed_json())
def test_whatever_parses_is_stored_read_back_equal_and_published(tmp_path_factory: Any, text: str) -> None:
    try:
        record = parse_json_record(text)
    except RecordInvalid as err:
        assert_names_fields(err)
        return
    published = record.to_json()
    published.encode("utf-8")
    assert parse_json_record(published) == record
    with Store(tmp_path_factory.mktemp("bounds") / "s.db") as store:
        if record.version > MAX_VERSION_STEP:  # a first record may not start that high
            with pytest.raises(RecordInvalid):
                store.upsert_ead(record, "test")
            return
        assert store.upsert_ead(record, "test")
        assert store.ead_for(record.item_id) == record


def test_the_audits_message_is_invalid_for_its_version() -> None:
    with pytest.raises(RecordInvalid) as caught:
        parse_json_record(AUDIT_MESSAGE)
    assert [field for field, _ in caught.value.problems] == ["version"]


def test_a_lone_surrogate_is_named_with_its_place() -> None:
    raw = record_dict()
    raw["contents"] = raw["contents"] * 3
    raw["contents"][2] = {**raw["contents"][2], "description": "cotto\ud800n"}
    with pytest.raises(RecordInvalid) as caught:
        parse_json_record(json.dumps(raw))
    assert str(caught.value) == "contents[2].description: not valid text (a lone surrogate at character 5)"


@pytest.mark.parametrize(("changes", "field"), [
    ({"version": 2**31}, "version"),
    ({"total_value": 1e9 + 1}, "total_value"),
    ({"total_gross_weight_kg": 2**80}, "total_gross_weight_kg"),
    ({"currency": "E" * 36}, "currency"),
    ({"item_id": "R" * 36}, "item_id"),
    ({"sender": {"name": "n" * 501}}, "sender.name"),
    ({"contents": [{"quantity": 10**6 + 1}]}, "contents[0].quantity"),
    ({"contents": [{"description": "x"}] * 501}, "contents"),
])
def test_bounds(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(RecordInvalid) as caught:
        parse_record(record_dict(**changes))
    assert [f for f, _ in caught.value.problems] == [field]


def test_the_largest_values_in_bounds_are_a_record() -> None:
    record = parse_record(record_dict(version=2**31 - 1, total_value=1e9, sender={"name": "n" * 500},
                                      contents=[{"quantity": 10**6, "description": "d" * 500}] * 500))
    assert record.version == 2**31 - 1 and len(record.contents) == 500


def test_a_payload_over_the_limit_is_refused_before_it_is_decoded() -> None:
    padded = json.dumps(record_dict()).encode()
    padded += b" " * (MAX_PAYLOAD - len(padded))
    assert parse_json_record(padded).item_id == "RR473124829GB"
    with pytest.raises(RecordInvalid) as caught:
        parse_json_record(padded + b" ")
    assert caught.value.problems == (("record", f"larger than {MAX_PAYLOAD} bytes"),)


def test_a_version_may_rise_by_at_most_the_step(tmp_path: Path) -> None:
    def version(n: int) -> EadRecord:
        return parse_record(record_dict(version=n, total_value=float(n)))

    with Store(tmp_path / "s.db") as store:
        with pytest.raises(RecordInvalid) as caught:
            store.upsert_ead(version(MAX_VERSION_STEP + 1), "test")
        assert [f for f, _ in caught.value.problems] == ["version"] and store.ead_for("RR473124829GB") is None
        assert store.upsert_ead(version(3), "test")
        with pytest.raises(RecordInvalid) as caught:
            store.upsert_ead(version(5_000_000), "forged")
        assert caught.value.problems == (
            ("version", "jumps from 3 to 5000000: more than 1000 above the stored version"),)
        assert store.ead_for("RR473124829GB") == version(3)
        assert store.upsert_ead(version(4), "test")  # the forged version locked nothing out
        assert store.upsert_ead(version(4 + MAX_VERSION_STEP), "test")
        assert not store.upsert_ead(version(5), "test")  # an older amendment still never overwrites
        assert store.ead_for("RR473124829GB") == version(4 + MAX_VERSION_STEP)
