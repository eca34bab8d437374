"""Declarative risk rules: a versioned TOML rules file, a site's overrides, and the engine that applies them.

    ruleset = load_rules(path, overrides)   # path None: the packaged default.toml
    decision = ruleset.decide(evidence)     # CLEAR or INSPECT, score, reasons, trace, rules_version

The default file documents the rule language; `station rules check FILE` prints what a file does.
"""

from __future__ import annotations

from pathlib import Path

from station.rules.engine import FAIL_SAFE, RuleSet
from station.rules.loader import DEFAULT_RULES, RulesError, read_rules

__all__ = ["DEFAULT_RULES", "FAIL_SAFE", "RuleSet", "RulesError", "load_rules"]


def load_rules(path: str | Path | None = None, overrides: str | Path | None = None) -> RuleSet:
    """Read and check a rule set. Raises RulesError naming the file, the line, the rule and the key."""
    loaded = read_rules(None if path is None else Path(path), None if overrides is None else Path(overrides))
    return RuleSet(loaded.version, loaded.inspect_threshold, loaded.rules, loaded.sources)
