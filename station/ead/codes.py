"""Code tables the EAD checks rely on, loaded once from station/ead/data/ (each file names its source).

ISO 3166-1 alpha-2 countries, ISO 4217 currencies with their minor unit, the UPU S10 service indicator
ranges, rough euro rates for plausibility bounds, and what declared contents account for a detected object.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Literal, cast, get_args

ServiceStatus = Literal["assigned", "bilateral", "unassigned", "reserved"]


def _rows(name: str) -> Iterator[dict[str, str]]:
    """The rows of a data file below its `#` header comment, as dicts keyed by its column line."""
    text = resources.files("station.ead").joinpath("data", name).read_text(encoding="utf-8")
    yield from csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#"))


def data_lines(name: str) -> tuple[str, ...]:
    """The non-blank, non-comment lines of a plain-text data file, stripped."""
    text = resources.files("station.ead").joinpath("data", name).read_text(encoding="utf-8")
    return tuple(s for line in text.splitlines() if (s := line.strip()) and not s.startswith("#"))


@cache
def countries() -> dict[str, str]:
    """ISO 3166-1 alpha-2 code -> English short name."""
    return {row["alpha2"]: row["name"] for row in _rows("iso3166-1.csv")}


@cache
def currencies() -> dict[str, int | None]:
    """ISO 4217 alphabetic code -> minor unit (None for funds, metals and test codes, which are not money)."""
    return {row["code"]: int(row["minor_unit"]) if row["minor_unit"] else None for row in _rows("iso4217.csv")}


@cache
def service_indicators() -> dict[str, ServiceStatus]:
    """First letter of an S10 service indicator -> its status in the UPU S10 ranges."""
    table = {row["letter"]: row["status"] for row in _rows("s10_service_indicators.csv")}
    if unknown := set(table.values()) - set(get_args(ServiceStatus)):
        raise ValueError(f"s10_service_indicators.csv: unknown status {sorted(unknown)}")
    return cast(dict[str, ServiceStatus], table)


@cache
def eur_rates() -> dict[str, float]:
    """Currency -> approximate euro per unit; for plausibility bounds only."""
    return {row["currency"]: float(row["eur"]) for row in _rows("approx_eur_rates.csv")}


@dataclass(frozen=True)
class Accounts:
    """What in a declaration accounts for one detector class: HS code prefixes and description keywords."""

    hs_prefixes: tuple[str, ...]
    keywords: tuple[str, ...]


@cache
def threat_accounts() -> dict[str, Accounts]:
    """Detector class -> the HS prefixes and description keywords that account for it."""
    hs: dict[str, list[str]] = {}
    words: dict[str, list[str]] = {}
    for row in _rows("threat_accounts.csv"):
        if row["kind"] not in ("hs", "keyword"):
            raise ValueError(f"threat_accounts.csv: unknown kind {row['kind']!r}")
        target = hs if row["kind"] == "hs" else words
        target.setdefault(row["class"], []).append(row["value"].lower())
    return {label: Accounts(tuple(hs.get(label, ())), tuple(words.get(label, ())))
            for label in hs.keys() | words.keys()}


# ---- the WCO data-quality dimensions of each finding ---------------------------------------------

Dimension = Literal["completeness", "accuracy", "consistency", "timeliness"]
DIMENSIONS: tuple[Dimension, ...] = get_args(Dimension)
LATE = "EAD_LATE"  # not a finding of the record: it reached the station after its item passed the gate
# Each finding code of station/ead/checks.py (and LATE) in the one WCO data-quality dimension it
# measures, for the feedback to the post (station/ead_quality.py; tests check that every code has one).
FINDING_DIMENSIONS: dict[str, Dimension] = {
    "EAD_INCOMPLETE": "completeness",  # a field customs needs is empty (or an unknown code, as useless)
    "HS_CODE_MISSING": "completeness",
    "S10_INVALID": "accuracy",  # the item id is not a valid S10 id
    "VAGUE_DESCRIPTION": "accuracy",  # the goods are not described precisely enough to be known
    "HS_CODE_INVALID": "accuracy",
    "VALUE_IMPLAUSIBLE": "accuracy",
    "WEIGHT_MISMATCH": "accuracy",  # the declaration against the world: the scale
    "CONTENT_MISMATCH": "accuracy",  # ... and the X-ray
    "TOTALS_INCONSISTENT": "consistency",  # the declaration against itself
    "CATEGORY_INCONSISTENT": "consistency",
    LATE: "timeliness",
}
