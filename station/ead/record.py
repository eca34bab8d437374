"""The EAD record: the CN 23 customs declaration of one postal item, as the station caches it.

This mirrors the CN 23 form (and the UPU ITMATT message that carries it between posts).

A value is *invalid*, and parsing raises ValueError naming each bad field, when it cannot be a record:
not an object, no item_id, a field of the wrong type (strict: "2" is not a quantity), a negative weight,
value or quantity, a non-finite number, a date without a time zone (or as a number), a category not on the
form, a field the form does not have, or a value out of bounds (below). Everything else parses, even when fields customs
needs are empty or missing: such a record is *incomplete*, and station.ead.checks reports each such field
as EAD_INCOMPLETE. Codes (countries, currencies, HS) are plain strings here and are judged by the checks,
so a record with "UK" as a country is stored and reported, not thrown away.

The bounds make every record storable and publishable: each string encodes as UTF-8 (json.loads lets a
lone surrogate such as "\\ud800" through, and SQLite's encoder then raises), each integer fits SQLite's
64 bits, and the sizes are bounded, so one forged message can neither crash the store nor fill it.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

MAX_PAYLOAD = 256 * 1024  # bytes of a message or of a line: far above any real declaration
TEXT_MAX = 500  # names, addresses, contacts, descriptions: a CN 23 box holds far less
CODE_MAX = 35  # ids and codes: the an..35 of the UN/EDIFACT messages that carry ITMATT
MAX_VERSION = 2**31 - 1  # amendments; station.store also refuses a jump far above the stored one
MAX_QUANTITY = 1_000_000
MAX_AMOUNT = 1e9  # kilograms or money: above any postal item, and a float keeps its cents up there
MAX_PIECES = 500


def _text(value: object) -> object:
    """Before pydantic's own check, whose error ("unable to parse raw data") would not say where."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise PydanticCustomError("text", "not valid text (a lone surrogate at character {at})",
                                      {"at": err.start}) from None
    return value


def _time(value: object) -> object:
    """A time comes as ISO 8601 text (or a datetime): pydantic would read a number as Unix seconds, or as
    milliseconds above 2e10, a guess at the sender's unit that the published schema does not allow."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise PydanticCustomError("time", "a time is ISO 8601 text with a time zone, not a number")
    return value


Text = Annotated[str, Field(max_length=TEXT_MAX), BeforeValidator(_text)]
Code = Annotated[str, Field(max_length=CODE_MAX), BeforeValidator(_text)]
Amount = Annotated[float, Field(ge=0, le=MAX_AMOUNT)]

Category = Literal["gift", "documents", "commercial_sample", "returned_goods", "sale_of_goods", "other"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Party(_Strict):
    """Sender or addressee, as in the CN 23 address blocks."""

    name: Text = Field("", description="Name of the person or business.")
    address: Text = Field("", description="Street address and town.")
    postcode: Code = Field("", description="Postcode; empty where the country has none.")
    country: Code = Field("", description="ISO 3166-1 alpha-2 country code.")
    contact: Text = Field("", description="Telephone or e-mail.")


class ContentPiece(_Strict):
    """One line of the CN 23 contents table; weight and value are for the whole line, all units together."""

    description: Text = Field("", description="Detailed description of the contents (not 'gift', 'parts').")
    quantity: int | None = Field(None, ge=1, le=MAX_QUANTITY, description="Number of units.")
    net_weight_kg: Amount | None = Field(None, description="Net weight of the line in kilograms.")
    value: Amount | None = Field(None, description="Value of the line.")
    currency: Code = Field("", description="ISO 4217 code of `value`; empty means the record's currency.")
    hs_code: Code | None = Field(None, description="HS tariff number, 6 to 10 digits (dots and spaces ignored).")
    origin_country: Code = Field("", description="ISO 3166-1 alpha-2 country of origin of the goods.")


class EadRecord(_Strict):
    """The customs declaration (CN 23) of one postal item."""

    item_id: Code = Field(min_length=1, description="S10 identifier of the item, e.g. RR473124829GB.")
    version: int = Field(1, ge=1, le=MAX_VERSION, description="Amendment version; a later version supersedes.")
    sender: Party = Field(Party(), description="Sender.")
    addressee: Party = Field(Party(), description="Addressee.")
    category: Category | None = Field(None, description="Category of item as ticked on the CN 23.")
    contents: Annotated[tuple[ContentPiece, ...], Field(strict=False)] = Field(
        (), max_length=MAX_PIECES, description="Content pieces, one per line of the form.")
    total_gross_weight_kg: Amount | None = Field(None, description="Total gross weight in kilograms.")
    total_value: Amount | None = Field(None, description="Total value, in `currency`.")
    currency: Code = Field("", description="ISO 4217 code of `total_value`.")
    declared_at: Annotated[AwareDatetime | None, Field(strict=False), BeforeValidator(_time)] = Field(
        None, description="When the declaration was made (ISO 8601 with a time zone).")

    def to_json(self) -> str:
        return self.model_dump_json()


@dataclass(frozen=True)
class BadLine:
    """A line of an EAD file that is not a record, and why: `problems` pairs each bad field with its error."""

    line: int
    item_id: str | None
    problem: str
    problems: tuple[tuple[str, str], ...] = ()


class RecordInvalid(ValueError):
    """A value that cannot be a record; `problems` pairs each bad field ("record": the value itself) with why."""

    def __init__(self, problems: tuple[tuple[str, str], ...]) -> None:
        super().__init__("; ".join(f"{field}: {message}" for field, message in problems))
        self.problems = problems


def parse_record(obj: object) -> EadRecord:
    """Validate one decoded JSON value; RecordInvalid (a ValueError) names each bad field."""
    try:
        return EadRecord.model_validate(obj)
    except ValidationError as err:
        if not isinstance(obj, dict):
            raise RecordInvalid((("record", f"not a JSON object but {_json_type(obj)}"),)) from err
        raise RecordInvalid(tuple((field_path(e["loc"]), e["msg"]) for e in err.errors())) from err


def parse_json_record(text: str | bytes) -> EadRecord:
    """Decode and validate one JSON document (an MQTT payload, a line). Anything that is not a record,
    however malformed (bad UTF-8, not JSON, a key given twice, nested too deeply, over MAX_PAYLOAD), raises
    RecordInvalid and nothing else."""
    return parse_record(_decode(text))


def _decode(text: str | bytes) -> object:
    if len(text) > MAX_PAYLOAD:  # before decoding: json.loads of a huge document is slow and memory-hungry
        raise RecordInvalid((("record", f"larger than {MAX_PAYLOAD} bytes"),))
    try:
        # UTF-8 only: given bytes, json.loads would also take UTF-16 and UTF-32 and skip a BOM
        return json.loads(text.decode("utf-8") if isinstance(text, bytes) else text, object_pairs_hook=_once)
    except json.JSONDecodeError as err:
        raise RecordInvalid((("record", f"not JSON: {err.msg} at column {err.colno}"),)) from err
    except UnicodeDecodeError as err:
        raise RecordInvalid((("record", f"not UTF-8: {err.reason} at byte {err.start}"),)) from err
    except RecursionError as err:
        raise RecordInvalid((("record", "not JSON: nested too deeply"),)) from err
    except ValueError as err:  # a key given twice, or an integer of more digits than Python converts
        raise RecordInvalid((("record", f"not JSON we take: {err}"),)) from err


def _once(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """Each key once: of a key given twice, which value was meant is not ours to guess (json.loads keeps
    the last). station.contract refuses the same for the other inbound messages; station/ead imports
    nothing of the station but the domain, hence its own."""
    data = dict(pairs)
    if len(data) < len(pairs):
        repeated, times = Counter(key for key, _ in pairs).most_common(1)[0]
        raise ValueError(f"the key {repeated[:40]!r} is given {times} times")
    return data


def _json_type(obj: object) -> str:
    kinds = ((bool, "a boolean"), (int | float, "a number"), (str, "a string"), (list, "an array"))
    return next((name for kind, name in kinds if isinstance(obj, kind)), "null" if obj is None else type(obj).__name__)


def field_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the checks name fields: ("contents", 1, "hs_code") -> contents[1].hs_code."""
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "record"


def read_jsonl(path: Path) -> Iterator[EadRecord | BadLine]:
    """Every line of a JSON-lines file, as a record or as the reason it is not one. Never stops early."""
    return (outcome for _, outcome in read_lines(path))


def read_lines(path: Path) -> Iterator[tuple[int, EadRecord | BadLine]]:
    """Like `read_jsonl`, with each non-blank line's number (from 1). A line ends at LF (CR LF too), as
    `grep -n` and editors count them; a line that is not UTF-8 is a bad line, as an MQTT payload would be."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = _decode(line)
            except RecordInvalid as err:
                yield number, BadLine(number, None, str(err).removeprefix("record: "), err.problems)
                continue
            try:
                yield number, parse_record(obj)
            except RecordInvalid as err:
                yield number, BadLine(number, _printable_id(obj), str(err), err.problems)


def _printable_id(obj: object) -> str | None:
    """The item id of a value that is not a record, when it is one a report can print."""
    item_id = obj.get("item_id") if isinstance(obj, dict) else None
    printable = isinstance(item_id, str) and len(item_id) <= CODE_MAX and item_id.isprintable()
    return item_id if printable else None
