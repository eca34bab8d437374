"""Applying a rule set to one item's evidence: a decision, a score, the reasons and a per-rule trace.

Fail safe, and total: `RuleSet.decide` never raises. A reason that no rule handles, a threat detection
that no rule picks up, and a rule that cannot be evaluated (it needs data the item lacks, or it fails)
each send the item to INSPECT with a reason that says so. CLEAR only when no rule asks for inspection
and the score stays under the rule set's inspect threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from station.domain import Decision, Detected, Evidence, Reason, RuleHit
from station.rules.schema import Rule

FAIL_SAFE = "fail-safe"  # the trace's name for what the engine adds on its own


class _Missing(Exception):
    """The item lacks data the rule needs (the message says which)."""


@dataclass(frozen=True)
class RuleSet:
    version: str
    inspect_threshold: float
    rules: tuple[Rule, ...]
    sources: tuple[str, ...] = ()  # the files it was read from, base first

    def decide(self, evidence: Evidence) -> Decision:
        pool = _reasons_of(evidence)
        handled: set[int] = set()  # indices into pool that a matching rule passed on
        seen: set[int] = set()  # indices into evidence.detections that a matching rule picked up
        hits: list[RuleHit] = []
        for rule in self.rules:
            try:
                hit = _apply(rule, evidence, pool, handled, seen)
            except _Missing as missing:
                if rule.if_missing == "skip":
                    continue
                hit = _not_evaluated(rule, f"needs {missing}, which this item lacks")
            except Exception as err:  # fail safe: a broken rule inspects, it never crashes the lane
                hit = _not_evaluated(rule, f"failed: {type(err).__name__}: {err}")
            if hit is not None:
                hits.append(hit)
        for index, reason in enumerate(pool):
            if index not in handled:
                why = f"no rule in {self.version} handles {reason.code}"
                hits.append(RuleHit(FAIL_SAFE, "inspect", 0.0, why, (reason, Reason("UNHANDLED_REASON", why))))
        for index, d in enumerate(evidence.detections):
            if d.threat and index not in seen:
                why = f"no rule in {self.version} handles a {d.label} detection at {_safe_score(d.score):.2f}"
                hits.append(RuleHit(FAIL_SAFE, "inspect", 0.0, why, (Reason("UNHANDLED_DETECTION", why),)))
        return self._decision(evidence, tuple(hits))

    def _decision(self, evidence: Evidence, hits: tuple[RuleHit, ...]) -> Decision:
        # Rounded so that scores add up as written (0.1 + 0.2 reaches a threshold of 0.3).
        score = min(1.0, round(sum((h.score for h in hits if h.action != "note"), 0.0), 9))
        inspect = any(h.action == "inspect" for h in hits) or score >= self.inspect_threshold
        reasons: list[Reason] = []
        for hit in hits:
            reasons.extend(r for r in hit.reasons if not any(r is listed for listed in reasons))
        if inspect:
            return Decision("INSPECT", max(score, self.inspect_threshold), tuple(reasons), self.version, hits, evidence)
        return Decision("CLEAR", score, tuple(reasons), self.version, hits, evidence)


def _reasons_of(evidence: Evidence) -> list[Reason]:
    """Every reason the item carries, in the order the built-in rules listed them."""
    pool = [r for r in (evidence.inference_failure, evidence.id_problem) if r is not None]
    findings = list(evidence.ead_findings)
    if (evidence.id_problem is None and evidence.ead_found is False
            and not any(r.code == "EAD_MISSING" for r in findings)):
        pool.append(Reason("EAD_MISSING", "no customs declaration received for this item"))
    # Copies, so that each entry is its own object: a reason two rules pass on is listed once, while two
    # equal reasons the item really carries (two faults alike) are both kept, as the built-in rules did.
    return [replace(r) for r in pool + findings + list(evidence.lane_problems)]


def _apply(rule: Rule, ev: Evidence, pool: list[Reason], handled: set[int], seen: set[int]) -> RuleHit | None:
    """The rule's hit, or None when its condition does not hold; adds what it handled to `handled` (reasons)
    and `seen` (detections). Conditions that can be decided come first: a rule that does not hold on data
    the item has is not asked about data the item lacks."""
    when = rule.when
    matched = [i for i, r in enumerate(pool) if when.reason is not None and r.code in when.reason]
    if when.reason is not None and not matched:
        return None
    found = _detections(ev.detections, when.detected, when.min_score) if when.detected is not None else []
    if when.detected is not None and not found:
        return None
    lacking: list[str] = []
    facts: list[str] = []
    for name, value, wanted in (("declared category", ev.declared_category, when.category),
                                ("sender country", ev.sender_country, when.sender_country)):
        if wanted is None:
            continue
        if value is None:
            lacking.append(name)
        elif value not in wanted:
            return None
        else:
            facts.append(f"{name} {value}")
    if when.measure is not None:
        measured = MEASURES[when.measure](ev)
        if measured is None:
            lacking.append(when.measure)
        elif ((when.over is not None and not measured > when.over)
              or (when.under is not None and not measured < when.under)):
            return None
        else:
            bounds = " and ".join(f"{w} {b:g}" for w, b in (("over", when.over), ("under", when.under))
                                  if b is not None)
            facts.append(f"{when.measure} {measured:g}, {bounds}")
    if lacking:
        raise _Missing(" and ".join(lacking))
    handled.update(matched)
    seen.update(i for i, _, _ in found)
    if when.reason is not None:
        reasons = tuple(pool[i] for i in matched)
    elif found:
        reasons = tuple(Reason(rule.reason_code, f"{d.label} at {s:.2f}") for _, d, s in found)
    else:
        reasons = (Reason(rule.reason_code, "; ".join(facts)),)
    score = max(s for _, _, s in found) if rule.score == "detection" else rule.score or 0.0
    return RuleHit(rule.name, rule.action, score, rule.says, reasons)


def _detections(detections: tuple[Detected, ...], wanted: str | tuple[str, ...],
                min_score: float | None) -> list[tuple[int, Detected, float]]:
    """The detections a rule asks for (index, detection, score made safe), highest score first."""
    picked = []
    for index, d in enumerate(detections):
        if (wanted == "threat" and not d.threat) or (isinstance(wanted, tuple) and d.label not in wanted):
            continue
        score = _safe_score(d.score)
        if min_score is None or score >= min_score:
            picked.append((index, d, score))
    return sorted(picked, key=lambda entry: -entry[2])


def _safe_score(score: float) -> float:
    """A detection score in 0..1; one that is not a number counts as certain (fail safe)."""
    return min(1.0, max(0.0, score)) if math.isfinite(score) else 1.0


def _not_evaluated(rule: Rule, why: str) -> RuleHit:
    return RuleHit(rule.name, "inspect", 0.0, rule.says,
                   (Reason("RULE_NOT_EVALUATED", f"rule {rule.name} could not be evaluated: {why}"),))


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _weight_difference(ev: Evidence) -> float | None:
    measured, declared = _finite(ev.measured_weight_kg), _finite(ev.declared_weight_kg)
    return None if measured is None or declared is None else abs(measured - declared)


def _weight_ratio(ev: Evidence) -> float | None:
    difference, declared = _weight_difference(ev), _finite(ev.declared_weight_kg)
    if difference is None or declared is None:
        return None
    if declared <= 0:
        return 0.0 if difference == 0 else math.inf  # anything weighed against nothing declared
    return difference / declared


MEASURES: dict[str, Callable[[Evidence], float | None]] = {
    "measured_weight_kg": lambda ev: _finite(ev.measured_weight_kg),
    "declared_weight_kg": lambda ev: _finite(ev.declared_weight_kg),
    "weight_difference_kg": _weight_difference,
    "weight_difference_ratio": _weight_ratio,
    "declared_value": lambda ev: _finite(ev.declared_value),
}
