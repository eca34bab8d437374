"""The score of a simulated run: the station's records against the simulator's ground truth.

`audit` is what a safety auditor counts, item by item, from which bin each item really fell into (the
simulator knows) and what the station recorded for it. It is shared by the run summary, the fault
tests and the fault campaign (`bench/campaign.py`), so that all three judge the same way.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from station.store import Store

UNTRACKED_MATCH_S = 2.0  # an untracked item's record follows its arrival by a poll and a store write

_Record = Mapping[str, Any] | sqlite3.Row  # an items-table row, read by column name


@dataclass
class Audit:
    """Per-item verdicts of one run (lists of the simulator's item indexes, so a failure can be named).

    - lost: reached a bin, and the station has no record of it;
    - misrouted: the record says it went somewhere it did not, or it is in the CLEAR bin and the station
      did not decide CLEAR for it (an item in the INSPECT bin that the station cleared is only a
      misroute if the record claims it went to CLEAR: UNCONFIRMED records make no claim);
    - threats_in_clear: carried a threat and fell into the CLEAR bin; of those, model_misses were
      cleared on a finished inference that found no threat (what the detector measures: docs/models.md),
      and unsafe are all the others: a threat in the CLEAR bin that no model miss explains.
    """

    items: int = 0
    threats: int = 0
    caught: int = 0
    lost: list[int] = field(default_factory=list)
    misrouted: list[int] = field(default_factory=list)
    threats_in_clear: list[int] = field(default_factory=list)
    model_misses: list[int] = field(default_factory=list)
    unsafe: list[int] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {"items": self.items, "lost": len(self.lost), "misrouted": len(self.misrouted),
                "threats": self.threats, "threats_caught": self.caught,
                "threats_in_clear_bin": len(self.threats_in_clear), "of_which_model_misses": len(self.model_misses),
                "of_which_unsafe": len(self.unsafe)}


def audit(rows: Iterable[_Record], outcomes: Mapping[int, Any]) -> Audit:
    """Judge every item that reached a bin (`outcomes`: the simulator's, by item index) by its record
    (`rows`: the items table), joined on the scan id, else the barcode, else (an item the station never
    saw by name) on the time an id-less record of an untracked item was stored."""
    rows = list(rows)
    by_scan = {r["scan_id"]: r for r in rows if r["scan_id"]}
    by_barcode = {r["barcode"]: r for r in rows if r["barcode"] and not r["scan_id"]}
    unnamed = sorted((r for r in rows if not r["scan_id"] and not r["barcode"]), key=lambda r: r["routed_at"])
    result = Audit()
    for index, outcome in sorted(outcomes.items(), key=lambda kv: (kv[1].routed_at or 0.0, kv[0])):
        if outcome.bin is None:
            continue
        truth = outcome.truth
        result.items += 1
        result.threats += bool(truth.threats)
        row = by_scan.get(truth.scan_id) or (by_barcode.get(truth.barcode) if truth.barcode else None)
        if row is None:
            row = _untracked_record(unnamed, outcome.routed_at)
        if truth.threats and outcome.bin == "CLEAR":
            result.threats_in_clear.append(index)
            (result.model_misses if row is not None and _model_miss(row) else result.unsafe).append(index)
        if row is None:
            result.lost.append(index)
            continue
        result.caught += bool(truth.threats) and row["decision"] == "INSPECT"
        if _misrouted(row, outcome.bin):
            result.misrouted.append(index)
    return result


def _untracked_record(unnamed: list[_Record], routed_at: float | None) -> _Record | None:
    """An item the station never knew by name (it entered unseen): the first unclaimed record of an item
    that reached the gate with no id, stored within UNTRACKED_MATCH_S after this item reached it."""
    if routed_at is None:
        return None
    for i, row in enumerate(unnamed):
        if routed_at - 0.05 <= row["routed_at"] <= routed_at + UNTRACKED_MATCH_S:
            return unnamed.pop(i)
    return None


def _decision_at_gate(row: _Record) -> str:
    # An item decided again after routing (a late declaration) keeps where it went; its decision changed.
    return str(row["routed"] if row["revision"] > 1 and row["routed"] in ("CLEAR", "INSPECT") else row["decision"])


def _misrouted(row: _Record, bin_: str) -> bool:
    if row["routed"] in ("CLEAR", "INSPECT") and row["routed"] != bin_:
        return True
    return bin_ == "CLEAR" and _decision_at_gate(row) != "CLEAR"


def _model_miss(row: _Record) -> bool:
    """Cleared on a finished inference by the model, which reported no threat."""
    if _decision_at_gate(row) != "CLEAR" or row["model_hash"] is None:
        return False
    explanation = json.loads(row["explanation"] or "null") or {}
    detections = (explanation.get("evidence") or {}).get("detections") or []
    return not any(d.get("threat") for d in detections)


def rows_since(store: Store, since: float) -> list[sqlite3.Row]:
    return [r for r in store.items() if r["routed_at"] >= since]


def summarise(store: Store, outcomes: dict[int, Any], since: float = 0.0) -> dict[str, object]:
    """The run's summary: what the simulator put through the gate, judged by `audit`, and the station's
    decision latency. Only items stored at or after `since` (a `time.time()`) count: the store keeps
    earlier runs too."""
    rows = rows_since(store, since)
    verdict = audit(rows, outcomes)
    latencies = [r["decision_latency_ms"] for r in rows if r["decision_latency_ms"] is not None]
    counts = verdict.counts()
    return {
        "items": counts.pop("items"),
        "cleared": sum(1 for r in rows if r["decision"] == "CLEAR"),
        "inspected": sum(1 for r in rows if r["decision"] == "INSPECT"),
        **counts,
        "threats_missed": verdict.threats - verdict.caught,
        "decision_latency_ms": {
            "p50": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
            "p99": round(float(np.percentile(latencies, 99)), 2) if latencies else None,
        },
    }
