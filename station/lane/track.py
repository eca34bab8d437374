"""One item the lane follows along the belt, from the entry eye to the gate, and its record.

A `Track` gathers what the station learns of an item (barcode, scan, inference, declaration, the
problems met on the way) until the lane core decides and routes it; `routed_record` turns it into
the `ItemRouted` the runtime stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from station.domain import Decision, Detected, Reason
from station.ead.record import EadRecord
from station.lane import messages as m


@dataclass
class Track:
    track_id: int
    entry_mm: float  # position when the leading edge reached the entry eye (the earliest it can have been)
    entry_err_mm: float = 0.0  # how much later it may really have been (the belt run in that poll)
    length_mm: float | None = None
    weight_kg: float | None = None  # from the checkweigher, when the lane has one
    barcode: str | None = None
    barcode_state: str = "pending"  # pending | read | noread | missing
    item_id: str | None = None
    id_problem: Reason | None = None
    ead_state: str = "pending"  # pending | found | missing | not_looked_up
    ead_version: int | None = None
    ead_record: EadRecord | None = None
    ead_findings: tuple[Reason, ...] = ()
    scan_id: str | None = None
    scan_state: str = "pending"  # pending | started | done
    image_path: str | None = None
    image_sha256: str | None = None
    image_ready_t: float | None = None
    inference_state: str = "pending"  # pending | running | done | failed
    detections: tuple[Detected, ...] = ()
    model_hash: str | None = None
    inference_failure: Reason | None = None
    problems: list[Reason] = field(default_factory=list)
    decision: Decision | None = None
    decided_t: float | None = None
    armed_with: Decision | None = None  # the CLEAR decision the station armed the gate with for this item
    armed_decided_t: float | None = None  # when that decision was made
    # Items touching this one, seen as one at the entry eye but with a label or scan of their own:
    # recorded beside it (INSPECT, MULTIPLE_ITEMS), routed where it is routed.
    companions: list[Track] = field(default_factory=list)
    inside_of: int | None = None  # a companion: the track it was seen inside of at the entry eye
    clear_on_gate: bool = False  # a poll read that arm back on the gate

    def lead(self, position_mm: float) -> float:
        return position_mm - self.entry_mm

    def add_problem(self, code: str, detail: str) -> bool:
        """Add a reason once per code; True when it is new."""
        if any(r.code == code for r in self.problems):
            return False
        self.problems.append(Reason(code, detail))
        return True


def keep_armed_clear(track: Track) -> bool:
    """An item the station armed CLEAR for, whose problems came later: its record is that CLEAR,
    with those problems as notes (the gate may have carried it, and it was the item's own)."""
    armed = track.armed_with
    if armed is None:
        return False
    notes = tuple(replace(r, detail=f"{r.detail} (after its CLEAR was armed)") for r in track.problems)
    track.decision, track.decided_t = replace(armed, reasons=armed.reasons + notes), track.armed_decided_t
    return True


def routed_record(track: Track, routed: str) -> m.ItemRouted:
    """What the core reports of `track` once the gate has routed it (or it is known lost)."""
    assert track.decision is not None
    ead_status = {"found": "found", "missing": "missing"}.get(track.ead_state, "not_looked_up")
    return m.ItemRouted(
        track_id=track.track_id, item_id=track.item_id, barcode=track.barcode, scan_id=track.scan_id,
        image_path=track.image_path, image_sha256=track.image_sha256,
        decision=track.decision.decision, routed=routed,  # type: ignore[arg-type]
        score=track.decision.score, reasons=track.decision.reasons, detections=track.detections,
        ead_status=ead_status, ead_version=track.ead_version,  # type: ignore[arg-type]
        rules_version=track.decision.rules_version, model_hash=track.model_hash, weight_kg=track.weight_kg,
        explanation=track.decision.explanation_json(),
        ead_findings=track.decision.evidence.ead_findings if track.decision.evidence else track.ead_findings,
        image_ready_t=track.image_ready_t, decided_t=track.decided_t,
    )
