"""Checking and loading EAD files (`station ead check|import`, and the simulator's feed file).

Each line of a JSON-lines file gets a `LineReport`: a line that is a record is *valid* and carries its
quality findings (station.ead.checks); a line that is not (not JSON, not an object, wrong types), or
whose record the store refuses, is invalid and carries one EAD_INVALID reason per bad field. No line ever
stops the run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from station.domain import Reason
from station.ead.checks import check_record
from station.ead.record import BadLine, EadRecord, RecordInvalid, read_lines
from station.store import Store

CHUNK = 500  # lines to a transaction: a daemon writing to the same database waits for one chunk at most


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
    return (_report(number, outcome) for number, outcome in read_lines(path))


def import_file(store: Store, path: Path, source: str) -> list[LineReport]:
    """Check every line and store the valid records; report each line as `check_file` does.

    A record the store refuses (a version jump, a database error) is reported as an invalid line.
    """
    return [_report(number, outcome, stored) for number, outcome, stored in _import(store, path, source)]


def import_ead_file(store: Store, path: Path, source: str) -> list[EadRecord | BadLine]:
    """Store every valid record of a JSON-lines file; return each line's outcome.

    A bad line, or a record the store refuses, is reported and skipped; it never stops the import or
    touches what is already stored.
    """
    return [outcome for _, outcome, _ in _import(store, path, source)]


def _report(number: int, outcome: EadRecord | BadLine, stored: bool | None = None) -> LineReport:
    if isinstance(outcome, BadLine):
        reasons = tuple(Reason("EAD_INVALID", message, field) for field, message in outcome.problems)
        return LineReport(number, outcome.item_id, None, reasons)
    return LineReport(number, outcome.item_id, outcome, check_record(outcome), stored)


def _import(store: Store, path: Path, source: str) -> Iterator[tuple[int, EadRecord | BadLine, bool | None]]:
    """Each line's outcome and whether it was stored, CHUNK lines to a transaction (parsed outside it)."""
    lines = read_lines(path)
    while chunk := list(islice(lines, CHUNK)):
        with store.transaction():
            done = [(number, *_upsert(store, number, outcome, source)) for number, outcome in chunk]
        yield from done


def _upsert(store: Store, number: int, outcome: EadRecord | BadLine,
            source: str) -> tuple[EadRecord | BadLine, bool | None]:
    if isinstance(outcome, BadLine):
        return outcome, None
    try:
        return outcome, store.upsert_ead(outcome, source)
    except RecordInvalid as err:
        return BadLine(number, outcome.item_id, str(err), err.problems), None
    except sqlite3.Error as err:
        if not store.db.in_transaction:
            raise  # SQLite rolled the whole chunk back (disk full, I/O error): not this line's fault
        return BadLine(number, outcome.item_id, f"not stored: {err}", (("record", f"not stored: {err}"),)), None
