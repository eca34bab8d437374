"""The built-in risk rules: detections, identity, EAD and lane faults -> CLEAR or INSPECT.

Pure and total: every input gives a decision, and anything missing or broken gives INSPECT with a
reason. The rule set is versioned; every stored decision carries `RULES_VERSION`.
(A declarative rules file replaces this function in a later issue; its contract stays.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from station.lane.messages import Detected, Reason

RULES_VERSION = "builtin-1"


@dataclass(frozen=True)
class Evidence:
    detections: tuple[Detected, ...] = ()
    inference_failure: Reason | None = None  # MANUAL_ONLY, IMAGE_ERROR, INFERENCE_TIMEOUT, ...
    id_problem: Reason | None = None  # NO_READ, S10_INVALID
    ead_found: bool | None = None  # None: not looked up (no valid id)
    lane_problems: tuple[Reason, ...] = ()  # ESTOP, PLC_FAULT, SCAN_MISSING, DECISION_LATE, ...


@dataclass(frozen=True)
class Decision:
    decision: Literal["CLEAR", "INSPECT"]
    score: float
    reasons: tuple[Reason, ...]
    rules_version: str = RULES_VERSION


def decide(evidence: Evidence) -> Decision:
    reasons: list[Reason] = []
    threats = [d for d in evidence.detections if d.threat]
    for d in sorted(threats, key=lambda d: -d.score):
        reasons.append(Reason("THREAT_DETECTED", f"{d.label} at {d.score:.2f}"))
    if evidence.inference_failure is not None:
        reasons.append(evidence.inference_failure)
    if evidence.id_problem is not None:
        reasons.append(evidence.id_problem)
    elif evidence.ead_found is False:
        reasons.append(Reason("EAD_MISSING", "no customs declaration received for this item"))
    reasons.extend(evidence.lane_problems)
    score = max((d.score for d in threats), default=0.0)
    if reasons:
        return Decision("INSPECT", max(score, 0.5), tuple(reasons))
    return Decision("CLEAR", score, ())
