"""Verdicts, the review queue, the item page and the history search, on real SQLite files.

A verdict, its message and its audit row land together or not at all; refusals store nothing; an undo is
the giver's, within 30 s, once; the search returns exactly what a plain filter of the same data returns,
and every filter it offers is answered from an index (`seed_history` builds the 100,000 items a benchmark
times it on).
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from station import reviews
from station.domain import Detected, Evidence, Reason
from station.ead.record import EadRecord
from station.ead.s10 import make_s10
from station.reviews import VerdictError
from station.rules import load_rules
from station.store import ItemRow, OutboxMessage, Store
from tests.station.ead.test_ead_record import record_dict

SITE, LANE = "lhr", "lane-1"
TOPIC = f"screening/v1/{SITE}/{LANE}/items/verdict"
T0 = 1_790_000_000.0  # routed_at of the first seeded item (Unix seconds)


def row(uid: str, decision: str = "INSPECT", *, threat: bool = True, reasons: tuple[str, ...] = ("THREAT_DETECTED",),
        item_id: str | None = "RR473124829GB", routed_at: float = T0, explanation: str | None = None) -> ItemRow:
    detections = (("gun", 0.91, True, (1.0, 2.0, 3.0, 4.0)),) if threat else (("laptop", 0.8, False, (0, 0, 9, 9)),)
    return ItemRow(uid=uid, track_id=1, item_id=item_id, barcode=item_id, scan_id=f"scan-{uid}", image_path=None,
                   image_sha256="ab" * 32, decision=decision, routed=decision, score=0.9 if threat else 0.1,
                   reasons=[{"code": c, "detail": f"{c.lower()} detail"} for c in reasons], ead_status="found",
                   ead_version=1, model_hash="model-1", rules_version="builtin-1", decision_latency_ms=12.0,
                   routed_at=routed_at, detections=detections, explanation=explanation)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "station.db") as opened:
        yield opened


def give(store: Store, item: int, verdict: str, by: str = "alice", **kw: Any) -> reviews.Verdict:
    return reviews.record_verdict(store, item, verdict, by, topic=TOPIC, site=SITE, lane=LANE, **kw)


def undo(store: Store, verdict_id: int, by: str = "alice", **kw: Any) -> reviews.Verdict:
    return reviews.undo_verdict(store, verdict_id, by, topic=TOPIC, site=SITE, lane=LANE, **kw)


def counts(store: Store) -> tuple[int, ...]:
    """(verdicts, outbox messages, audit rows)."""
    tables = ("verdicts", "outbox", "audit")
    return tuple(int(store.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in tables)


# ---- giving a verdict ------------------------------------------------------------------------------


def test_a_verdict_is_stored_with_its_message_and_its_audit_row(store: Store) -> None:
    pk = store.record_item(row("u1"), [])
    given_ = give(store, pk, "THREAT", threat_class="gun", note="under the lining", shown_at=T0 + 10, now=T0 + 14.5)
    assert counts(store) == (1, 1, 1)
    (message,) = store.outbox_batch()
    assert message.topic == TOPIC and message.msg_id == f"u1/verdict/{given_.id}"
    payload = json.loads(message.payload)
    assert payload == {
        "msg_id": f"u1/verdict/{given_.id}", "schema": "screening/v1/item-verdict", "site": SITE, "lane": LANE,
        "uid": "u1", "item_id": "RR473124829GB", "scan_id": "scan-u1", "image_sha256": "ab" * 32,
        "verdict_id": given_.id, "verdict": "THREAT", "threat_class": "gun", "reason_code": None,
        "note": "under the lining", "by": "alice", "at": "2026-09-21T14:13:34.500000+00:00",
        "shown_at": "2026-09-21T14:13:30+00:00", "decision_s": 4.5, "override": False,
        "machine": {"decision": "INSPECT", "reasons": ["THREAT_DETECTED"], "model_hash": "model-1",
                    "rules_version": "builtin-1", "revision": 1},
        "undo_of": None,
    }
    (audit,) = store.db.execute("SELECT who, action FROM audit").fetchall()
    assert tuple(audit) == ("alice", f"verdict {pk} (RR473124829GB) THREAT gun")
    assert store.verify_audit() == (1, None)


def test_an_override_carries_its_reason(store: Store) -> None:
    pk = store.record_item(row("u1"), [])
    given_ = give(store, pk, "FALSE_ALARM", reason_code="BENIGN_LOOKALIKE")
    assert given_.override
    payload = json.loads(store.outbox_batch()[0].payload)
    assert payload["override"] is True and payload["reason_code"] == "BENIGN_LOOKALIKE"
    assert payload["shown_at"] is None and payload["decision_s"] is None
    no_threat = store.record_item(row("u2", threat=False, reasons=("VAGUE_DESCRIPTION",)), [])
    assert give(store, no_threat, "THREAT", threat_class="knife", reason_code="DETECTOR_MISSED").override
    assert not give(store, store.record_item(row("u3", threat=False), []), "CLEARED").override  # agrees


def test_when_the_message_cannot_be_queued_nothing_of_the_three_is_stored(store: Store) -> None:
    pk = store.record_item(row("u1"), [])
    store.enqueue([OutboxMessage("u1/verdict/1", "t", "{}")])  # the msg_id the verdict will want
    with pytest.raises(sqlite3.IntegrityError):
        give(store, pk, "CLEARED", reason_code="OPENED_AND_CHECKED")
    assert counts(store) == (0, 1, 0)
    assert [q.id for q in reviews.queue(store)] == [pk]


@pytest.mark.parametrize("kw, why", [
    ({"verdict": "MAYBE"}, "verdict 'MAYBE': one of CLEARED, THREAT, REFERRED, FALSE_ALARM"),
    ({"verdict": "CLEARED"}, "CLEARED goes against the detector, which found a threat: pick a reason"),
    ({"verdict": "FALSE_ALARM"}, "FALSE_ALARM goes against the detector, which found a threat: pick a reason"),
    ({"verdict": "THREAT"}, "a THREAT verdict needs the threat class"),
    ({"verdict": "THREAT", "threat_class": "Gun!"}, "threat class 'Gun!': 1 to 32 lower-case letters or '_'"),
    ({"verdict": "THREAT", "threat_class": "g" * 33}, "1 to 32 lower-case letters"),
    ({"verdict": "REFERRED", "threat_class": "gun"}, "a threat class goes with a THREAT verdict only"),
    ({"verdict": "CLEARED", "reason_code": "LOOKS_FINE"}, "reason 'LOOKS_FINE': one of BENIGN_LOOKALIKE"),
    ({"verdict": "CLEARED", "reason_code": "OTHER"}, "reason OTHER needs a note"),
    ({"verdict": "CLEARED", "reason_code": "OTHER", "note": "  "}, "reason OTHER needs a note"),
    ({"verdict": "REFERRED", "note": "x" * 501}, "the note has 501 characters: at most 500"),
    ({"verdict": "REFERRED", "by": ""}, "a verdict needs the operator"),
    ({"verdict": "REFERRED", "shown_at": float("nan")}, "not a time"),
])
def test_a_bad_verdict_is_refused_and_stores_nothing(store: Store, kw: dict[str, Any], why: str) -> None:
    pk = store.record_item(row("u1"), [])
    with pytest.raises(VerdictError, match=re.escape(why)):
        give(store, pk, **kw)
    assert counts(store) == (0, 0, 0)


def test_unknown_cleared_and_judged_items_are_refused(store: Store) -> None:
    clear = store.record_item(row("c", "CLEAR", threat=False, reasons=()), [])
    with pytest.raises(VerdictError, match="there is no item 999"):
        give(store, 999, "REFERRED")
    with pytest.raises(VerdictError, match=f"item {clear} was cleared by the lane"):
        give(store, clear, "REFERRED")
    pk = store.record_item(row("u1"), [])
    first = give(store, pk, "REFERRED")
    with pytest.raises(VerdictError, match=f"item {pk} has a verdict already: REFERRED by alice"):
        give(store, pk, "THREAT", by="bob", threat_class="gun")
    assert counts(store) == (1, 1, 1)
    with pytest.raises(sqlite3.IntegrityError):  # and the schema holds it, whoever writes
        store.db.execute("INSERT INTO verdicts (item, verdict, by, at) VALUES (?, 'CLEARED', 'x', 0)", (pk,))
    assert first.note is None and give(store, store.record_item(row("u2"), []), "REFERRED", note="").note is None


# ---- undoing it ------------------------------------------------------------------------------------


def test_the_giver_undoes_within_30_s_and_the_item_is_back_in_the_queue(store: Store) -> None:
    pk = store.record_item(row("u1"), [])
    first = give(store, pk, "THREAT", threat_class="gun", now=T0)
    assert reviews.queue(store) == []
    undone = undo(store, first.id, now=T0 + 29)
    assert undone.undone and undone.undone_by == "alice" and undone.undone_at == T0 + 29
    assert [q.id for q in reviews.queue(store)] == [pk] and reviews.pending_count(store) == 1
    message = store.outbox_batch()[1]
    assert message.msg_id == f"u1/verdict/{first.id}/undo" and message.topic == TOPIC
    payload = json.loads(message.payload)
    assert (payload["verdict"], payload["undo_of"], payload["verdict_id"], payload["by"]) == \
        ("UNDONE", first.id, first.id, "alice")
    assert payload["schema"] == "screening/v1/item-verdict" and payload["threat_class"] is None
    again = give(store, pk, "CLEARED", reason_code="BENIGN_LOOKALIKE", now=T0 + 40)
    view = reviews.item_view(store, pk)
    assert view is not None and [(v.id, v.undone) for v in view.verdicts] == [(first.id, True), (again.id, False)]
    assert view.current_verdict == again
    assert counts(store) == (2, 3, 3) and store.verify_audit() == (3, None)
    actions = [r[0] for r in store.db.execute("SELECT action FROM audit ORDER BY id")]
    assert actions[1] == f"undo verdict {first.id} on {pk} (RR473124829GB) THREAT"


@pytest.mark.parametrize("by, at, why", [
    ("bob", T0 + 5, "only alice, who gave it, may undo it"),
    ("alice", T0 + 42, r"the 30 s to undo it have passed \(42 s ago\)"),
])
def test_undo_by_another_or_too_late_is_refused(store: Store, by: str, at: float, why: str) -> None:
    given_ = give(store, store.record_item(row("u1"), []), "REFERRED", now=T0)
    with pytest.raises(VerdictError, match=why):
        undo(store, given_.id, by=by, now=at)
    assert counts(store) == (1, 1, 1) and reviews.queue(store) == []
    reviews.audit_refusal(store, by, f"undo verdict {given_.id}", "refused")
    assert store.verify_audit() == (2, None)


def test_an_undo_is_done_once_and_an_unknown_verdict_is_refused(store: Store) -> None:
    given_ = give(store, store.record_item(row("u1"), []), "REFERRED", now=T0)
    undo(store, given_.id, now=T0 + 1)
    with pytest.raises(VerdictError, match=f"verdict {given_.id} was undone already, by alice"):
        undo(store, given_.id, now=T0 + 2)
    with pytest.raises(VerdictError, match="there is no verdict 77"):
        undo(store, 77)
    assert counts(store) == (1, 2, 2)


def test_audit_rows_from_verdicts_and_from_add_audit_make_one_chain(store: Store) -> None:
    pks = [store.record_item(row(f"u{n}"), []) for n in range(4)]
    store.add_audit("tech", "lane start")
    for n, pk in enumerate(pks):
        given_ = give(store, pk, "REFERRED", by=f"op{n % 2}", now=T0 + n)
        if n % 2:
            undo(store, given_.id, by=f"op{n % 2}", now=T0 + n + 1)
        store.add_audit("tech", f"alarm ack {n}")
    assert store.verify_audit() == (11, None)


# ---- the queue -------------------------------------------------------------------------------------


def test_the_queue_is_inspect_items_without_a_verdict_oldest_first(store: Store) -> None:
    pks = [store.record_item(row(f"u{n}", "CLEAR" if n == 2 else "INSPECT"), []) for n in range(6)]
    give(store, pks[1], "REFERRED")
    queued = reviews.queue(store)
    assert [q.id for q in queued] == [pks[0], pks[3], pks[4], pks[5]]
    assert queued[0] == reviews.QueueItem(pks[0], "u0", "RR473124829GB", "INSPECT", T0, 0.9, ("THREAT_DETECTED",))
    assert [q.id for q in reviews.queue(store, limit=2, after_id=pks[0])] == [pks[3], pks[4]]
    assert reviews.pending_count(store) == 4 and reviews.newest_pending_id(store) == pks[5]
    assert reviews.count_pending_after(store, pks[3]) == 2 and reviews.count_pending_after(store, pks[5]) == 0
    give(store, pks[5], "REFERRED")
    assert reviews.newest_pending_id(store) == pks[4]
    with pytest.raises(VerdictError, match="limit 0"):
        reviews.queue(store, limit=0)


def test_an_empty_queue(store: Store) -> None:
    assert reviews.queue(store) == [] and reviews.pending_count(store) == 0 and reviews.newest_pending_id(store) == 0


# ---- the item page ---------------------------------------------------------------------------------


def test_the_item_view_has_the_declaration_the_rules_that_fired_and_the_weights(store: Store) -> None:
    record = EadRecord.model_validate(record_dict(total_gross_weight_kg=0.6))
    store.upsert_ead(record, "test")
    evidence = Evidence(detections=(Detected("gun", 0.91, (1.0, 2.0, 3.0, 4.0), True),), ead_found=True,
                        ead_findings=(Reason("WEIGHT_MISMATCH", "2.40 kg weighed, 0.60 kg declared"),),
                        measured_weight_kg=2.4, declared_weight_kg=0.6, declared_category="sale_of_goods",
                        sender_country="CN")
    decision = load_rules().decide(evidence)
    assert decision.decision == "INSPECT"
    pk = store.record_item(row("u1", reasons=tuple(r.code for r in decision.reasons),
                               explanation=decision.explanation_json()), [])
    view = reviews.item_view(store, pk)
    assert view is not None
    assert view.declaration == record and view.declared_weight_kg == 0.6 and view.measured_weight_kg == 2.4
    assert view.detections == (Detected("gun", 0.91, (1.0, 2.0, 3.0, 4.0), True),) and view.machine_threat
    assert view.ead_findings == (Reason("WEIGHT_MISMATCH", "2.40 kg weighed, 0.60 kg declared"),)
    assert [(h.rule, h.says) for h in view.rules_fired] == [(h.rule, h.says) for h in decision.trace]
    assert {h.rule for h in view.rules_fired} and all(h.says for h in view.rules_fired)
    assert [r.code for r in view.reasons] == [r.code for r in decision.reasons]
    assert (view.routed, view.model_hash, view.rules_version, view.revision) == ("INSPECT", "model-1", "builtin-1", 1)
    assert view.verdicts == () and view.current_verdict is None
    assert reviews.item_view(store, 999) is None


def test_an_item_without_explanation_or_declaration_still_has_a_view(store: Store) -> None:
    pk = store.record_item(row("u1", threat=False, item_id=None), [])
    view = reviews.item_view(store, pk)
    assert view is not None and view.declaration is None and view.rules_fired == () and view.ead_findings == ()
    assert view.measured_weight_kg is None and view.declared_weight_kg is None and not view.machine_threat


# ---- the reason index ------------------------------------------------------------------------------


def reason_index(store: Store) -> set[tuple[int, str]]:
    return {(r[0], r[1]) for r in store.db.execute("SELECT item, code FROM item_reasons")}


def test_the_reason_index_follows_revise_item(store: Store) -> None:
    first = row("u1", reasons=("EAD_MISSING", "THREAT_DETECTED"))
    pk = store.record_item(first, [])
    other = store.record_item(row("u2", reasons=("EAD_MISSING",)), [])
    assert reason_index(store) == {(pk, "EAD_MISSING"), (pk, "THREAT_DETECTED"), (other, "EAD_MISSING")}
    revised = replace(first, reasons=[{"code": "THREAT_DETECTED", "detail": "gun at 0.91"},
                                      {"code": "WEIGHT_MISMATCH", "detail": "2.4 kg"}])
    store.revise_item(revised, 2, [])
    assert reason_index(store) == {(pk, "THREAT_DETECTED"), (pk, "WEIGHT_MISMATCH"), (other, "EAD_MISSING")}
    assert [h.id for h in reviews.search(store, reason="EAD_MISSING")] == [other]
    assert [h.id for h in reviews.search(store, reason="WEIGHT_MISMATCH")] == [pk]


def test_a_malformed_reason_never_stops_an_item_being_stored(store: Store) -> None:
    odd: Any = ["text", {"detail": "no code"}, {"code": 7}, {"code": {"nested": 1}}, {"code": "JAM"}, {"code": "JAM"}]
    pk = store.record_item(replace(row("u1"), reasons=odd), [])
    assert reason_index(store) == {(pk, "JAM")}
    store.db.execute("UPDATE items SET reasons = 'not json' WHERE id = ?", (pk,))
    assert reason_index(store) == set()


OLD_SCHEMA = """
CREATE TABLE items (id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, track_id INTEGER NOT NULL, item_id TEXT,
    barcode TEXT, scan_id TEXT, image_path TEXT, image_sha256 TEXT,
    decision TEXT NOT NULL CHECK (decision IN ('CLEAR', 'INSPECT')), routed TEXT NOT NULL, score REAL NOT NULL,
    reasons TEXT NOT NULL, ead_status TEXT NOT NULL, ead_version INTEGER, model_hash TEXT, rules_version TEXT NOT NULL,
    decision_latency_ms REAL, routed_at REAL NOT NULL);
CREATE TABLE detections (item INTEGER NOT NULL REFERENCES items (id), label TEXT NOT NULL, score REAL NOT NULL,
    threat INTEGER NOT NULL, x1 REAL, y1 REAL, x2 REAL, y2 REAL);
CREATE TABLE audit (id INTEGER PRIMARY KEY, at REAL NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL);
INSERT INTO items (uid, track_id, decision, routed, score, reasons, ead_status, rules_version, routed_at) VALUES
    ('old-1', 1, 'INSPECT', 'INSPECT', 0.9, '[{"code": "JAM", "detail": "belt"}, {"code": "ESTOP", "detail": ""}]',
     'not_looked_up', 'builtin-1', 1.0),
    ('old-2', 2, 'CLEAR', 'CLEAR', 0.0, '[]', 'found', 'builtin-1', 2.0);
"""


def test_a_database_from_before_verdicts_opens_with_its_reasons_indexed(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "station.db") as raw:
        raw.executescript(OLD_SCHEMA)
    with Store(tmp_path / "station.db") as store:
        assert reason_index(store) == {(1, "JAM"), (1, "ESTOP")}
        assert [h.id for h in reviews.search(store, reason="ESTOP")] == [1]
        assert [q.id for q in reviews.queue(store)] == [1]
        give(store, 1, "REFERRED")
        assert reviews.search(store, verdict="REFERRED")[0].verdict_by == "alice"
    with Store(tmp_path / "station.db") as again:  # opened again: nothing done twice
        assert reason_index(again) == {(1, "JAM"), (1, "ESTOP")}


# ---- the history search ----------------------------------------------------------------------------

CODES = ("THREAT_DETECTED", "EAD_MISSING", "WEIGHT_MISMATCH", "NO_READ")
IDS = ("RR000000016GB", "RR000000020GB", None)
OPERATORS = ("alice", "bob")


@dataclass
class Model:
    """What the test stored, for the plain filter the search is compared with."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def search(self, **f: Any) -> list[int]:
        def passes(i: dict[str, Any]) -> bool:
            judged = i["verdict"]
            return ((f.get("s10") is None or i["item_id"] == f["s10"])
                    and (f.get("since") is None or i["routed_at"] >= f["since"])
                    and (f.get("until") is None or i["routed_at"] < f["until"])
                    and (f.get("decision") is None or i["decision"] == f["decision"])
                    and (f.get("reason") is None or f["reason"] in i["reasons"])
                    and (f.get("verdict") is None or (judged is None if f["verdict"] == "NONE"
                                                      else judged is not None and judged[0] == f["verdict"]))
                    and (f.get("operator") is None or (judged is not None and judged[1] == f["operator"]))
                    and (f.get("before_id") is None or i["id"] < f["before_id"]))
        return sorted((i["id"] for i in self.items if passes(i)), reverse=True)[:f.get("limit", 100)]


item_strategy = st.fixed_dictionaries({
    "decision": st.sampled_from(("CLEAR", "INSPECT")),
    "reasons": st.lists(st.sampled_from(CODES), max_size=3, unique=True),
    "item_id": st.sampled_from(IDS),
    "routed_at": st.integers(0, 20).map(float),
    "verdicts": st.lists(st.tuples(st.sampled_from(reviews.VERDICTS), st.sampled_from(OPERATORS), st.booleans()),
                         max_size=2),  # (verdict, by, undone afterwards)
})
filter_strategy = st.fixed_dictionaries({}, optional={
    "s10": st.sampled_from(IDS[:2]), "since": st.integers(0, 20).map(float), "until": st.integers(0, 20).map(float),
    "decision": st.sampled_from(("CLEAR", "INSPECT")), "reason": st.sampled_from(CODES),
    "verdict": st.sampled_from((*reviews.VERDICTS, "NONE")), "operator": st.sampled_from(OPERATORS),
    "limit": st.integers(1, 5), "before_id": st.integers(1, 15)})


def fill(store: Store, specs: list[dict[str, Any]]) -> Model:
    model = Model()
    for n, spec in enumerate(specs):
        pk = store.record_item(row(f"u{n}", spec["decision"], reasons=tuple(spec["reasons"]), item_id=spec["item_id"],
                                   routed_at=spec["routed_at"]), [])
        current = None
        for verdict, by, undone in spec["verdicts"] if spec["decision"] == "INSPECT" else ():
            if current is not None:
                break
            kw = {"threat_class": "gun"} if verdict == "THREAT" else {"reason_code": "OPENED_AND_CHECKED"}
            given_ = give(store, pk, verdict, by, now=T0, **kw)
            current = (verdict, by)
            if undone:
                undo(store, given_.id, by, now=T0 + 1)
                current = None
        model.items.append({"id": pk, **spec, "verdict": current})
    return model


@settings(max_examples=60, deadline=None)
@given(specs=st.lists(item_strategy, max_size=14), filters=st.lists(filter_strategy, min_size=1, max_size=6))
def test_search_returns_exactly_what_a_plain_filter_returns(specs: list[dict[str, Any]],
                                                            filters: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as folder, Store(Path(folder) / "station.db") as store:
        model = fill(store, specs)
        for f in filters:
            found = reviews.search(store, **f)
            assert [h.id for h in found] == model.search(**f), f
            by_id = {i["id"]: i for i in model.items}
            for h in found:
                assert (h.verdict, h.verdict_by) == (by_id[h.id]["verdict"] or (None, None))
                assert list(h.reasons) == by_id[h.id]["reasons"]


def test_search_refuses_filters_it_does_not_know(store: Store) -> None:
    with pytest.raises(VerdictError, match="decision 'MAYBE'"):
        reviews.search(store, decision="MAYBE")
    with pytest.raises(VerdictError, match="verdict 'GOOD'"):
        reviews.search(store, verdict="GOOD")
    assert reviews.search(store, s10="rr000000016gb ") == []  # and reads an id as typed


def plan(store: Store, **filters: Any) -> list[str]:
    query = reviews._query(store.db, filters, 100)
    assert query is not None
    return [r["detail"] for r in store.db.execute("EXPLAIN QUERY PLAN " + query[0], query[1])]


@pytest.mark.parametrize("filters", [
    {"s10": "RR000000016GB"}, {"since": T0 + 3600}, {"until": T0 + 3600}, {"since": T0, "until": T0 + 3600},
    {"decision": "INSPECT"}, {"reason": "EAD_MISSING"}, {"verdict": "THREAT"}, {"operator": "alice"},
    {"decision": "INSPECT", "verdict": "NONE", "since": T0}, {"reason": "WEIGHT_MISMATCH", "operator": "bob"},
    {"verdict": "FALSE_ALARM", "operator": "chen", "since": T0, "until": T0 + 86400, "before_id": 1500},
    {"s10": "RR000000016GB", "since": T0}, {"reason": "EAD_MISSING", "decision": "CLEAR", "before_id": 1000},
], ids=lambda f: "+".join(f))
def test_each_search_filter_is_answered_from_an_index(tmp_path: Path, filters: dict[str, Any]) -> None:
    """On a seeded store (no ANALYZE statistics, as on a station): the items are reached through an index
    (items_item_id, items_decision, a list of ids from item_reasons or from the partial indexes of the
    verdicts not undone, or the id range of a time range), never by scanning the table, and a page is
    never sorted; a time range's ids are read off items_routed_at."""
    with Store(tmp_path / "station.db") as store:
        seed_history(store, 2000, seed=1)
        steps = plan(store, **filters)
        assert not any(s.startswith("SCAN") for s in steps), steps
        assert not any("TEMP B-TREE" in s for s in steps), steps
        assert "SEARCH v USING INDEX verdicts_current (item=?) LEFT-JOIN" in steps, steps
        bounds = "EXPLAIN QUERY PLAN SELECT min(id), max(id) FROM items WHERE routed_at >= ? AND routed_at < ?"
        assert [r["detail"] for r in store.db.execute(bounds, (0, 1))] == \
            ["SEARCH items USING COVERING INDEX items_routed_at (routed_at>? AND routed_at<?)"]


def test_without_filters_or_with_only_not_judged_the_page_walks_the_items_newest_first(store: Store) -> None:
    """Nothing to look up: the newest items in id order, each one's current verdict found by index (for
    NOT_JUDGED, until a page of items without one is found)."""
    for filters in ({}, {"verdict": "NONE"}, {"before_id": 10}):
        steps = plan(store, **filters)
        assert steps[0] in ("SCAN i", "SEARCH i USING INTEGER PRIMARY KEY (rowid<?)"), steps
        assert steps[1:] == ["SEARCH v USING INDEX verdicts_current (item=?) LEFT-JOIN"], steps


def test_a_time_range_holding_no_item_answers_at_once(store: Store) -> None:
    store.record_item(row("u1", routed_at=T0), [])
    assert reviews.search(store, since=T0 + 1) == [] and reviews.search(store, until=T0) == []
    assert [h.uid for h in reviews.search(store, since=T0, until=T0 + 1)] == ["u1"]


# ---- a history to measure on -----------------------------------------------------------------------

SEED_CODES = (("THREAT_DETECTED", 4), ("EAD_MISSING", 5), ("VAGUE_DESCRIPTION", 3), ("WEIGHT_MISMATCH", 2),
              ("HS_CODE_MISSING", 2), ("NO_READ", 1), ("DECISION_LATE", 1), ("PLC_FAULT", 1))
SEED_OPERATORS = ("alice", "bob", "chen", "dana", "emeka", "farah")


def seed_history(store: Store, n: int, seed: int = 0, *, inspect_share: float = 0.15,
                 judged_share: float = 0.95) -> range:
    """Append `n` items (one every 2.5 s from T0) with their detections, reasons and verdicts, in one
    transaction, as a station's history looks: mostly CLEAR, `inspect_share` INSPECT, `judged_share` of
    those judged (a few undone and judged again), six operators. Written with executemany: 100,000
    items take a few seconds. Returns the items' ids."""
    rng = random.Random(seed)
    codes, weights = zip(*SEED_CODES, strict=True)
    first = int(store.db.execute("SELECT coalesce(max(id), 0) + 1 FROM items").fetchone()[0])
    items, detections, verdicts = [], [], []
    for pk in range(first, first + n):
        inspect = rng.random() < inspect_share
        reasons = sorted(set(rng.choices(codes, weights, k=rng.randint(1, 3)))) if inspect else []
        threat = "THREAT_DETECTED" in reasons
        s10 = None if "NO_READ" in reasons else make_s10("RR", rng.randrange(10**8), "GB")
        at = T0 + (pk - first) * 2.5
        items.append((pk, f"seed-{seed}-{pk}", pk % 1000, s10, s10, f"scan-{pk}", "INSPECT" if inspect else "CLEAR",
                      "INSPECT" if inspect else "CLEAR", 0.9 if inspect else 0.05,
                      json.dumps([{"code": c, "detail": ""} for c in reasons]), "found", 1, "model-1", "builtin-1",
                      8.0, at))
        if threat or rng.random() < 0.3:
            detections.append((pk, "gun" if threat else "laptop", 0.8, int(threat), 10.0, 10.0, 50.0, 50.0))
        if inspect and rng.random() < judged_share:
            verdicts.extend(_seed_verdicts(rng, pk, at, threat))
    with store.transaction() as db:
        db.executemany("INSERT INTO items (id, uid, track_id, item_id, barcode, scan_id, decision, routed, score,"
                       " reasons, ead_status, ead_version, model_hash, rules_version, decision_latency_ms,"
                       " routed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", items)
        db.executemany("INSERT INTO detections (item, label, score, threat, x1, y1, x2, y2) VALUES (?,?,?,?,?,?,?,?)",
                       detections)
        db.executemany("INSERT INTO verdicts (item, verdict, threat_class, reason_code, by, at, shown_at, undone_at,"
                       " undone_by) VALUES (?,?,?,?,?,?,?,?,?)", verdicts)
    return range(first, first + n)


def _seed_verdicts(rng: random.Random, pk: int, at: float, threat: bool) -> list[tuple[object, ...]]:
    by = rng.choice(SEED_OPERATORS)
    verdict = rng.choices(reviews.VERDICTS, (6, 1, 1, 3) if threat else (8, 0, 2, 1))[0]
    override = reviews.is_override(verdict, threat)
    one = (pk, verdict, "gun" if verdict == "THREAT" else None, "BENIGN_LOOKALIKE" if override else None, by,
           at + 60, at + 50)
    if rng.random() < 0.03:  # given, undone, given again
        return [(*one, at + 70, by), (*one[:5], at + 80, at + 75, None, None)]
    return [(*one, None, None)]
