"""Customs instructions: the payload on `customs/v1/{site}/instructions` (`LaneRuntime.customs_message` calls
`station.customs.parse_instruction`, then `store_instruction`), and the inbound contract it stands on
(`station.contract.parse`, which commands and declarations go through too).

The contract: `parse_instruction` gives an Instruction or InstructionInvalid naming the field, for any bytes,
and an Instruction is what the payload says (the S10 id, the time to the second, the methods) and can be
stored and read back; `contract.parse` gives the payload's object, valid against its schema, or
ContractError whose every problem names its JSON path.
"""

from __future__ import annotations

import calendar
import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from station import contract, customs
from station.customs import Instruction, InstructionInvalid, instructions_for, parse_instruction, store_instruction
from station.ead.s10 import make_s10
from station.store import Store
from tests.fuzz.harness import budget, fuzzes, mutated
from tests.station.ead.test_s10 import country_codes, serials, services
from tests.station.test_customs import json_values, near_valid
from tests.station.test_customs import payload as good_payload

INPUT = "customs instructions"


@st.composite
def times(draw: st.DrawFn) -> tuple[str, float]:
    """An RFC 3339 time as customs writes one, and its Unix seconds worked out here."""
    y, mo = draw(st.integers(1, 9999)), draw(st.integers(1, 12))
    d = draw(st.integers(1, calendar.monthrange(y, mo)[1]))
    h, mi, s = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
    frac = draw(st.sampled_from(["", ".5", ".25", ".000001", ".123456"]))
    off = draw(st.integers(-23 * 60 - 59, 23 * 60 + 59))
    sign = "+" if off >= 0 else "-"
    zone = "Z" if off == 0 and draw(st.booleans()) else f"{sign}{abs(off) // 60:02d}:{abs(off) % 60:02d}"
    text = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{zone}"
    return text, calendar.timegm((y, mo, d, h, mi, s)) + float(frac or 0) - off * 60


@st.composite
def valid(draw: st.DrawFn) -> tuple[dict[str, Any], float]:
    kind = draw(st.sampled_from(customs.TYPES))
    methods = draw(st.lists(st.sampled_from([customs.XRAY, *customs.METHODS]), unique=True,
                            min_size=1 if kind == "screen" else 0, max_size=4))
    at, seconds = draw(times())
    # str.isprintable() is the rule: of the separators only the ASCII space is printable
    printable = st.text(st.characters(categories=["L", "N", "P", "S"], include_characters=" "), max_size=20)
    fields: dict[str, Any] = {"instruction_id": draw(printable.filter(str.strip)), "item_id": draw(st.builds(
        make_s10, services, serials, country_codes)), "type": kind, "issued_by": draw(printable.filter(str.strip)),
        "issued_at": at}
    if draw(st.booleans()) or methods:
        fields["methods"] = methods
    if draw(st.booleans()):
        fields["text"] = draw(printable)
    return fields, seconds


payloads = st.one_of(
    st.binary(max_size=300),
    mutated(good_payload(), most=6),
    mutated(good_payload(type="screen", methods=["ETD", "XRY"]), most=6),
    near_valid.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda at: good_payload(issued_at=at), st.sampled_from([
        "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-23:59", "2026-12-31T23:59:60Z", "2026-02-29T10:00:00Z",
        "2026-03-01T10:00:00.1234567Z", "2026-03-01t10:00:00z", "٢٠٢٦-03-01T10:00:00Z", "2026-03-01T10:00:00+24:00"])),
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with Store(tmp_path_factory.mktemp("customs") / "station.db") as opened:
        yield opened


def check_stored(store: Store, got: Instruction) -> None:
    new = store_instruction(store, got, received_at=1.0)
    if new:  # else an instruction of that id was stored before (for this item or another): it stays as it was
        again = [i for i in instructions_for(store.db, got.item_id) if i.instruction_id == got.instruction_id]
        assert again == [Instruction(**{**got.__dict__, "received_at": 1.0})]
    else:
        assert store.db.execute("SELECT count(*) FROM customs_instructions WHERE instruction_id = ?",
                                (got.instruction_id,)).fetchone()[0] == 1
    if got.refers:
        got.reason()  # the reason a referred item carries is always words


@budget(300)
@given(payloads)
@example(b'{"instruction_id": "i", "instruction_id": "j"}')
@example(b"[" * 100_000)
@fuzzes(INPUT)
def test_any_payload_is_an_instruction_or_instruction_invalid_and_a_stored_one_reads_back(
        store: Store, payload: bytes) -> None:
    try:
        got = parse_instruction(payload)
    except InstructionInvalid as err:
        assert str(err) and str(err).isprintable()
        return
    assert got.type in customs.TYPES and got.instruction_id and got.issued_by
    assert not (got.type == "screen" and not got.methods)
    check_stored(store, got)


@budget(200)
@given(valid())
@fuzzes(INPUT)
def test_a_valid_instruction_says_exactly_what_customs_sent(store: Store, case: tuple[dict[str, Any], float]) -> None:
    fields, seconds = case
    got = parse_instruction(json.dumps(fields).encode())
    assert got.issued_at == pytest.approx(seconds, abs=1e-6)
    assert (got.instruction_id, got.item_id, got.type, got.issued_by) == (
        fields["instruction_id"].strip(), fields["item_id"], fields["type"], fields["issued_by"].strip())
    assert got.methods == tuple(fields.get("methods", ())) and got.text == fields.get("text", "").strip()
    check_stored(store, got)


# ---- the inbound contract ----------------------------------------------------------------------------

@budget(200)
@given(st.sampled_from(sorted(contract.INBOUND)), payloads | st.builds(
    lambda v: json.dumps(v).encode(), st.dictionaries(st.sampled_from(["cmd_id", "issued_by", "expires_at", "args",
                                                                        "reply_to", "item_id", "x"]), json_values)))
@example("screening/v1/command", b'{"cmd_id": "c", "issued_by": "o", "expires_at": NaN}')
@example("ead/v1/record", b'{"item_id": ' + b"1" * 5000 + b"}")
@example("customs/v1/instruction", b"{" * 100_000)
@example("customs/v1/instruction", b" " * (contract.MAX_PAYLOAD + 1))
@fuzzes(INPUT)
def test_the_contract_gives_a_valid_object_or_names_each_problem_by_its_path(schema_id: str, payload: bytes) -> None:
    try:
        data = contract.parse(schema_id, payload)
    except contract.ContractError as err:
        assert err.problems and str(err) == "; ".join(err.problems)
        assert len(err.problems) <= contract.MAX_PROBLEMS + 1
        assert all(p.startswith("$") or p.startswith("... and ") for p in err.problems), err.problems
        return
    assert isinstance(data, dict) and contract.problems(schema_id, data) == []
    assert data == json.loads(payload.decode("utf-8"))
