"""`station rules check|explain`: what a rules file does, and why a stored item got its decision.

Exit codes as for every `station` command: 0 ok; 1 the item is not in the store; 2 the command could
not run as asked (a rules file that does not load: the message names the file, line, rule and key).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from station.cli.common import config_args, load
from station.domain import GIVEN_CODES

if TYPE_CHECKING:  # handlers import lazily, so that `station --help` stays fast
    from station.rules import RuleSet
    from station.rules.schema import Rule

STATION_REASONS = GIVEN_CODES  # every reason the station gives the rules (station/domain.py)


def add_rules_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `rules` and its subcommands on the `station` command's subparsers."""

    rules = sub.add_parser("rules", help="risk rules: check a rules file, explain an item's decision")
    actions = rules.add_subparsers(required=True, metavar="ACTION")

    check = actions.add_parser("check",
                               help="validate a rules file (and a site's overrides); print what each rule does")
    check.add_argument("file", type=Path, help="rules file (TOML), e.g. station/rules/default.toml")
    check.add_argument("--overrides", type=Path, help="a site's overrides file to apply to it")
    check.set_defaults(handler=_check)

    explain = actions.add_parser("explain",
                                 help="why a stored item got its decision: evidence and the rules that matched")
    config_args(explain)
    explain.add_argument("item", metavar="ITEM", help="item id (S10), barcode, scan id or uid; the newest if several")
    explain.add_argument("--json", action="store_true", help="one JSON object: the stored item and its explanation")
    explain.set_defaults(handler=_explain)


def _check(args: argparse.Namespace) -> int:
    from station.rules import RulesError, load_rules

    try:
        ruleset = load_rules(args.file, args.overrides)
    except RulesError as err:
        print(err, file=sys.stderr)
        return 2
    for line in describe(ruleset):
        print(line)
    return 0


def describe(ruleset: RuleSet) -> list[str]:
    """What a rule set does, for the officer: each rule in order, then what it leaves to the fail safe."""
    lines = [" + ".join(ruleset.sources),
             f"version {ruleset.version}: INSPECT when a rule says so or the score reaches "
             f"{ruleset.inspect_threshold:g}",
             f"{len(ruleset.rules)} rules, applied in this order:"]
    width = max(len(r.name) for r in ruleset.rules)
    for number, rule in enumerate(ruleset.rules, start=1):
        lines.append(f"{number:>3}  {rule.name:<{width}}  {_action(rule)} when {_condition(rule)}")
        lines.append(f"     {'':<{width}}  {rule.says}")
    named = {code for rule in ruleset.rules for code in rule.when.reason or ()}
    for rule in ruleset.rules:
        unknown = sorted(set(rule.when.reason or ()) - STATION_REASONS)
        if unknown:
            lines.append(f"warning: rule {rule.name}: the station gives no reason {', '.join(unknown)} (misspelt?)")
    left = sorted(STATION_REASONS - named)
    if left:
        lines.append(f"no rule names {', '.join(left)}: an item with one of these goes to INSPECT (fail safe)")
    lines.append("fail safe: a reason or threat detection no rule handles, or a rule that cannot be evaluated, "
                 "inspects")
    return lines


def _action(rule: Rule) -> str:
    score = "the detection's score" if rule.score == "detection" else f"{rule.score:g}" if rule.score else ""
    if rule.action == "inspect":
        return f"INSPECT, score at least {score}," if score else "INSPECT"
    return f"add {score}" if rule.action == "score" else "note"


def _condition(rule: Rule) -> str:
    when, parts = rule.when, []
    if when.reason is not None:
        parts.append(f"the item carries {' or '.join(when.reason)}")
    if when.detected is not None:
        what = {"threat": "a threat-class object", "any": "any object"}.get(str(when.detected)) \
            or " or ".join(when.detected)
        over = f"scoring {when.min_score:g} or more" if when.min_score is not None else "over the model's threshold"
        parts.append(f"the model detects {what} {over}")
    if when.category is not None:
        parts.append(f"the declared category is {' or '.join(when.category)}")
    if when.sender_country is not None:
        parts.append(f"the sender's country is {' or '.join(when.sender_country)}")
    if when.measure is not None:
        bounds = [f"{word} {bound:g}" for word, bound in (("over", when.over), ("under", when.under))
                  if bound is not None]
        parts.append(f"{when.measure} is {' and '.join(bounds)}")
    needs = when.category is not None or when.sender_country is not None or when.measure is not None
    lacking = {"inspect": " (an item without that data: INSPECT)", "skip": " (an item without that data: skipped)"}
    return " and ".join(parts) + (lacking[rule.if_missing] if needs else "")


def _explain(args: argparse.Namespace) -> int:
    from station.store import Store

    config = load(args)
    path = config.storage.data_dir / "station.db"
    if not path.is_file():
        print(f"{path}: no store here (give --config or --data-dir)", file=sys.stderr)
        return 1
    with Store(path) as store:
        row = store.find_item(args.item)
    if row is None:
        print(f"{args.item}: no such item in {path}", file=sys.stderr)
        return 1
    item = dict(row)
    explanation = json.loads(item.pop("explanation")) if item["explanation"] else None
    item["reasons"] = json.loads(item["reasons"])
    if args.json:
        print(json.dumps({"item": item, "explanation": explanation}))
    else:
        for line in explain_lines(item, explanation):
            print(line)
    return 0


def explain_lines(item: dict[str, Any], explanation: dict[str, Any] | None) -> list[str]:
    lines = [f"item {item['item_id'] or item['barcode'] or '(no id)'}  uid {item['uid']}  "
             f"scan {item['scan_id'] or '-'}",
             (f"decision {item['decision']}  score {item['score']:.2f}  routed {item['routed']}  "
              f"rules {item['rules_version']}  model {item['model_hash'] or '-'}")]
    if explanation is None:
        lines.append(f"no rule trace stored (decided by {item['rules_version']}); reasons:")
        lines += [f"  {r['code']:<22}  {r.get('detail', '')}" for r in item["reasons"]]
        return lines
    trace = explanation["trace"]
    lines.append("why:" if trace else "why: no rule matched, so nothing asked for inspection")
    if trace and item["decision"] == "CLEAR":
        lines.append("  (cleared: no rule asked for inspection and the score stayed under the rule set's threshold)")
    for hit in trace:
        effect = "note" if hit["action"] == "note" else f"{hit['action']} +{hit['score']:.2f}"
        lines.append(f"  {hit['rule']:<28}  {effect:<14}  {hit['says']}")
        for reason in hit["reasons"]:
            field = f"  [{reason['field']}]" if reason.get("field") else ""
            lines.append(f"      {reason['code']:<22}  {reason['detail']}{field}")
    evidence = explanation.get("evidence") or {}
    lines.append("evidence:")
    for key, value in evidence.items():
        if value in (None, (), []):
            continue
        if key == "detections":
            value = ", ".join(f"{d['label']} {d['score']:.2f}{' (threat)' if d['threat'] else ''}" for d in value)
        elif isinstance(value, dict):
            value = f"{value['code']} {value['detail']}".strip()
        elif isinstance(value, list):
            value = "; ".join(f"{r['code']} {r['detail']}".strip() for r in value)
        lines.append(f"  {key:<20}  {value}")
    return lines
