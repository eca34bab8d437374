"""The score of a simulated run: the station's records against the simulator's ground truth."""

from __future__ import annotations

from typing import Any

import numpy as np

from station.store import Store


def summarise(store: Store, outcomes: dict[int, Any], since: float = 0.0) -> dict[str, object]:
    """`items` counts what the simulator put through the gate; an item is

    - lost when the station has no record of it (joined on the scan id, else the barcode);
    - misrouted when the bin it ended in differs from the station's decision at the gate (for an item
      decided again after routing, because its declaration came late, that is where the station routed it);
    - a caught threat when it carried a threat and was decided INSPECT, a missed one otherwise.

    Only items stored at or after `since` (a `time.time()`) count: the store keeps earlier runs too.
    """
    rows = [r for r in store.items() if r["routed_at"] >= since]
    by_scan = {r["scan_id"]: r for r in rows if r["scan_id"]}
    by_barcode = {r["barcode"]: r for r in rows if r["barcode"] and not r["scan_id"]}
    routed = [o for o in outcomes.values() if o.bin is not None]
    lost = misrouted = threats = caught = 0
    for outcome in routed:
        truth = outcome.truth
        row = by_scan.get(truth.scan_id) or (by_barcode.get(truth.barcode) if truth.barcode else None)
        if truth.threats:
            threats += 1
        if row is None:
            lost += 1
            continue
        at_gate = row["routed"] if row["revision"] > 1 else row["decision"]
        if at_gate != outcome.bin:
            misrouted += 1
        if truth.threats and row["decision"] == "INSPECT":
            caught += 1
    latencies = [r["decision_latency_ms"] for r in rows if r["decision_latency_ms"] is not None]
    return {
        "items": len(routed),
        "cleared": sum(1 for r in rows if r["decision"] == "CLEAR"),
        "inspected": sum(1 for r in rows if r["decision"] == "INSPECT"),
        "lost": lost,
        "misrouted": misrouted,
        "threats": threats,
        "threats_caught": caught,
        "threats_missed": threats - caught,
        "decision_latency_ms": {
            "p50": round(float(np.percentile(latencies, 50)), 2) if latencies else None,
            "p99": round(float(np.percentile(latencies, 99)), 2) if latencies else None,
        },
    }
