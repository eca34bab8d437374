"""The EAD record: the CN 23 customs declaration of one postal item, as the station caches it.

This mirrors the CN 23 form (and the UPU ITMATT message that carries it between posts).

A value is *invalid*, and parsing raises ValueError naming each bad field, when it cannot be a record:
not an object, no item_id, a field of the wrong type (strict: "2" is not a quantity), a negative weight,
value or quantity, a non-finite number, a date without a time zone, a category not on the form, or a field
the form does not have. Everything else parses, even when fields customs needs are empty or missing:
such a record is *incomplete*, and station.ead.checks reports each such field as EAD_INCOMPLETE. Codes
(countries, currencies, HS) are plain strings here and are judged by the checks, so a record with "UK" as a
country is stored and reported, not thrown away.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

Category = Literal["gift", "documents", "commercial_sample", "returned_goods", "sale_of_goods", "other"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class Party(_Strict):
    """Sender or addressee, as in the CN 23 address blocks."""

    name: str = Field("", description="Name of the person or business.")
    address: str = Field("", description="Street address and town.")
    postcode: str = Field("", description="Postcode; empty where the country has none.")
    country: str = Field("", description="ISO 3166-1 alpha-2 country code.")
    contact: str = Field("", description="Telephone or e-mail.")


class ContentPiece(_Strict):
    """One line of the CN 23 contents table; weight and value are for the whole line, all units together."""

    description: str = Field("", description="Detailed description of the contents (not 'gift', 'parts').")
    quantity: int | None = Field(None, ge=1, description="Number of units.")
    net_weight_kg: float | None = Field(None, ge=0, description="Net weight of the line in kilograms.")
    value: float | None = Field(None, ge=0, description="Value of the line.")
    currency: str = Field("", description="ISO 4217 code of `value`; empty means the record's currency.")
    hs_code: str | None = Field(None, description="HS tariff number, 6 to 10 digits (dots and spaces ignored).")
    origin_country: str = Field("", description="ISO 3166-1 alpha-2 country of origin of the goods.")


class EadRecord(_Strict):
    """The customs declaration (CN 23) of one postal item."""

    item_id: str = Field(min_length=1, description="S10 identifier of the item, e.g. RR473124829GB.")
    version: int = Field(1, ge=1, description="Amendment version; a later version supersedes.")
    sender: Party = Field(Party(), description="Sender.")
    addressee: Party = Field(Party(), description="Addressee.")
    category: Category | None = Field(None, description="Category of item as ticked on the CN 23.")
    contents: Annotated[tuple[ContentPiece, ...], Field(strict=False)] = Field(
        (), description="Content pieces, one per line of the form.")
    total_gross_weight_kg: float | None = Field(None, ge=0, description="Total gross weight in kilograms.")
    total_value: float | None = Field(None, ge=0, description="Total value, in `currency`.")
    currency: str = Field("", description="ISO 4217 code of `total_value`.")
    declared_at: Annotated[AwareDatetime | None, Field(strict=False)] = Field(
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
    however malformed (bad UTF-8, not JSON, nested too deeply), raises RecordInvalid and nothing else."""
    return parse_record(_decode(text))


def _decode(text: str | bytes) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RecordInvalid((("record", f"not JSON: {err.msg} at column {err.colno}"),)) from err
    except UnicodeDecodeError as err:
        raise RecordInvalid((("record", f"not UTF-8: {err.reason} at byte {err.start}"),)) from err
    except RecursionError as err:
        raise RecordInvalid((("record", "not JSON: nested too deeply"),)) from err


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
    """Like `read_jsonl`, with each non-blank line's number (from 1)."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = _decode(line)
            except RecordInvalid as err:
                yield number, BadLine(number, None, str(err).removeprefix("record: "), err.problems)
                continue
            item_id = obj.get("item_id") if isinstance(obj, dict) else None
            try:
                yield number, parse_record(obj)
            except RecordInvalid as err:
                yield number, BadLine(number, item_id if isinstance(item_id, str) else None, str(err), err.problems)
