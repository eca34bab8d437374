"""The EAD record: the CN 23 customs declaration of one postal item, as the station caches it.

This mirrors the CN 23 form (and the UPU ITMATT message that carries it between posts). Parsing is
strict: an unknown or missing field is an error that names the field, so bad data is seen, not guessed at.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Category = Literal["gift", "documents", "commercial_sample", "returned_goods", "sale_of_goods", "other"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Party(_Strict):
    name: str
    address: str
    postcode: str = ""
    country: str = Field(pattern=r"^[A-Z]{2}$")
    contact: str = ""


class ContentPiece(_Strict):
    description: str
    quantity: int = Field(ge=1)
    net_weight_kg: float = Field(ge=0)
    value: float = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    hs_code: str | None = None
    origin_country: str | None = Field(None, pattern=r"^[A-Z]{2}$")


class EadRecord(_Strict):
    item_id: str
    version: int = Field(1, ge=1, description="Amendment version; a later version supersedes.")
    sender: Party
    addressee: Party
    category: Category
    contents: tuple[ContentPiece, ...] = Field(min_length=1)
    total_gross_weight_kg: float = Field(ge=0)
    total_value: float = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    declared_at: datetime

    def to_json(self) -> str:
        return self.model_dump_json()


@dataclass(frozen=True)
class BadLine:
    """A line of an EAD file that is not a record, and why."""

    line: int
    item_id: str | None
    problem: str


def parse_record(obj: object) -> EadRecord:
    """Validate one decoded JSON value; ValueError names each bad field."""
    try:
        return EadRecord.model_validate(obj)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in err.errors())
        raise ValueError(problems) from err


def read_jsonl(path: Path) -> Iterator[EadRecord | BadLine]:
    """Every line of a JSON-lines file, as a record or as the reason it is not one. Never stops early."""
    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield BadLine(number, None, f"not JSON: {err.msg} at column {err.colno}")
                continue
            item_id = obj.get("item_id") if isinstance(obj, dict) else None
            try:
                yield parse_record(obj)
            except ValueError as err:
                yield BadLine(number, item_id if isinstance(item_id, str) else None, str(err))
