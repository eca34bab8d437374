"""The shape of a rules file and of a site's overrides file, as pydantic models.

A rule is meant to be read by a customs officer: a name, a sentence (`says`), a `when` condition, an
`action` and a score. Unknown keys are errors, so a misspelt key stops the load instead of silently
turning a rule off.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from station.ead.record import Category

Measure = Literal["measured_weight_kg", "declared_weight_kg", "weight_difference_kg", "weight_difference_ratio",
                  "declared_value"]
Code = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")]
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=64)]
Version = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=64)]


def _listed(value: Any) -> Any:
    """`reason = "X"` reads as `reason = ["X"]`: one value is a list of one."""
    return [value] if isinstance(value, str) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class When(_Strict):
    """A rule's condition: every key written must hold; a list means any one of its values."""

    reason: Annotated[tuple[Code, ...], BeforeValidator(_listed)] | None = Field(
        None, min_length=1, description="The item carries a reason with one of these codes.")
    detected: (Literal["threat", "any"] | Annotated[tuple[str, ...], Field(min_length=1), BeforeValidator(_listed)]
               | None) = Field(
        None, description="The model found a threat-class object, any object, or one of these classes.")
    min_score: float | None = Field(None, ge=0, le=1,
                                    description="With `detected`: only detections scoring this or more.")
    category: Annotated[tuple[Category, ...], BeforeValidator(_listed)] | None = Field(
        None, min_length=1, description="The declared CN 23 category is one of these.")
    sender_country: (Annotated[tuple[Annotated[str, Field(pattern=r"^[A-Z]{2}$")], ...], BeforeValidator(_listed)]
                     | None) = Field(
        None, min_length=1, description="The declared sender's country (ISO 3166 alpha-2) is one of these.")
    measure: Measure | None = Field(None, description="A measurement compared with `over` and/or `under`.")
    over: float | None = Field(None, description="With `measure`: holds when the measurement is above this.")
    under: float | None = Field(None, description="With `measure`: holds when the measurement is below this.")

    @model_validator(mode="after")
    def _complete(self) -> When:
        if not any(v is not None
                   for v in (self.reason, self.detected, self.category, self.sender_country, self.measure)):
            raise ValueError("needs at least one of reason, detected, category, sender_country, measure")
        if self.min_score is not None and self.detected is None:
            raise ValueError("min_score needs detected")
        if (self.over is not None or self.under is not None) != (self.measure is not None):
            raise ValueError("measure needs over or under, and over/under need measure")
        return self


class Rule(_Strict):
    name: Name = Field(description="How the rule is referred to: in traces, in overrides' disable and change.")
    says: str = Field(min_length=1, description="What the rule means, in one sentence for the officer.")
    when: When
    action: Literal["inspect", "score", "note"] = Field(
        description="inspect: send to INSPECT; score: add `score`; note: record the reason only.")
    score: Annotated[float, Field(ge=0, le=1)] | Literal["detection"] | None = Field(
        None, description="What the rule adds to the item's score; 'detection': the model's confidence.")
    code: Code | None = Field(None,
                              description="Reason code the rule gives when it does not pass on reasons of its own.")
    if_missing: Literal["inspect", "skip"] = Field(
        "inspect", description="When the item lacks data the rule needs: inspect (fail safe) or skip the rule.")

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if self.action == "score" and self.score is None:
            raise ValueError("action 'score' needs a score")
        if self.action == "note" and self.score is not None:
            raise ValueError("a note does not change the score: remove score, or use action 'score'")
        if self.score == "detection" and self.when.detected is None:
            raise ValueError("score 'detection' needs when.detected")
        if self.code is not None and self.when.reason is not None:
            raise ValueError("a rule on reasons passes those reasons on: code is only for rules without when.reason")
        return self

    @property
    def reason_code(self) -> str:
        """The code of the reason this rule makes (rules on `when.reason` pass on the item's own)."""
        return self.code or self.name.upper().replace("-", "_")


class RulesFile(_Strict):
    version: Version = Field(description="The rule set's version; every decision stores it.")
    inspect_threshold: float = Field(gt=0, le=1, description="An item whose score reaches this goes to INSPECT.")
    rule: tuple[Rule, ...] = Field(min_length=1, description="The rules, applied in this order.")

    @model_validator(mode="after")
    def _unique(self) -> RulesFile:
        names = [r.name for r in self.rule]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"rule names must be unique: {', '.join(twice)}")
        return self


class OverridesFile(_Strict):
    """A site's changes to a rules file: its own version, then what it disables, changes and adds."""

    version: Version = Field(description="The site's version; the effective version is BASE+SITE.")
    inspect_threshold: float | None = Field(None, gt=0, le=1, description="Replaces the base file's threshold.")
    disable: tuple[Name, ...] = Field((), description="Rules of the base file that this site does not apply.")
    change: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per rule name: keys that replace the base rule's (when: key by key).")
    rule: tuple[dict[str, Any], ...] = Field((), description="Rules added after the base file's.")
