"""The item's vocabulary: why an item is flagged (`ReasonCode`, `Reason`), what the detector saw
(`Detected`), what a decision is made from (`Evidence`) and what it says (`Decision`, `RuleHit`).

Pure values that every layer above imports downward: the lane core and its messages, the EAD checks,
the rules engine, the built-in rules (station/risk.py) and the runtime's recorder. This module imports
nothing of the station.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Literal

RULES_VERSION = "builtin-1"  # the built-in rules' version (station/risk.py), a Decision's default


class ReasonCode(StrEnum):
    """Every reason code the station gives an item, by where it comes from. A `Reason`'s code is a plain
    string (a rule file may name its own codes); the station's own are these, and every one of them is
    handled by a rule of the default rule set (tests/station/test_rules.py checks both)."""

    # the lane: the item could not be screened or routed reliably (station/lane/core.py)
    SCAN_MISSING = "SCAN_MISSING"
    DECISION_LATE = "DECISION_LATE"
    MULTIPLE_ITEMS = "MULTIPLE_ITEMS"
    ITEM_TOO_LONG = "ITEM_TOO_LONG"
    ITEM_MISSING = "ITEM_MISSING"
    UNTRACKED_ITEM = "UNTRACKED_ITEM"
    ROUTING_UNCONFIRMED = "ROUTING_UNCONFIRMED"
    GATE_NOT_SET = "GATE_NOT_SET"
    ESTOP = "ESTOP"
    PLC_FAULT = "PLC_FAULT"
    PLC_LINK_LOST = "PLC_LINK_LOST"
    PLC_POLL_TOO_SLOW = "PLC_POLL_TOO_SLOW"
    SCANNER_INTERLOCK = "SCANNER_INTERLOCK"
    JAM = "JAM"
    FAULT = "FAULT"
    ENCODER_JUMP = "ENCODER_JUMP"
    ENTERED_UNSEEN = "ENTERED_UNSEEN"
    ITEMS_TOO_CLOSE = "ITEMS_TOO_CLOSE"
    TRACKING_SLIP = "TRACKING_SLIP"
    GATE_MISMATCH = "GATE_MISMATCH"
    GATE_WRITE_LATE = "GATE_WRITE_LATE"
    MAINTENANCE = "MAINTENANCE"
    # identity (the barcode reader, station/ead/s10.py)
    NO_READ = "NO_READ"
    S10_INVALID = "S10_INVALID"
    # the image and the detector (station/inference.py)
    MANUAL_ONLY = "MANUAL_ONLY"
    IMAGE_ERROR = "IMAGE_ERROR"
    INFERENCE_TIMEOUT = "INFERENCE_TIMEOUT"
    INFERENCE_ERROR = "INFERENCE_ERROR"
    # the declaration (station/ead/checks.py)
    EAD_MISSING = "EAD_MISSING"
    EAD_INCOMPLETE = "EAD_INCOMPLETE"
    VAGUE_DESCRIPTION = "VAGUE_DESCRIPTION"
    HS_CODE_MISSING = "HS_CODE_MISSING"
    HS_CODE_INVALID = "HS_CODE_INVALID"
    VALUE_IMPLAUSIBLE = "VALUE_IMPLAUSIBLE"
    TOTALS_INCONSISTENT = "TOTALS_INCONSISTENT"
    CATEGORY_INCONSISTENT = "CATEGORY_INCONSISTENT"
    WEIGHT_MISMATCH = "WEIGHT_MISMATCH"
    CONTENT_MISMATCH = "CONTENT_MISMATCH"
    # customs instructions (station/customs.py): INSPECT whatever the detector says
    CUSTOMS_HOLD = "CUSTOMS_HOLD"
    CUSTOMS_DO_NOT_LOAD = "CUSTOMS_DO_NOT_LOAD"
    CUSTOMS_SCREEN = "CUSTOMS_SCREEN"
    # what the rules themselves say (station/rules/engine.py, station/risk.py)
    THREAT_DETECTED = "THREAT_DETECTED"
    UNHANDLED_REASON = "UNHANDLED_REASON"
    UNHANDLED_DETECTION = "UNHANDLED_DETECTION"
    RULE_NOT_EVALUATED = "RULE_NOT_EVALUATED"


RULE_CODES = frozenset({ReasonCode.THREAT_DETECTED, ReasonCode.UNHANDLED_REASON, ReasonCode.UNHANDLED_DETECTION,
                        ReasonCode.RULE_NOT_EVALUATED})
GIVEN_CODES = frozenset(ReasonCode) - RULE_CODES  # what the station gives the rules to decide on


@dataclass(frozen=True)
class Reason:
    """Why an item got its decision: a stable code for machines (a `ReasonCode` for the station's own)
    and a sentence for people."""

    code: str
    detail: str = ""
    field: str | None = None  # the EAD field a data-quality reason concerns (e.g. "contents[0].hs_code")


@dataclass(frozen=True)
class Detected:
    label: str
    score: float
    box: tuple[float, float, float, float]
    threat: bool


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
                      "detections": tuple(Detected(x["label"], x["score"], tuple(x["box"]), x["threat"])
                                          for x in d["detections"])})


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
