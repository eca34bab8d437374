"""Declarative risk rules: the default file decides as the built-in rules did, the engine fails safe,
site overrides change what they say, bad files are reported by file, line, rule and key, and the
`rules check` / `rules explain` commands work on real files and a real store.

(The lane's own properties, run with the default rules file, are in test_lane_core.py.)
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from station.cli.rules import STATION_REASONS, add_rules_commands
from station.config import ConfigError, load_config
from station.domain import Detected, Evidence, Reason
from station.risk import decide
from station.rules import DEFAULT_RULES, FAIL_SAFE, RulesError, RuleSet, load_rules
from station.rules.schema import Rule
from station.store import ItemRow, Store

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_SITE = REPO / "station" / "rules" / "example-site.toml"
DEFAULT = load_rules()
SITE = load_rules(None, EXAMPLE_SITE)

LANE_CODES = ["SCAN_MISSING", "DECISION_LATE", "MULTIPLE_ITEMS", "ITEM_TOO_LONG", "ITEM_MISSING", "UNTRACKED_ITEM",
              "ROUTING_UNCONFIRMED", "GATE_NOT_SET", "ESTOP", "PLC_FAULT", "PLC_LINK_LOST", "PLC_POLL_TOO_SLOW",
              "SCANNER_INTERLOCK", "JAM", "FAULT"]
INFERENCE_CODES = ["MANUAL_ONLY", "IMAGE_ERROR", "INFERENCE_TIMEOUT", "INFERENCE_ERROR"]
EAD_CODES = ["S10_INVALID", "EAD_MISSING", "EAD_INCOMPLETE", "VAGUE_DESCRIPTION", "HS_CODE_MISSING", "HS_CODE_INVALID",
             "VALUE_IMPLAUSIBLE", "TOTALS_INCONSISTENT", "CATEGORY_INCONSISTENT", "WEIGHT_MISMATCH", "CONTENT_MISMATCH"]
LABELS = ["gun", "knife", "blade", "shuriken", "battery", "laptop"]


def reason(codes: list[str]) -> st.SearchStrategy[Reason]:
    return st.builds(Reason, st.sampled_from(codes), st.text(max_size=20), st.none() | st.just("contents[0].description"))


def detected(score: st.SearchStrategy[float]) -> st.SearchStrategy[Detected]:
    return st.builds(Detected, st.sampled_from(LABELS), score, st.just((0.0, 0.0, 9.0, 9.0)), st.booleans())


# The evidence the lane gives today (what the built-in rules were written for).
lane_evidence = st.builds(
    Evidence,
    detections=st.lists(detected(st.floats(0, 1)), max_size=3).map(tuple),
    inference_failure=st.none() | reason(INFERENCE_CODES),
    id_problem=st.none() | reason(["NO_READ", "S10_INVALID"]),
    ead_found=st.none() | st.booleans(),
    lane_problems=st.lists(reason(LANE_CODES), max_size=3).map(tuple),
)

odd_float = st.none() | st.floats(allow_nan=True, allow_infinity=True)
any_code = st.sampled_from(LANE_CODES + INFERENCE_CODES + EAD_CODES) | st.from_regex(r"[A-Z][A-Z_]{0,12}", fullmatch=True)
# Anything a caller could pass: unknown codes, scores that are not numbers, weights of any kind.
any_evidence = st.builds(
    Evidence,
    detections=st.lists(detected(st.floats(allow_nan=True, allow_infinity=True)), max_size=3).map(tuple),
    inference_failure=st.none() | st.builds(Reason, any_code),
    id_problem=st.none() | st.builds(Reason, any_code),
    ead_found=st.none() | st.booleans(),
    lane_problems=st.lists(st.builds(Reason, any_code), max_size=3).map(tuple),
    ead_findings=st.lists(st.builds(Reason, any_code, st.text(max_size=10)), max_size=4).map(tuple),
    measured_weight_kg=odd_float, declared_weight_kg=odd_float, declared_value=odd_float,
    declared_category=st.none() | st.sampled_from(["gift", "documents", "sale_of_goods", "other"]),
    sender_country=st.none() | st.sampled_from(["CN", "GB", "US"]),
)


def pool_codes(ev: Evidence) -> list[str]:
    codes = [r.code for r in (ev.inference_failure, ev.id_problem) if r is not None]
    if ev.id_problem is None and ev.ead_found is False:
        codes.append("EAD_MISSING")
    return codes + [r.code for r in ev.ead_findings + ev.lane_problems]


# ---- the default file reproduces the built-in rules --------------------------------------------


@given(lane_evidence)
def test_default_rules_decide_exactly_as_the_builtin_rules(ev: Evidence) -> None:
    builtin, rules = decide(ev), DEFAULT.decide(ev)
    assert (rules.decision, rules.reasons) == (builtin.decision, builtin.reasons)
    assert rules.score == pytest.approx(builtin.score)
    assert rules.rules_version == "default-4" and builtin.rules_version == "builtin-1"


def test_every_reason_the_station_gives_is_handled_by_a_default_rule() -> None:
    sources = [REPO / "station" / "lane" / "core.py", REPO / "station" / "inference.py"]
    given_codes = {code for path in sources
                   for code in re.findall(r'(?:Reason\(|_enter_fault\(|add_problem\()"([A-Z_]+)"', path.read_text())}
    assert given_codes >= {"SCAN_MISSING", "ESTOP", "IMAGE_ERROR", "NO_READ"}  # the pattern finds them
    assert given_codes | set(EAD_CODES) <= STATION_REASONS
    for code in sorted(STATION_REASONS):
        d = DEFAULT.decide(Evidence(lane_problems=(Reason(code, "x"),)))
        assert "UNHANDLED_REASON" not in {r.code for r in d.reasons}, code
        assert [h.rule for h in d.trace] != [FAIL_SAFE], code


# ---- EAD findings in the default file ----------------------------------------------------------


@pytest.mark.parametrize(("codes", "expected"), [
    (["CONTENT_MISMATCH"], "INSPECT"),
    (["WEIGHT_MISMATCH"], "INSPECT"),
    (["S10_INVALID"], "INSPECT"),
    (["EAD_MISSING"], "INSPECT"),
    (["VAGUE_DESCRIPTION"], "CLEAR"),
    (["VAGUE_DESCRIPTION", "HS_CODE_MISSING"], "CLEAR"),
    (["VAGUE_DESCRIPTION", "HS_CODE_MISSING", "VALUE_IMPLAUSIBLE"], "INSPECT"),  # three stack up
    (["EAD_INCOMPLETE"], "CLEAR"),
    (["EAD_INCOMPLETE", "TOTALS_INCONSISTENT"], "INSPECT"),
])
def test_ead_findings_inspect_alone_or_when_they_stack_up(codes: list[str], expected: str) -> None:
    findings = tuple(Reason(c, f"{c.lower()} here", "contents[0]") for c in codes)
    d = DEFAULT.decide(Evidence(ead_found=True, ead_findings=findings))
    assert d.decision == expected
    assert d.reasons == findings  # passed on as they came, field included, even on a CLEAR
    assert (d.score >= DEFAULT.inspect_threshold) == (expected == "INSPECT")


def test_an_ead_missing_finding_and_a_failed_look_up_give_one_reason() -> None:
    d = DEFAULT.decide(Evidence(ead_found=False, ead_findings=(Reason("EAD_MISSING", "none in the cache"),)))
    assert d.decision == "INSPECT" and [r.code for r in d.reasons] == ["EAD_MISSING"]


# ---- fail safe ---------------------------------------------------------------------------------


@pytest.mark.parametrize("ruleset", [DEFAULT, SITE], ids=["default", "site"])
@given(ev=any_evidence)
def test_any_evidence_gets_a_decision_and_only_a_clean_one_clears(ruleset: RuleSet, ev: Evidence) -> None:
    d = ruleset.decide(ev)
    assert 0.0 <= d.score <= 1.0
    handled = {code for rule in ruleset.rules for code in rule.when.reason or ()}
    unhandled = [c for c in pool_codes(ev) if c not in handled]
    inspecting = {code for rule in ruleset.rules if rule.action == "inspect" for code in rule.when.reason or ()}
    if unhandled:
        assert d.decision == "INSPECT"
        assert {"UNHANDLED_REASON", *unhandled} <= {r.code for r in d.reasons}
    if inspecting & set(pool_codes(ev)) or any(det.threat for det in ev.detections):
        assert d.decision == "INSPECT"
    if d.decision == "CLEAR":
        assert d.score < ruleset.inspect_threshold
        assert not any(hit.action == "inspect" for hit in d.trace)
    else:
        assert d.score >= ruleset.inspect_threshold
        assert d.reasons, "every INSPECT says why"


@st.composite
def rule_dicts(draw: st.DrawFn) -> dict[str, Any]:
    when: dict[str, Any] = {}
    if draw(st.booleans()):
        when["reason"] = draw(st.lists(any_code, min_size=1, max_size=3))
    if draw(st.booleans()):
        when["detected"] = draw(st.sampled_from(["threat", "any", ["knife"], ["gun", "battery"]]))
        if draw(st.booleans()):
            when["min_score"] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        when["category"] = draw(st.sampled_from(["gift", ["documents", "other"]]))
    if draw(st.booleans()) or not when:
        when["measure"] = draw(st.sampled_from(["measured_weight_kg", "weight_difference_kg", "weight_difference_ratio",
                                                "declared_value"]))
        when[draw(st.sampled_from(["over", "under"]))] = draw(st.floats(-10, 100))
    action = draw(st.sampled_from(["inspect", "score", "note"]))
    rule: dict[str, Any] = {"name": f"r{draw(st.integers(0, 10**6))}", "says": "a rule", "when": when, "action": action,
                            "if_missing": draw(st.sampled_from(["inspect", "skip"]))}
    if action == "score" or (action == "inspect" and draw(st.booleans())):
        rule["score"] = "detection" if "detected" in when and draw(st.booleans()) else draw(st.floats(0, 1))
    return rule


def picks(rule: Rule, det: Detected) -> bool:
    wanted, floor = rule.when.detected, rule.when.min_score
    if wanted is None or (wanted == "threat" and not det.threat) or (isinstance(wanted, tuple) and det.label not in wanted):
        return False
    return floor is None or not math.isfinite(det.score) or min(1.0, det.score) >= floor


@given(rules=st.lists(rule_dicts(), min_size=1, max_size=5, unique_by=lambda r: r["name"]),
       threshold=st.floats(0.01, 1), ev=any_evidence)
def test_any_rule_set_fails_safe_on_any_evidence(rules: list[dict[str, Any]], threshold: float, ev: Evidence) -> None:
    ruleset = RuleSet("fuzz-1", threshold, tuple(Rule.model_validate(r) for r in rules))
    d = ruleset.decide(ev)
    handled = {r.code for hit in d.trace if hit.rule != FAIL_SAFE for r in hit.reasons}
    matched = [rule for rule in ruleset.rules if rule.name in {hit.rule for hit in d.trace}]
    if d.decision == "CLEAR":
        assert set(pool_codes(ev)) <= handled, "a reason no matching rule handled was cleared"
        for det in ev.detections:
            if det.threat:  # some matching rule picked this detection up
                assert any(picks(rule, det) for rule in matched), det
        assert d.score < threshold and not any(hit.action == "inspect" for hit in d.trace)
    else:
        assert d.score >= threshold and d.reasons


def test_a_rule_that_needs_data_the_item_lacks_inspects_unless_it_says_skip() -> None:
    scale = {"name": "scale", "says": "The scale disagrees with the declaration.", "action": "inspect",
             "when": {"measure": "weight_difference_ratio", "over": 0.5}}
    strict = RuleSet("t-1", 0.5, (Rule.model_validate(scale),))
    lenient = RuleSet("t-1", 0.5, (Rule.model_validate({**scale, "if_missing": "skip"}),))
    no_scale = Evidence(declared_weight_kg=1.0)
    d = strict.decide(no_scale)
    assert d.decision == "INSPECT" and [r.code for r in d.reasons] == ["RULE_NOT_EVALUATED"]
    assert "needs weight_difference_ratio" in d.reasons[0].detail
    assert lenient.decide(no_scale).decision == "CLEAR"
    heavy = lenient.decide(Evidence(declared_weight_kg=1.0, measured_weight_kg=1.8))
    assert heavy.decision == "INSPECT" and heavy.reasons == (Reason("SCALE", "weight_difference_ratio 0.8, over 0.5"),)
    assert lenient.decide(Evidence(declared_weight_kg=1.0, measured_weight_kg=1.2)).decision == "CLEAR"
    # Evidence of the wrong type (a caller's bug) makes the rule fail: it inspects, it does not crash.
    broken = lenient.decide(Evidence(declared_weight_kg=1.0, measured_weight_kg="heavy"))  # type: ignore[arg-type]
    assert broken.decision == "INSPECT" and "failed: TypeError" in broken.reasons[0].detail


def test_a_threat_detection_no_rule_picks_up_inspects() -> None:
    knives_only = RuleSet("t-1", 0.5, (Rule.model_validate(
        {"name": "sure-knife", "says": "A knife, surely.", "when": {"detected": ["knife"], "min_score": 0.8},
         "action": "inspect", "score": "detection"}),))
    sure, unsure = (Detected("knife", s, (0, 0, 1, 1), True) for s in (0.9, 0.7))
    assert knives_only.decide(Evidence(detections=(sure,))).reasons == (Reason("SURE_KNIFE", "knife at 0.90"),)
    d = knives_only.decide(Evidence(detections=(unsure,)))
    assert d.decision == "INSPECT" and [r.code for r in d.reasons] == ["UNHANDLED_DETECTION"]
    nan = knives_only.decide(Evidence(detections=(Detected("knife", math.nan, (0, 0, 1, 1), True),)))
    assert nan.decision == "INSPECT" and nan.score == 1.0  # a score that is not a number counts as certain


# ---- site overrides ----------------------------------------------------------------------------


def findings(*codes: str) -> Evidence:
    return Evidence(ead_found=True, ead_findings=tuple(Reason(c) for c in codes), declared_category="sale_of_goods")


def test_the_example_site_changes_what_it_says_it_changes() -> None:
    assert SITE.version == "default-4+site-EXAMPLE-1"
    names = [r.name for r in SITE.rules]
    assert "hs-code-invalid" not in names and names[-3:] == ["hs-code-invalid-inspected", "valuable-gift", "scale-disagrees"]
    cases = [  # (evidence, default decision, site decision)
        (findings("VAGUE_DESCRIPTION", "HS_CODE_MISSING"), "CLEAR", "INSPECT"),  # vague weighs 0.3 here
        (findings("CATEGORY_INCONSISTENT", "HS_CODE_MISSING", "VALUE_IMPLAUSIBLE"), "INSPECT", "CLEAR"),  # a note here
        (findings("HS_CODE_INVALID"), "CLEAR", "INSPECT"),  # disabled and replaced by an inspect rule
        (Evidence(ead_found=True, declared_category="gift", declared_value=60.0), "CLEAR", "CLEAR"),
        (Evidence(ead_found=True, declared_category="gift", declared_value=60.0,
                  ead_findings=(Reason("HS_CODE_MISSING"),)), "CLEAR", "INSPECT"),  # 0.3 + 0.2
        (Evidence(ead_found=True, declared_weight_kg=1.0, measured_weight_kg=1.6), "CLEAR", "INSPECT"),
        (Evidence(ead_found=True), "CLEAR", "CLEAR"),  # no scale, no value: the site's rules skip
    ]
    for ev, by_default, by_site in cases:
        assert (DEFAULT.decide(ev).decision, SITE.decide(ev).decision) == (by_default, by_site), ev
    noted = SITE.decide(findings("CATEGORY_INCONSISTENT"))
    assert noted.decision == "CLEAR" and noted.score == 0 and [r.code for r in noted.reasons] == ["CATEGORY_INCONSISTENT"]


def test_disabling_a_rule_leaves_its_reasons_unhandled_so_they_inspect(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('version = "s-2"\ninspect_threshold = 0.9\ndisable = ["vague-description"]\n'
                    '[change.threat-detected]\nwhen.min_score = 0.4\n'
                    '[[rule]]\nname = "weak-threat"\nsays = "A weak threat signal, for the record."\n'
                    'when = { detected = "threat" }\naction = "note"\n')
    ruleset = load_rules(DEFAULT_RULES, site)
    assert ruleset.version == "default-4+s-2" and ruleset.inspect_threshold == 0.9
    vague = ruleset.decide(findings("VAGUE_DESCRIPTION"))
    assert vague.decision == "INSPECT" and "UNHANDLED_REASON" in {r.code for r in vague.reasons}
    # Three stacked findings (0.6) no longer reach the raised threshold.
    assert ruleset.decide(findings("HS_CODE_MISSING", "HS_CODE_INVALID", "VALUE_IMPLAUSIBLE")).decision == "CLEAR"
    weak = ruleset.decide(Evidence(ead_found=True, detections=(Detected("blade", 0.3, (0, 0, 1, 1), True),)))
    assert weak.decision == "CLEAR" and [h.rule for h in weak.trace] == ["weak-threat"]
    strong = ruleset.decide(Evidence(ead_found=True, detections=(Detected("blade", 0.5, (0, 0, 1, 1), True),)))
    assert strong.decision == "INSPECT" and [h.rule for h in strong.trace] == ["threat-detected", "weak-threat"]


# ---- bad files ---------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD_RULE = '[[rule]]\nname = "any-threat"\nsays = "A threat."\nwhen = { detected = "threat" }\naction = "inspect"\n'


@pytest.mark.parametrize(("text", "message"), [
    ('version = "x-1"\ninspect_threshold = 0.5\n' + GOOD_RULE
     + '\n[[rule]]\nname = "strict"\nsays = "Strict."\nwhen = { detected = "any", min_score = 1.5 }\naction = "inspect"\n',
     r"bad\.toml:12: rule 'strict': when\.min_score: Input should be less than or equal to 1"),
    ('version = "x-1"\ninspect_threshold = 0.5\n' + GOOD_RULE.replace('action = "inspect"', 'action = "score"\nscroe = 0.2'),
     r"bad\.toml:8: rule 'any-threat': scroe: unknown key$"),
    ('version = "x-1"\ninspect_threshold = 0.5\n' + GOOD_RULE.replace('action = "inspect"', 'action = "score"'),
     r"bad\.toml:3: rule 'any-threat': \(the rule\): action 'score' needs a score$"),
    ('version = "x-1"\ninspect_threshold = 0.5\n' + GOOD_RULE + GOOD_RULE,
     r"bad\.toml: \(top level\): rule names must be unique: any-threat$"),
    ('version = "x-1"\n' + GOOD_RULE, r"bad\.toml: inspect_threshold: Field required"),
    ('version = "x-1\ninspect_threshold = 0.5\n' + GOOD_RULE, r"bad\.toml: not valid TOML: .*line 1"),
])
def test_a_bad_rules_file_is_reported_by_file_line_rule_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RulesError, match=message):
        load_rules(write(tmp_path, "bad.toml", text))


@pytest.mark.parametrize(("text", "message"), [
    ('version = "s-1"\ndisable = ["no-such-rule"]\n', r"site\.toml:2: disable: no rule named 'no-such-rule'"),
    ('version = "s-1"\n[change.vague-description]\nscore = 2\n',
     r"site\.toml:3: rule 'vague-description': score: Input should be less than or equal to 1"),
    ('version = "s-1"\n[change.vague-descripton]\nscore = 0.1\n', r"site\.toml:2: change\.vague-descripton: no rule named"),
    ('version = "s-1"\n[change.vague-description]\nscore = 0.1\ndisable = ["hs-code-missing"]\n',
     r"site\.toml:4: rule 'vague-description': disable: unknown key"),  # a top-level key written after a table
    ('version = "s-1"\n' + GOOD_RULE.replace("any-threat", "threat-detected"),
     r"site\.toml:3: rule 'threat-detected': name: there is already a rule of that name"),
    ('version = "s-1"\n' + GOOD_RULE.replace('"threat"', '"threat", under = 3'),
     r"site\.toml:5: rule 'any-threat': when: measure needs over or under"),
    ('version = "s-1"\ndisable = ["vague-description"]\n[change.vague-description]\nscore = 0.1\n',
     r"site\.toml:3: change\.vague-description: the rule is also disabled"),
])
def test_a_bad_overrides_file_is_reported_by_file_line_rule_and_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(RulesError, match=message):
        load_rules(None, write(tmp_path, "site.toml", text))


def test_a_missing_rules_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"nope\.toml: cannot read"):
        load_rules(tmp_path / "nope.toml")


def test_the_rules_section_of_the_configuration(tmp_path: Path) -> None:
    config = write(tmp_path, "station.toml", '[rules]\npath = ""\noverrides = "site.toml"\n')
    rules = load_config(config).rules
    assert rules.path is None and rules.overrides == tmp_path / "site.toml"  # relative to the config file
    with pytest.raises(ConfigError, match=r"station\.toml:2: rules\.overide: unknown key"):
        load_config(write(tmp_path, "station.toml", '[rules]\noveride = "site.toml"\n'))


# ---- the commands ------------------------------------------------------------------------------


def rules_command(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """`station rules ...`, parsed as the station command parses it (station.cli adds these commands)."""
    parser = argparse.ArgumentParser(prog="station")
    add_rules_commands(parser.add_subparsers(required=True))
    parsed = parser.parse_args(list(args))
    code = parsed.handler(parsed)
    out, err = capsys.readouterr()
    return code, out, err


def test_rules_check_prints_the_version_and_what_each_rule_does(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = rules_command("rules", "check", str(DEFAULT_RULES), "--overrides", str(EXAMPLE_SITE), capsys=capsys)
    assert code == 0
    assert "version default-4+site-EXAMPLE-1" in out
    assert re.search(r"scale-disagrees\s+INSPECT when weight_difference_ratio is over 0.5 \(an item without that data: skipped\)", out)
    assert re.search(r"vague-description\s+add 0.3 when the item carries VAGUE_DESCRIPTION", out)
    assert "no rule names" not in out  # the default file names every reason the station gives


def test_rules_check_exits_2_naming_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    site = write(tmp_path, "site.toml", 'version = "s-1"\n[change.threat-detected]\naction = "ignore"\n')
    code, out, err = rules_command("rules", "check", str(DEFAULT_RULES), "--overrides", str(site), capsys=capsys)
    assert code == 2 and out == ""
    assert re.search(r"site\.toml:3: rule 'threat-detected': action: Input should be 'inspect', 'score' or 'note'", err)


def test_rules_check_warns_of_codes_the_station_never_gives(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "r.toml", 'version = "r-1"\ninspect_threshold = 0.5\n'
                 + GOOD_RULE.replace('detected = "threat"', 'reason = ["CONTENT_MISMTACH"]'))
    code, out, _ = rules_command("rules", "check", str(path), capsys=capsys)
    assert code == 0
    assert "warning: rule any-threat: the station gives no reason CONTENT_MISMTACH" in out
    assert re.search(r"no rule names .*CONTENT_MISMATCH.*: an item with one of these goes to INSPECT", out)


def stored_item(store: Store, uid: str, ev: Evidence, ruleset: RuleSet, routed_at: float, explain: bool = True) -> None:
    d = ruleset.decide(ev)
    store.record_item(ItemRow(
        uid=uid, track_id=1, item_id="RR473124829GB", barcode="RR473124829GB", scan_id=f"scan-{uid}", image_path=None,
        image_sha256=None, decision=d.decision, routed=d.decision, score=d.score,
        reasons=[{"code": r.code, "detail": r.detail} for r in d.reasons], ead_status="found", ead_version=1,
        model_hash="abc123", rules_version=d.rules_version, decision_latency_ms=5.0, routed_at=routed_at,
        explanation=d.explanation_json() if explain else None), [])


def test_rules_explain_shows_why_the_newest_item_got_its_decision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Store(tmp_path / "station.db") as store:
        stored_item(store, "u-old", Evidence(ead_found=True), DEFAULT, 1.0)
        stored_item(store, "u-new", Evidence(ead_found=True, declared_category="gift", declared_value=80.0,
                                             detections=(Detected("knife", 0.91, (1, 2, 3, 4), True),),
                                             ead_findings=(Reason("VAGUE_DESCRIPTION", "'gift'", "contents[0].description"),)),
                    SITE, 2.0)
    code, out, _ = rules_command("rules", "explain", "RR473124829GB", "--data-dir", str(tmp_path), capsys=capsys)
    assert code == 0
    assert "uid u-new" in out and "decision INSPECT" in out and "rules default-4+site-EXAMPLE-1" in out
    assert re.search(r"threat-detected\s+inspect \+0.91\s+The X-ray model found a threat object", out)
    assert re.search(r"THREAT_DETECTED\s+knife at 0.91", out)
    assert re.search(r"vague-description\s+score \+0.30.*\n\s+VAGUE_DESCRIPTION\s+'gift'  \[contents\[0\].description\]", out)
    assert re.search(r"valuable-gift\s+score \+0.30", out)
    assert re.search(r"declared_category\s+gift", out) and re.search(r"detections\s+knife 0.91 \(threat\)", out)

    code, out, _ = rules_command("rules", "explain", "scan-u-old", "--data-dir", str(tmp_path), "--json", capsys=capsys)
    shown = json.loads(out)
    assert code == 0 and shown["item"]["uid"] == "u-old" and shown["explanation"]["decision"] == "CLEAR"
    assert shown["explanation"]["trace"] == [] and shown["explanation"]["evidence"]["ead_found"] is True

    code, _, err = rules_command("rules", "explain", "RR000000000GB", "--data-dir", str(tmp_path), capsys=capsys)
    assert code == 1 and "no such item" in err


def test_an_existing_store_gains_the_explanation_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "station.db"
    with sqlite3.connect(path) as db:  # the items table as the previous version made it
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, track_id INTEGER NOT NULL,"
                   " item_id TEXT, barcode TEXT, scan_id TEXT, image_path TEXT, image_sha256 TEXT, decision TEXT NOT NULL,"
                   " routed TEXT NOT NULL, score REAL NOT NULL, reasons TEXT NOT NULL, ead_status TEXT NOT NULL,"
                   " ead_version INTEGER, model_hash TEXT, rules_version TEXT NOT NULL, decision_latency_ms REAL,"
                   " routed_at REAL NOT NULL)")
        db.execute("INSERT INTO items VALUES (1, 'u-1', 1, 'RR473124829GB', 'RR473124829GB', 'scan-1', NULL, NULL,"
                   " 'INSPECT', 'INSPECT', 0.5, '[{\"code\": \"NO_READ\", \"detail\": \"no label\"}]', 'not_looked_up',"
                   " NULL, NULL, 'builtin-1', NULL, 0)")
    with Store(path) as store:
        stored_item(store, "u-2", Evidence(ead_found=False), DEFAULT, 1.0)
        assert [row["explanation"] is None for row in store.items()] == [True, False]
    code, out, _ = rules_command("rules", "explain", "u-1", "--data-dir", str(tmp_path), capsys=capsys)
    assert code == 0
    assert "no rule trace stored (decided by builtin-1)" in out and re.search(r"NO_READ\s+no label", out)
