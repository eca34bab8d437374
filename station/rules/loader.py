"""Reading a rules file and a site's overrides into one effective rule list.

Every error is a `RulesError` whose lines name the file, the line where the key is written, the rule
and the key: `site.toml:12: rule 'threat-detected': when.min_score: Input should be ...`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from station.rules.engine import RuleSet
from station.rules.schema import OverridesFile, Rule, RulesFile

DEFAULT_RULES = Path(__file__).with_name("default.toml")
_KEY = re.compile(r"^[a-z_]+$")
M = TypeVar("M", bound=BaseModel)


class RulesError(Exception):
    """A rules or overrides file cannot be used. The message is meant for the person who wrote it."""


def read_rules(path: Path | None = None, overrides: Path | None = None) -> RuleSet:
    """The rules of `path` (None: the packaged default), changed by `overrides` when given."""
    path = DEFAULT_RULES if path is None else path
    text, raw = _read(path)
    base = _validate(RulesFile, raw, path, text)
    if overrides is None:
        return RuleSet(base.version, base.inspect_threshold, base.rule, (str(path),))
    site_text, site_raw = _read(overrides)
    site = _validate(OverridesFile, site_raw, overrides, site_text)
    rules = _apply(base, raw["rule"], site, overrides, site_text)
    threshold = base.inspect_threshold if site.inspect_threshold is None else site.inspect_threshold
    return RuleSet(f"{base.version}+{site.version}", threshold, rules, (str(path), str(overrides)))


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise RulesError(f"{path}: cannot read: {err.strerror}") from err
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise RulesError(f"{path}: not valid TOML: {err}") from err


def _apply(base: RulesFile, base_raw: list[dict[str, Any]], site: OverridesFile, path: Path,
           text: str) -> tuple[Rule, ...]:
    names = [r.name for r in base.rule]
    problems = [_where(path, text, ("disable",), f"disable: no rule named {n!r} in the base file")
                for n in site.disable if n not in names]
    problems += [_where(path, text, ("change", n), f"change.{n}: no rule named {n!r} in the base file")
                 for n in site.change if n not in names]
    problems += [_where(path, text, ("change", n, "name"), f"rule {n!r}: name: a change cannot rename a rule")
                 for n, keys in site.change.items() if "name" in keys]
    problems += [_where(path, text, ("change", n), f"change.{n}: the rule is also disabled; do one or the other")
                 for n in site.change if n in site.disable]
    if problems:
        raise RulesError("\n".join(problems))
    rules: list[Rule] = []
    for rule, raw in zip(base.rule, base_raw, strict=True):
        if rule.name in site.disable:
            continue
        change = site.change.get(rule.name)
        if change is None:
            rules.append(rule)
            continue
        merged = {**raw, **change}
        if change.get("action") == "note" and "score" not in change:
            merged.pop("score", None)  # a rule made a note stops scoring
        if isinstance(raw.get("when"), dict) and isinstance(change.get("when"), dict):
            merged["when"] = {**raw["when"], **change["when"]}
        rules.append(_validate(Rule, merged, path, text, ("change", rule.name), f"rule {rule.name!r}: "))
    for i, raw in enumerate(site.rule):
        label = f"rule {raw.get('name', i + 1)!r}: "
        added = _validate(Rule, raw, path, text, ("rule", i), label)
        if added.name in names or added.name in {r.name for r in rules}:
            raise RulesError(_where(path, text, ("rule", i, "name"), f"{label}name: there is already a rule of that "
                                    f"name (change.{added.name} changes a base rule)"))
        rules.append(added)
    return tuple(rules)


def _validate(model: type[M], raw: Any, path: Path, text: str,
              prefix: tuple[str | int, ...] = (), label: str = "") -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise RulesError(_explain(err, raw, path, text, prefix, label)) from err


def _explain(err: ValidationError, raw: Any, path: Path, text: str, prefix: tuple[str | int, ...], label: str) -> str:
    """One line per key; a union's alternatives on one line ("... or ...")."""
    by_key: dict[tuple[str | int, ...], list[str]] = {}
    for e in err.errors():
        # Drop pydantic's union-member tags ('constrained-float', "literal['detection']"): keep the keys.
        loc = tuple(p for p in e["loc"] if isinstance(p, int) or _KEY.match(str(p)))
        problem = {"extra_forbidden": "unknown key", "value_error": str(e.get("ctx", {}).get("error", e["msg"]))}.get(
            e["type"], e["msg"])
        if problem not in by_key.setdefault(loc, []):
            by_key[loc].append(problem)
    # A list whose bad entries were dropped is then "too short": the entries' own errors say it better.
    by_key = {loc: problems for loc, problems in by_key.items()
              if not any(len(other) > len(loc) and other[:len(loc)] == loc for other in by_key)}
    lines = []
    for loc, problems in by_key.items():
        who, keys = label, loc
        if not prefix and len(loc) >= 2 and loc[0] == "rule" and isinstance(loc[1], int):
            who, keys = f"rule {_rule_name(raw, loc[1])!r}: ", loc[2:]
        key = ".".join(str(p) for p in keys) or ("(the rule)" if who else "(top level)")
        lines.append(_where(path, text, prefix + loc, f"{who}{key}: {' or '.join(problems)}"))
    return "\n".join(lines)


def _rule_name(raw: Any, index: int) -> str | int:
    """The `name` written in the index-th [[rule]], else its position (from 1)."""
    try:
        name = raw["rule"][index]["name"]
    except (KeyError, IndexError, TypeError):
        return index + 1
    return name if isinstance(name, str) else index + 1


def _where(path: Path, text: str, loc: tuple[str | int, ...], message: str) -> str:
    line = _line_of(text, loc)
    return f"{path}{f':{line}' if line else ''}: {message}"


def _line_of(text: str, loc: tuple[str | int, ...]) -> int | None:
    """The line where the key at `loc` is written, else its table's header line. `[[rule]]` blocks are
    counted by index and `[change.NAME]` found by name; a key inside an inline table is found on the
    line of the key that holds the table."""
    if not loc:
        return None
    target: tuple[str, str | int] | None = None
    key = loc[0]
    if loc[0] in ("rule", "change") and len(loc) >= 2:
        target, key = (str(loc[0]), loc[1]), (loc[2] if len(loc) > 2 else "")
    block: tuple[str, str | int] | None = None
    rules_seen = 0
    header_line = None
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.split("#", 1)[0].strip()
        if stripped.startswith("["):
            parts = [p.strip().strip('"') for p in stripped.strip("[]").split(".")]
            if stripped.startswith("[[rule]]"):
                block, rules_seen = ("rule", rules_seen), rules_seen + 1
            elif parts[0] == "change" and len(parts) >= 2:
                block = ("change", parts[1])
                if block == target and len(parts) > 2 and parts[2] == key:
                    return number  # [change.NAME.when]
            else:
                block = ("table", stripped)
            if block == target and len(parts) <= 2:
                header_line = number
            continue
        if block == target and key != "" and re.match(rf"{re.escape(str(key))}\s*[=.]", stripped):
            return number
    return header_line
