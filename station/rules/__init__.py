"""Declarative risk rules: a versioned TOML rules file, a site's overrides, and the engine that applies them.

    ruleset = load_rules(path, overrides)   # path None: the packaged default.toml
    decision = ruleset.decide(evidence)     # CLEAR or INSPECT, score, reasons, trace, rules_version

The default file documents the rule language; `station rules check FILE` prints what a file does.
"""

from __future__ import annotations

from pathlib import Path

from station.config import Config, ConfigError
from station.rules.engine import FAIL_SAFE, RuleSet
from station.rules.loader import DEFAULT_RULES, RulesError, read_rules

__all__ = ["DEFAULT_RULES", "FAIL_SAFE", "RuleSet", "RulesError", "load_rules", "load_ruleset"]


def load_rules(path: str | Path | None = None, overrides: str | Path | None = None) -> RuleSet:
    """Read and check a rule set. Raises RulesError naming the file, the line, the rule and the key."""
    return read_rules(None if path is None else Path(path), None if overrides is None else Path(overrides))


def load_ruleset(config: Config) -> RuleSet:
    """The configured rules (`[rules] path` and `overrides`); a bad rules file is a bad
    configuration: ConfigError, so that the start stops with exit code 2."""
    try:
        return load_rules(config.rules.path, config.rules.overrides)
    except RulesError as err:
        raise ConfigError(str(err)) from err
