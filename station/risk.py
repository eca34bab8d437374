"""What a risk decision is made from (`Evidence`) and what it says (`Decision`), plus the built-in rules.

The declarative rule set (`station.rules`) is what the station runs; `decide` here is the built-in rule
set it replaces, kept as the lane core's default and as the reference the default rules file is tested
against. Both are pure and total: every input gives a decision, and anything missing or broken gives
INSPECT with a reason. Every decision carries the version of the rules that made it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from station.ead.checks import content_mismatch, weight_mismatch
from station.ead.record import EadRecord
from station.lane.messages import Detected, Reason

RULES_VERSION = "builtin-1"


@dataclass(frozen=True)
class Evidence:
    """Everything known about one item when it is decided. Every field has a default: a caller that
    knows less (no scale, no EAD checks yet) still gets a decision, and an unknown is never a pass."""

    detections: tuple[Detected, ...] = ()  # each over the model's own per-class threshold
    inference_failure: Reason | None = None  # MANUAL_ONLY, IMAGE_ERROR, INFERENCE_TIMEOUT, ...
    id_problem: Reason | None = None  # NO_READ, S10_INVALID
    ead_found: bool | None = None  # None: not looked up (no valid id)
    lane_problems: tuple[Reason, ...] = ()  # ESTOP, PLC_FAULT, SCAN_MISSING, DECISION_LATE, ...
    ead_findings: tuple[Reason, ...] = ()  # EAD quality checks: VAGUE_DESCRIPTION, WEIGHT_MISMATCH, ...
    measured_weight_kg: float | None = None  # the lane scale's reading, where the lane has one
    declared_weight_kg: float | None = None  # the EAD's total gross weight
    declared_value: float | None = None  # the EAD's total value, in declared_currency
    declared_currency: str | None = None
    declared_category: str | None = None  # gift, documents, commercial_sample, returned_goods, sale_of_goods, other
    sender_country: str | None = None  # ISO 3166 alpha-2, from the EAD

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Evidence:
        """The inverse of `dataclasses.asdict` (how `Decision.explanation_json` stores it)."""
        def reason(r: dict[str, Any]) -> Reason:
            return Reason(r["code"], r.get("detail", ""), r.get("field"))

        one = {k: None if d[k] is None else reason(d[k]) for k in ("inference_failure", "id_problem")}
        many = {k: tuple(map(reason, d[k])) for k in ("lane_problems", "ead_findings")}
        return cls(**{**d, **one, **many,
                      "detections": tuple(Detected(x["label"], x["score"], tuple(x["box"]), x["threat"]) for x in d["detections"])})  # type: ignore[arg-type]


def with_declaration(evidence: Evidence, record: EadRecord, findings: tuple[Reason, ...]) -> Evidence:
    """`evidence` with the item's declaration in it: the record's own findings (`findings`, from
    `check_record`), the declaration weighed against the scan (CONTENT_MISMATCH) and the scale
    (WEIGHT_MISMATCH), and the declared figures the rules may test. The lane core uses it at decision
    time; the runtime uses it to decide again when a declaration arrives after its item was stored."""
    labels = [d.label for d in evidence.detections]
    weighed = None if evidence.measured_weight_kg is None else weight_mismatch(record, evidence.measured_weight_kg)
    extra = tuple(r for r in (content_mismatch(record, labels), weighed) if r is not None)
    return replace(evidence, ead_found=True, ead_findings=findings + extra,
                   declared_weight_kg=record.total_gross_weight_kg, declared_value=record.total_value,
                   declared_currency=record.currency, declared_category=record.category,
                   sender_country=record.sender.country)


@dataclass(frozen=True)
class RuleHit:
    """One line of a decision's explanation: a rule that matched (or could not be evaluated), what it
    did to the item and why, in the rule's own sentence."""

    rule: str
    action: Literal["inspect", "score", "note"]
    score: float  # what it added to the item's score (inspect: the score it asks for at least)
    says: str
    reasons: tuple[Reason, ...] = ()


@dataclass(frozen=True)
class Decision:
    decision: Literal["CLEAR", "INSPECT"]
    score: float
    reasons: tuple[Reason, ...]
    rules_version: str = RULES_VERSION
    trace: tuple[RuleHit, ...] = ()  # the rules that matched, in rule-file order
    evidence: Evidence | None = None  # what it was decided from

    def explanation_json(self) -> str:
        """Decision, evidence and rule trace as one JSON object: what the store keeps for `rules explain`."""
        return json.dumps({
            "decision": self.decision,
            "score": self.score,
            "rules_version": self.rules_version,
            "reasons": [asdict(r) for r in self.reasons],
            "trace": [asdict(hit) for hit in self.trace],
            "evidence": None if self.evidence is None else asdict(self.evidence),
        })


def decide(evidence: Evidence) -> Decision:
    """The built-in rules: any threat, failure, identity, EAD or lane problem -> INSPECT."""
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
        return Decision("INSPECT", max(score, 0.5), tuple(reasons), evidence=evidence)
    return Decision("CLEAR", score, (), evidence=evidence)
