"""Checking and loading EAD files (`station ead check|import`, and the simulator's feed file).

Each line of a JSON-lines file gets a `LineReport`: a line that is a record is *valid* and carries its
quality findings (station.ead.checks); a line that is not (not JSON, not an object, wrong types) is
invalid and carries one EAD_INVALID reason per bad field. No line ever stops the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from station.ead.checks import check_record
from station.ead.record import BadLine, EadRecord, read_jsonl, read_lines
from station.lane.messages import Reason
from station.store import Store


@dataclass(frozen=True)
class LineReport:
    """One line of an EAD file: its record (None when invalid), and every reason found on it.

    `stored` is only set by an import: True when the record was stored, False when the store already
    held the same or a later version of it (an older amendment never overwrites a newer one).
    """

    line: int
    item_id: str | None
    record: EadRecord | None
    reasons: tuple[Reason, ...]
    stored: bool | None = None

    @property
    def valid(self) -> bool:
        return self.record is not None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"line": self.line, "item_id": self.item_id, "valid": self.valid,
                                  "reasons": [reason_dict(r) for r in self.reasons]}
        if self.stored is not None:
            out["stored"] = self.stored
        return out


def reason_dict(reason: Reason) -> dict[str, str | None]:
    return {"code": reason.code, "field": reason.field, "message": reason.detail}


def check_file(path: Path) -> Iterator[LineReport]:
    """Every non-blank line of `path`, parsed and checked; nothing is stored."""
    for number, outcome in read_lines(path):
        if isinstance(outcome, BadLine):
            reasons = tuple(Reason("EAD_INVALID", message, field) for field, message in outcome.problems)
            yield LineReport(number, outcome.item_id, None, reasons)
        else:
            yield LineReport(number, outcome.item_id, outcome, check_record(outcome))


def import_file(store: Store, path: Path, source: str) -> list[LineReport]:
    """Check every line and store the valid records in one transaction; report each line as `check_file` does."""
    reports = list(check_file(path))
    with store.transaction():
        return [r if r.record is None else LineReport(r.line, r.item_id, r.record, r.reasons,
                                                      store.upsert_ead(r.record, source)) for r in reports]


def import_ead_file(store: Store, path: Path, source: str) -> list[EadRecord | BadLine]:
    """Store every valid record of a JSON-lines file (one transaction); return each line's outcome.

    A bad line is reported and skipped; it never stops the import or touches what is already stored.
    """
    outcomes = list(read_jsonl(path))
    with store.transaction():
        for outcome in outcomes:
            if isinstance(outcome, EadRecord):
                store.upsert_ead(outcome, source)
    return outcomes
