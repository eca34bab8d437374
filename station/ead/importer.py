"""Loading EAD files into the store (`station ead import`, and the simulator's feed file)."""

from __future__ import annotations

from pathlib import Path

from station.ead.record import BadLine, EadRecord, read_jsonl
from station.store import Store


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
