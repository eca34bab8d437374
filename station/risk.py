"""The built-in rules, and an item's evidence with its declaration in it.

The declarative rule set (`station.rules`) is what the station runs; `decide` here is the built-in rule
set it replaces, kept as the lane core's default and as the reference the default rules file is tested
against. Both are pure and total: every input gives a decision, and anything missing or broken gives
INSPECT with a reason. Every decision carries the version of the rules that made it.
"""

from __future__ import annotations

from dataclasses import replace

from station.domain import Decision, Evidence, Reason, ReasonCode
from station.ead.checks import content_mismatch, weight_mismatch
from station.ead.record import EadRecord


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


def decide(evidence: Evidence) -> Decision:
    """The built-in rules: any threat, failure, identity, EAD or lane problem -> INSPECT."""
    reasons: list[Reason] = []
    threats = [d for d in evidence.detections if d.threat]
    for d in sorted(threats, key=lambda d: -d.score):
        reasons.append(Reason(ReasonCode.THREAT_DETECTED, f"{d.label} at {d.score:.2f}"))
    if evidence.inference_failure is not None:
        reasons.append(evidence.inference_failure)
    if evidence.id_problem is not None:
        reasons.append(evidence.id_problem)
    elif evidence.ead_found is False:
        reasons.append(Reason(ReasonCode.EAD_MISSING, "no customs declaration received for this item"))
    reasons.extend(evidence.lane_problems)
    score = max((d.score for d in threats), default=0.0)
    if reasons:
        return Decision("INSPECT", max(score, 0.5), tuple(reasons), evidence=evidence)
    return Decision("CLEAR", score, (), evidence=evidence)
