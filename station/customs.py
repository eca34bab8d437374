"""Customs instructions in, screening results out: what customs asks of an item, and the lane's answer.

Customs sends instructions on `customs/v1/{site}/instructions`, keyed by the item's S10 id: `hold`,
`do_not_load` and `screen` (with the screening methods it recommends) refer the item to the lane,
`release` ends a referral, `info` only informs. A referred item is INSPECT whatever the detector says:
on the belt (the lane core's `CustomsInstructed`), at its look-up, or after the gate as a revision of
its record (`station.lane.recorder`). While a referral is active the console refuses a CLEARED or
FALSE_ALARM verdict; a `release` lifts that block and nothing else: it never turns a decision back to
CLEAR by itself (an operator's verdict deals with the item, as with any INSPECT item).

The verdict on a referred item answers customs on `.../customs/screening_result`, shaped after the EU
ICS2 IE3R03 screening result: the referral it answers, the result, the methods used (the X-ray, and
what the operator recorded), who and when, and which scan.

Guarantees: `parse_instruction` returns an `Instruction` or raises `InstructionInvalid` naming the
field, for any bytes; an instruction id stored once is never stored again (`store_instruction`).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from station import contract
from station.contract import iso_time
from station.domain import Reason, ReasonCode
from station.ead.s10 import s10_problem
from station.store import Store

InstructionType = Literal["hold", "release", "do_not_load", "screen", "info"]
TYPES: tuple[str, ...] = get_args(InstructionType)
REFERRALS = {"hold": ReasonCode.CUSTOMS_HOLD, "do_not_load": ReasonCode.CUSTOMS_DO_NOT_LOAD,
             "screen": ReasonCode.CUSTOMS_SCREEN}  # the types that refer an item to the lane, and their reason
# ICS2 / ICAO screening method codes: the X-ray is the lane's own, always used
XRAY = "XRY"
METHODS = {
    "PHS": "physical search", "VCK": "visual check", "ETD": "explosive trace detection",
    "EDD": "explosive detection dog", "EDS": "explosive detection system", "CMD": "metal detection",
    "AOM": "other means",
}
SCHEMA_ID = "customs/v1/instruction"
RESULT_SCHEMA = "customs/v1/screening-result"
RESULTS = {"THREAT": "THREAT_FOUND", "CLEARED": "NO_THREAT_FOUND", "FALSE_ALARM": "NO_THREAT_FOUND",
           "REFERRED": "INCONCLUSIVE"}  # verdict -> IE3R03 result ("referred to customs": inconclusive here)
MAX_ID, MAX_TEXT, MAX_BY = 64, 500, 64
_FIELDS = {"instruction_id", "item_id", "type", "methods", "text", "issued_by", "issued_at"}
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


class InstructionInvalid(ValueError):
    """An instruction that cannot be used; the message names the field and what is wrong with it."""


@dataclass(frozen=True)
class Instruction:
    instruction_id: str
    item_id: str  # S10
    type: InstructionType
    methods: tuple[str, ...]  # recommended screening methods (screen); codes of METHODS or XRY
    text: str
    issued_by: str
    issued_at: float  # Unix seconds
    received_at: float | None = None  # when the station stored it (None: not stored yet)

    @property
    def refers(self) -> bool:
        """Whether it refers the item to the lane (hold, do_not_load, screen): INSPECT, no CLEAR verdict."""
        return self.type in REFERRALS

    def reason(self) -> Reason:
        """The reason a referred item carries: which instruction, who sent it, and what it says."""
        methods = f" by {', '.join(self.methods)}" if self.methods else ""
        said = f": {self.text}" if self.text else ""
        return Reason(REFERRALS[self.type], f"customs {self.type.replace('_', ' ')}{methods} "
                                            f"(instruction {self.instruction_id} from {self.issued_by}){said}")


# ---- inbound ----------------------------------------------------------------------------------


def parse_instruction(payload: bytes) -> Instruction:
    """An instruction from its MQTT payload (UTF-8 JSON). Raises InstructionInvalid naming the field:
    first the contract's schema (`customs/v1/instruction`), then what a schema cannot say (the S10
    check digit, a real date, printable text)."""
    try:
        data = contract.parse(SCHEMA_ID, payload)
    except contract.ContractError as err:
        raise InstructionInvalid(str(err)) from err
    return _instruction(data)


def _instruction(data: dict[str, Any]) -> Instruction:
    if unknown := sorted(set(data) - _FIELDS):
        raise InstructionInvalid(f"{unknown[0][:40]!r}: not a field of an instruction")
    kind = data.get("type")
    if kind not in TYPES:
        raise InstructionInvalid(f"type: {str(kind)[:40]!r} is not one of {', '.join(TYPES)}")
    item_id = _text(data, "item_id", 13)
    if problem := s10_problem(item_id):
        raise InstructionInvalid(f"item_id: {problem}")
    methods = _methods(data.get("methods", []))
    if kind == "screen" and not methods:
        raise InstructionInvalid("methods: a screen instruction names at least one screening method")
    return Instruction(instruction_id=_text(data, "instruction_id", MAX_ID), item_id=item_id, type=kind,
                       methods=methods, text=_text(data, "text", MAX_TEXT, required=False),
                       issued_by=_text(data, "issued_by", MAX_BY), issued_at=_time(data.get("issued_at")))


def _text(data: dict[str, Any], name: str, most: int, *, required: bool = True) -> str:
    value = data.get(name, None if required else "")
    if not isinstance(value, str):
        raise InstructionInvalid(f"{name}: expected a string, got {type(value).__name__}")
    value = value.strip()
    if required and not value:
        raise InstructionInvalid(f"{name}: must not be empty")
    if len(value) > most:
        raise InstructionInvalid(f"{name}: {len(value)} characters, at most {most}")
    if any(not c.isprintable() for c in value) or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise InstructionInvalid(f"{name}: holds a control character or a lone surrogate")
    return value


def _methods(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise InstructionInvalid(f"methods: expected a list of method codes, got {type(value).__name__}")
    known = (XRAY, *METHODS)
    for i, code in enumerate(value):
        if code not in known:
            raise InstructionInvalid(f"methods[{i}]: {str(code)[:20]!r} is not one of {', '.join(known)}")
        if code in value[:i]:
            raise InstructionInvalid(f"methods[{i}]: {code} named twice")
    return tuple(value)


def _time(value: object) -> float:
    if not isinstance(value, str) or not _ISO.fullmatch(value):
        raise InstructionInvalid(f"issued_at: {str(value)[:40]!r} is not an ISO 8601 time with its zone")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError as err:
        raise InstructionInvalid(f"issued_at: {value!r}: {err}") from err


# ---- the store ---------------------------------------------------------------------------------

_COLUMNS = "instruction_id, item_id, type, methods, text, issued_by, issued_at, received_at"


def store_instruction(store: Store, instruction: Instruction, received_at: float | None = None) -> bool:
    """Keep an instruction; True when it is new, False (and nothing changed) for an id seen before."""
    cur = store.db.execute(
        f"INSERT INTO customs_instructions ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)"
        " ON CONFLICT (instruction_id) DO NOTHING",
        (instruction.instruction_id, instruction.item_id, instruction.type, json.dumps(list(instruction.methods)),
         instruction.text, instruction.issued_by, instruction.issued_at,
         time.time() if received_at is None else received_at))
    return cur.rowcount > 0


def instructions_for(db: sqlite3.Connection, item_id: str) -> list[Instruction]:
    """Every instruction stored for an S10 id, in customs' order (issue time, then arrival)."""
    rows = db.execute(f"SELECT {_COLUMNS} FROM customs_instructions WHERE item_id = ? ORDER BY issued_at, id",
                      (item_id,)).fetchall()
    return [Instruction(r[0], r[1], r[2], tuple(json.loads(r[3])), r[4], r[5], r[6], r[7]) for r in rows]


def active(store: Store | sqlite3.Connection, item_id: str) -> Instruction | None:
    """The referral in force for an S10 id: the latest hold, do_not_load or screen that no release
    issued after it ended. `info` never refers an item."""
    db = store.db if isinstance(store, Store) else store
    current = None
    for instruction in instructions_for(db, item_id):
        if instruction.refers:
            current = instruction
        elif instruction.type == "release":
            current = None
    return current


def referred_sql(item_id: str) -> str:
    """`active`'s rule as an SQL condition on the S10 id `item_id` (an SQL expression), for a query over many
    items (retention keeps what customs holds): some hold, do_not_load or screen has no release issued after
    it, in customs' order (issue time, then arrival)."""
    kinds = ", ".join(f"'{kind}'" for kind in REFERRALS)
    return (f"EXISTS (SELECT 1 FROM customs_instructions AS r WHERE r.item_id = {item_id} AND r.type IN ({kinds})"
            " AND NOT EXISTS (SELECT 1 FROM customs_instructions AS x WHERE x.item_id = r.item_id"
            " AND x.type = 'release' AND (x.issued_at > r.issued_at OR (x.issued_at = r.issued_at AND x.id > r.id))))")


def referral(db: sqlite3.Connection, item_id: str) -> Instruction | None:
    """The referral a verdict on this item answers: the one in force, else the latest ever sent
    (a released item was still referred, and customs waits for its result)."""
    found = active(db, item_id)
    if found is not None:
        return found
    return next((i for i in reversed(instructions_for(db, item_id)) if i.refers), None)


# ---- outbound ----------------------------------------------------------------------------------


def screening_result(referral_: Instruction, item: sqlite3.Row, *, msg_id: str, site: str, lane: str,
                     verdict: str, methods: tuple[str, ...], person: str, at: float,
                     remarks: str = "") -> dict[str, object]:
    """The `customs/screening_result` message (after ICS2 IE3R03) answering `referral_` for `item`
    (its items-table row) with an operator's verdict."""
    return {
        "msg_id": msg_id,
        "schema": RESULT_SCHEMA,
        "site": site,
        "lane": lane,
        "referral_reference": referral_.instruction_id,
        "item_id": item["item_id"],
        "result": RESULTS[verdict],
        "methods": [XRAY, *(m for m in METHODS if m in methods)],
        "person": person,
        "time": iso_time(at),
        "scan_reference": {"scan_id": item["scan_id"], "image_sha256": item["image_sha256"],
                           "item_uid": item["uid"]},
        "remarks": remarks,
    }


def check_methods(methods: list[str]) -> tuple[str, ...]:
    """What an operator recorded besides the X-ray, as codes; ValueError naming an unknown one."""
    unknown = sorted(set(methods) - set(METHODS) - {XRAY})
    if unknown:
        raise ValueError(f"screening method {unknown[0][:20]!r}: one of {', '.join(METHODS)}")
    return tuple(m for m in METHODS if m in methods)
