"""EAD records: a declaration from central on `ead/v1/{site}/records` (`LaneRuntime.ead_message` calls
`parse_json_record` on the payload, then `Store.upsert_ead`), and a file of them (`station ead import`:
`station.intake.import_file`, one record per line).

The contract (station/ead/record.py, station/intake.py): any bytes give a record or RecordInvalid naming each
bad field, nothing else; what parses is exactly what the JSON says (UTF-8, no key given twice), and can be
stored; a payload the published schema (`ead/v1/record`) accepts is a record. An import reports every
non-blank line under its number (as `grep -n` counts lines), never stops early, stores the good lines and
nothing of the bad ones, and agrees line by line with the MQTT path.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from station import contract
from station.ead.record import EadRecord, RecordInvalid, parse_json_record, parse_record
from station.intake import import_file
from station.store import MAX_VERSION_STEP, Store
from tests.fuzz.harness import budget, fuzzes, mutated
from tests.station.ead.test_ead_bounds import fuzzed_json
from tests.station.ead.test_ead_record import record_dict

INPUT = "EAD records"

GOOD = json.dumps(record_dict()).encode()


def repeated_key(raw: dict[str, Any], key: str, value: Any) -> bytes:
    """The record with `key` given a second time, after the first."""
    return json.dumps(raw)[:-1].encode() + b", " + json.dumps(key).encode() + b": " + json.dumps(value).encode() + b"}"


payloads = st.one_of(
    st.binary(max_size=400),
    mutated(GOOD, most=6),
    fuzzed_json().map(str.encode),
    st.builds(repeated_key, st.just(record_dict()), st.sampled_from(sorted(record_dict())),
              st.sampled_from(["RR000000005GB", 7, None, "", [], {}])),
    st.builds(lambda key, text: GOOD[:-1] + b', "' + key + b'": ' + text + b"}",
              st.sampled_from([b"total_value", b"version", b"colour"]),
              st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"9" * 5000, b"[" * 5000, b"0x10"])),
    st.builds(lambda enc: json.dumps(record_dict()).encode(enc), st.sampled_from(["utf-16", "utf-32", "utf-8-sig"])),
)


def strict_json(payload: bytes) -> object:
    """The payload as JSON reads it when nothing is guessed: UTF-8, each key once."""
    def once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        assert len({k for k, _ in pairs}) == len(pairs), f"a key is given twice: {[k for k, _ in pairs]}"
        return dict(pairs)
    return json.loads(payload.decode("utf-8"), object_pairs_hook=once)


def assert_names_fields(err: RecordInvalid, payload: bytes) -> None:
    """Each problem names a field of the record (or one the payload has that a record has not), or the
    record itself, in words an alarm can store."""
    assert err.problems
    try:
        raw = strict_json(payload)
        given = set(raw) if isinstance(raw, dict) else set()
    except (ValueError, TypeError, AssertionError, RecursionError):
        given = set()
    for field, message in err.problems:
        assert field and message
        assert field == "record" or field.split(".")[0].split("[")[0] in set(EadRecord.model_fields) | given
        (field + message).encode("utf-8")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with Store(tmp_path_factory.mktemp("ead") / "station.db") as opened:
        yield opened


@budget(400)
@given(payloads)
@example(b'{"item_id": "RR473124829GB", "version": ' + b"1" * 5000 + b"}")  # finding 2
@example(b'{"item_id": "RR473124829GB", "item_id": "CP123456785FR"}')  # finding 3
@example('{"item_id": "RR473124829GB"}'.encode("utf-16"))  # finding 4
@example(b'\xef\xbb\xbf{"item_id": "RR473124829GB"}')
@example(b'{"item_id": "RR473124829GB", "declared_at": 1700000000000}')  # finding 7
@fuzzes(INPUT)
def test_an_mqtt_payload_is_a_record_or_record_invalid_and_a_record_is_what_it_says(store: Store,
                                                                                    payload: bytes) -> None:
    try:
        record = parse_json_record(payload)
    except RecordInvalid as err:
        assert_names_fields(err, payload)
        if all("lone surrogate" in message for _, message in err.problems):
            return  # text a store cannot encode: a rule the JSON Schema has no words for
        try:
            contract.parse("ead/v1/record", payload)
        except contract.ContractError:
            return
        raise AssertionError(f"the schema takes what the parser refuses: {err}") from None
    assert parse_record(strict_json(payload)) == record  # no guessed encoding, no key that said two things
    raw = strict_json(payload)
    assert isinstance(raw, dict) and not isinstance(raw.get("declared_at"), int | float)  # no guessed unit
    assert parse_json_record(record.to_json()) == record
    try:
        stored = store.upsert_ead(record, "fuzz")
    except RecordInvalid as err:  # a version too far above the stored one
        assert [field for field, _ in err.problems] == ["version"]
        return
    if stored:
        assert store.ead_for(record.item_id) == record


# ---- the file intake -------------------------------------------------------------------------------------

ids = st.sampled_from(["RR473124829GB", "CP123456785FR", "EE000000005GB"])
good_lines = st.builds(lambda item_id, version, value: json.dumps(record_dict(item_id=item_id, version=version,
                                                                              total_value=value)).encode(),
                       ids, st.integers(1, 3) | st.sampled_from([MAX_VERSION_STEP, MAX_VERSION_STEP + 1, 2**31 - 1]),
                       st.floats(0, 100))
lines = st.one_of(good_lines, good_lines.flatmap(lambda line: mutated(line, most=3)),
                  st.binary(max_size=60), st.sampled_from([b"", b"   ", b"\r", b"{", b"[]", b"null", b"\x00", b"\x0b",
                                                          b"\xff\xfe", b'"\xc3\x28"']))


def expected_store(outcomes: list[EadRecord | RecordInvalid]) -> tuple[list[bool | None], dict[str, EadRecord]]:
    """What an import must do with the lines' records, in order: stored (True), already held at the same or a
    later version (False), or refused as a version jump (None), and what the store then holds."""
    held: dict[str, EadRecord] = {}
    stored: list[bool | None] = []
    for outcome in outcomes:
        if isinstance(outcome, RecordInvalid):
            stored.append(None)
            continue
        before = held[outcome.item_id].version if outcome.item_id in held else 0
        if outcome.version - before > MAX_VERSION_STEP:
            stored.append(None)
        elif outcome.version > before:
            held[outcome.item_id] = outcome
            stored.append(True)
        else:
            stored.append(False)
    return stored, held


@budget(150)
@given(st.lists(lines, max_size=12), st.sampled_from([b"\n", b"\r\n"]), st.booleans())
@example([b'{"item_id": "RR473124829GB"}\r{"item_id": "CP123456785FR"}', GOOD], b"\n", True)  # finding 5
@example([b'{"item_id": "RR473124829GB", "sender": {"name": "L. \xff"}}'], b"\n", True)  # finding 6
@example([b'{"item_id": "RR473124829GB", "version": ' + b"1" * 5000 + b"}", GOOD], b"\n", True)  # finding 2
@fuzzes(INPUT)
def test_an_import_reports_each_line_by_its_number_and_stores_exactly_the_good_ones(
        tmp_path_factory: pytest.TempPathFactory, chosen: list[bytes], end: bytes, last_end: bool) -> None:
    folder = tmp_path_factory.mktemp("intake")
    data = end.join(chosen) + (end if last_end else b"")
    (folder / "ead.jsonl").write_bytes(data)
    numbered = [(n, line) for n, line in enumerate(data.split(b"\n"), start=1) if line.strip()]
    outcomes: list[EadRecord | RecordInvalid] = []
    for _, line in numbered:  # each line as the MQTT path takes the same bytes
        try:
            outcomes.append(parse_json_record(line))
        except RecordInvalid as err:
            outcomes.append(err)
    stored, held = expected_store(outcomes)
    with Store(folder / "station.db") as store:
        reports = import_file(store, folder / "ead.jsonl", "fuzz")
        assert [r.line for r in reports] == [n for n, _ in numbered]
        for report, outcome, kept in zip(reports, outcomes, stored, strict=True):
            if isinstance(outcome, EadRecord) and kept is not None:
                assert report.valid and report.record == outcome and report.stored is kept
            else:
                assert not report.valid and report.reasons, report
                assert all(r.code == "EAD_INVALID" and r.field for r in report.reasons)
                assert report.item_id is None or report.item_id.isprintable()
        assert {item_id: store.ead_for(item_id) for item_id in held} == held
        assert store.db.execute("SELECT count(*) FROM ead_records").fetchone()[0] == len(held)
