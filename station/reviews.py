"""Operators' verdicts on INSPECT items: giving and undoing one, the review queue, one item's page, the history.

Plain synchronous functions over a `Store`. In the daemon the writes (`record_verdict`, `undo_verdict`,
`audit_refusal`) run on the writer thread and the reads on a reading connection. Guarantees:
- a verdict (or its undo), its `items/verdict` message, its alert (`end`; an undo's `update` re-opens
  it), its customs screening result (for an item customs referred) and its audit row are one
  transaction: all are stored or none is, and a refusal (`VerdictError`) stores nothing;
- while customs holds an item (hold, do_not_load, screen: `station.customs.active`), CLEARED and
  FALSE_ALARM are refused with the instruction named;
- the checks run inside that transaction (BEGIN IMMEDIATE), so two consoles cannot both judge one item;
  the schema holds it too (one verdict not undone per item, `verdicts_current`);
- an item is in the queue while it is INSPECT and has no verdict that is not undone;
- every read uses an index: the history search answers from 100,000 items in milliseconds.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from dataclasses import dataclass, replace
from typing import Any, Literal

from station import customs, holds
from station.alerts import alert_payload
from station.contract import iso_time
from station.domain import Detected, Reason, RuleHit
from station.ead.record import EadRecord
from station.lane.recorder import stored_result
from station.mqtt_link import Topics
from station.store import OutboxMessage, Store, append_audit, append_outbox

VERDICTS = ("CLEARED", "THREAT", "REFERRED", "FALSE_ALARM")
VERDICT_KEYS = {"C": "CLEARED", "T": "THREAT", "R": "REFERRED", "F": "FALSE_ALARM"}  # the console's keys
VERDICT_MEANINGS = {
    "CLEARED": "cleared: no threat",
    "THREAT": "threat confirmed",
    "REFERRED": "referred to customs",
    "FALSE_ALARM": "false alarm: the detector was wrong",
}
OVERRIDE_REASONS = {  # why an operator goes against the detector (see `is_override`)
    "BENIGN_LOOKALIKE": "a harmless object that looks like a threat on the image (a hair dryer, a toy, a tool)",
    "IMAGE_ARTEFACT": "the detection is an artefact of the image: overlapping objects, clutter, a scanner fault",
    "OPENED_AND_CHECKED": "the item was opened and its contents checked by hand",
    "DECLARATION_EXPLAINS": "the customs declaration explains what the image shows",
    "DETECTOR_MISSED": "the image shows a threat that the detector did not mark",
    "OTHER": "another reason, which the note gives",
}
UNDONE = "UNDONE"  # the `verdict` of the message that takes a verdict back
NOT_JUDGED = "NONE"  # the history filter for items without a verdict
MESSAGE_SCHEMA = "screening/v1/item-verdict"  # the `items/verdict` message's schema
MAX_NOTE = 500
UNDO_WINDOW_S = 30.0
MAX_ROWS = 1000  # the most rows one queue or history page returns
_THREAT_CLASS = re.compile(r"[a-z_]{1,32}")


class VerdictError(ValueError):
    """A verdict, an undo or a history filter that cannot be done; the message tells the operator why."""


@dataclass(frozen=True)
class Verdict:
    id: int
    item: int  # items.id
    verdict: str
    threat_class: str | None
    reason_code: str | None
    note: str | None
    by: str
    at: float
    shown_at: float | None
    undone_at: float | None
    undone_by: str | None
    override: bool  # it goes against the detector (`is_override`)
    methods: tuple[str, ...] = ()  # screening methods used besides the X-ray (station.customs.METHODS)

    @property
    def undone(self) -> bool:
        return self.undone_at is not None


@dataclass(frozen=True)
class QueueItem:
    id: int  # items.id
    uid: str
    item_id: str | None  # S10
    routed: str
    routed_at: float
    score: float
    reasons: tuple[str, ...]  # codes


@dataclass(frozen=True)
class ItemView:
    """Everything the item page shows. `rules_fired` is the decision's rule trace (rule, action, sentence,
    reasons); `verdicts` is every verdict given, oldest first, undone ones included (`Verdict.undone`)."""

    id: int
    uid: str
    track_id: int
    item_id: str | None
    barcode: str | None
    scan_id: str | None
    image_path: str | None
    image_sha256: str | None
    decision: str
    routed: str
    score: float
    reasons: tuple[Reason, ...]
    ead_status: str
    ead_version: int | None
    model_hash: str | None
    rules_version: str
    decision_latency_ms: float | None
    routed_at: float
    revision: int
    detections: tuple[Detected, ...]
    declaration: EadRecord | None
    ead_findings: tuple[Reason, ...]
    rules_fired: tuple[RuleHit, ...]
    declared_weight_kg: float | None
    measured_weight_kg: float | None
    verdicts: tuple[Verdict, ...]
    instructions: tuple[customs.Instruction, ...] = ()  # customs' for its S10 id, in customs' order
    held: customs.Instruction | None = None  # customs' referral in force: no CLEARED, no FALSE_ALARM
    image_pruned_at: float | None = None  # when retention deleted the scan (image_path is None then)
    legal_hold: holds.Hold | None = None  # `station item hold`: retention keeps the item whole

    @property
    def machine_threat(self) -> bool:
        """The detector found a threat on the item (what makes CLEARED or FALSE_ALARM an override)."""
        return any(d.threat for d in self.detections)

    @property
    def current_verdict(self) -> Verdict | None:
        return next((v for v in reversed(self.verdicts) if not v.undone), None)


@dataclass(frozen=True)
class HistoryRow:
    id: int  # items.id
    uid: str
    item_id: str | None
    routed_at: float
    decision: str
    routed: str
    revision: int
    reasons: tuple[str, ...]  # codes
    verdict: str | None  # the current verdict (not undone), None when not judged
    verdict_by: str | None
    verdict_at: float | None
    threat_class: str | None


def is_override(verdict: str, machine_threat: bool) -> bool:
    """Whether `verdict` goes against the detector: it found a threat and the operator clears it or calls
    it a false alarm, or it found none and the operator confirms one. Such a verdict needs a reason."""
    return verdict in ("CLEARED", "FALSE_ALARM") if machine_threat else verdict == "THREAT"


# ---- giving and undoing ---------------------------------------------------------------------------


def record_verdict(store: Store, item_id: int, verdict: str, by: str, *, topic: str, site: str, lane: str,
                   threat_class: str | None = None, reason_code: str | None = None, note: str | None = None,
                   shown_at: float | None = None, now: float | None = None, methods: tuple[str, ...] = (),
                   alert_topic: str | None = None, screening_topic: str | None = None) -> Verdict:
    """Store `by`'s verdict on item `item_id` (items.id) with its message on `topic` and its audit row, in
    one transaction; with `alert_topic`, the item's alert `end`; with `screening_topic`, for an item that
    customs referred, the screening result answering the referral. `methods`: what the operator used
    besides the X-ray. VerdictError, and nothing stored, for an unknown item, a CLEAR item, an item with a
    verdict already (not undone), a CLEARED or FALSE_ALARM while customs holds the item, and a value the
    verdict does not allow."""
    at = time.time() if now is None else now
    note = (note or "").strip() or None
    _check_values(verdict, by, threat_class, reason_code, note, shown_at)
    try:
        methods = customs.check_methods(list(methods))
    except ValueError as err:
        raise VerdictError(str(err)) from err
    with store.transaction() as db:
        item = _inspect_item(db, item_id)
        held = customs.active(db, item["item_id"]) if item["item_id"] else None
        if held is not None and verdict in ("CLEARED", "FALSE_ALARM"):
            raise VerdictError(f"customs holds item {item_id} ({held.type.replace('_', ' ')}, instruction "
                               f"{held.instruction_id} from {held.issued_by}): {verdict} is refused until customs "
                               "releases it; give THREAT or REFERRED")
        threat = _machine_threat(db, item_id)
        override = is_override(verdict, threat)
        if override and reason_code is None:
            found = "found a threat" if threat else "found no threat"
            raise VerdictError(f"{verdict} goes against the detector, which {found}: pick a reason "
                               f"({', '.join(OVERRIDE_REASONS)})")
        verdict_id = db.execute("INSERT INTO verdicts (item, verdict, threat_class, reason_code, note, by, at,"
                                " shown_at, methods) VALUES (?,?,?,?,?,?,?,?,?)",
                                (item_id, verdict, threat_class, reason_code, note, by, at, shown_at,
                                 json.dumps(list(methods)))).lastrowid
        assert verdict_id is not None
        given = Verdict(verdict_id, item_id, verdict, threat_class, reason_code, note, by, at, shown_at, None, None,
                        override, methods)
        payload = _payload(item, given, site, lane)
        append_outbox(db, [OutboxMessage(str(payload["msg_id"]), topic, json.dumps(payload))])
        if alert_topic is not None:  # the alert is dealt with
            append_outbox(db, [_alert(db, item, f"verdict/{verdict_id}", "end", f"verdict: {verdict} by {by}",
                                      Topics(site, lane), alert_topic)])
        if screening_topic is not None:
            append_outbox(db, _screening_result(db, item, given, Topics(site, lane), screening_topic))
        details = " ".join(x for x in (verdict, threat_class, reason_code, *methods) if x)
        append_audit(db, by, f"verdict {item_id} ({item['item_id'] or 'no id'}) {details}", at)
    return given


def undo_verdict(store: Store, verdict_id: int, by: str, *, topic: str, site: str, lane: str,
                 now: float | None = None, window_s: float = UNDO_WINDOW_S, alert_topic: str | None = None) -> Verdict:
    """Take back a verdict: only the operator who gave it, within `window_s` of giving it, once. Marks it
    undone, queues the UNDONE message (and, with `alert_topic`, the alert's `update` that re-opens it)
    and appends the audit row in one transaction; the item is back in the queue. Returns the verdict as
    it is now (undone). A screening result sent to customs stays sent: the next verdict sends another,
    later one for the same referral."""
    at = time.time() if now is None else now
    with store.transaction() as db:
        row = db.execute("SELECT * FROM verdicts WHERE id = ?", (verdict_id,)).fetchone()
        if row is None:
            raise VerdictError(f"there is no verdict {verdict_id}")
        if row["undone_at"] is not None:
            raise VerdictError(f"verdict {verdict_id} was undone already, by {row['undone_by']}")
        if row["by"] != by:
            raise VerdictError(f"only {row['by']}, who gave it, may undo it")
        if at - row["at"] > window_s:
            raise VerdictError(f"the {window_s:g} s to undo it have passed ({at - row['at']:.0f} s ago)")
        db.execute("UPDATE verdicts SET undone_at = ?, undone_by = ? WHERE id = ?", (at, by, verdict_id))
        item = db.execute("SELECT * FROM items WHERE id = ?", (row["item"],)).fetchone()
        undone = replace(_verdict(row, _machine_threat(db, row["item"])), undone_at=at, undone_by=by)
        payload = _payload(item, undone, site, lane)
        append_outbox(db, [OutboxMessage(str(payload["msg_id"]), topic, json.dumps(payload))])
        if alert_topic is not None and item["decision"] == "INSPECT":  # the alert is open again
            append_outbox(db, [_alert(db, item, f"verdict/{verdict_id}/undo", "update", f"verdict undone by {by}",
                                      Topics(site, lane), alert_topic)])
        append_audit(db, by, f"undo verdict {verdict_id} on {row['item']} ({item['item_id'] or 'no id'}) "
                             f"{row['verdict']}", at)
    return undone


def _alert(db: sqlite3.Connection, item: sqlite3.Row, cause: str, event: Literal["update", "end"], change: str,
           topics: Topics, topic: str) -> OutboxMessage:
    """The item's alert message for a verdict (`end`) or its undo (`update`): msg_id `{uid}/alert/{cause}`."""
    payload = alert_payload(stored_result(db, item, topics), msg_id=f"{item['uid']}/alert/{cause}", event=event,
                            changes=[change], thumbnail=None)
    return OutboxMessage(str(payload["msg_id"]), topic, json.dumps(payload))


def _screening_result(db: sqlite3.Connection, item: sqlite3.Row, given: Verdict, topics: Topics,
                      topic: str) -> list[OutboxMessage]:
    """The answer to customs' referral of the item, if customs referred it (now or before)."""
    referral = customs.referral(db, item["item_id"]) if item["item_id"] else None
    if referral is None:
        return []
    before = db.execute("SELECT id FROM verdicts WHERE item = ? AND undone_at IS NOT NULL ORDER BY id DESC LIMIT 1",
                        (item["id"],)).fetchone()
    remarks = "; ".join(x for x in (given.note, f"replaces the result of verdict {before['id']}, undone"
                                    if before else None) if x)
    payload = customs.screening_result(
        referral, item, msg_id=f"{item['uid']}/screening_result/{referral.instruction_id}/{given.id}",
        site=topics.site, lane=topics.lane, verdict=given.verdict, methods=given.methods, person=given.by,
        at=given.at, remarks=remarks)
    return [OutboxMessage(str(payload["msg_id"]), topic, json.dumps(payload))]


def audit_refusal(store: Store, who: str, action: str, why: str, *, now: float | None = None) -> None:
    """Put a refused attempt in the audit chain (`action` as the console words it, `why` the refusal)."""
    store.add_audit(who, f"refused: {action}: {why}", now)


def _check_values(verdict: str, by: str, threat_class: str | None, reason_code: str | None, note: str | None,
                  shown_at: float | None) -> None:
    if verdict not in VERDICTS:
        raise VerdictError(f"verdict {verdict!r}: one of {', '.join(VERDICTS)}")
    if not by:
        raise VerdictError("a verdict needs the operator who gives it")
    if verdict == "THREAT" and threat_class is None:
        raise VerdictError("a THREAT verdict needs the threat class (what the threat is, e.g. gun)")
    if threat_class is not None and verdict != "THREAT":
        raise VerdictError(f"a threat class goes with a THREAT verdict only, not with {verdict}")
    if threat_class is not None and not _THREAT_CLASS.fullmatch(threat_class):
        raise VerdictError(f"threat class {threat_class!r}: 1 to 32 lower-case letters or '_'")
    if reason_code is not None and reason_code not in OVERRIDE_REASONS:
        raise VerdictError(f"reason {reason_code!r}: one of {', '.join(OVERRIDE_REASONS)}")
    if reason_code == "OTHER" and note is None:
        raise VerdictError("reason OTHER needs a note that says what the reason is")
    if note is not None and len(note) > MAX_NOTE:
        raise VerdictError(f"the note has {len(note)} characters: at most {MAX_NOTE}")
    if shown_at is not None and not math.isfinite(shown_at):
        raise VerdictError(f"shown at {shown_at!r}: not a time")


def _inspect_item(db: sqlite3.Connection, item_id: int) -> sqlite3.Row:
    """The item a verdict is for, or VerdictError: unknown, CLEAR, or judged already."""
    item: sqlite3.Row | None = db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
    if item is None:
        raise VerdictError(f"there is no item {item_id}")
    if item["decision"] != "INSPECT":
        raise VerdictError(f"item {item_id} was cleared by the lane ({item['decision']}): there is nothing to judge")
    current = db.execute("SELECT id, verdict, by FROM verdicts WHERE item = ? AND undone_at IS NULL",
                         (item_id,)).fetchone()
    if current is not None:
        raise VerdictError(f"item {item_id} has a verdict already: {current['verdict']} by {current['by']} "
                           f"(verdict {current['id']})")
    return item


def _machine_threat(db: sqlite3.Connection, item: int) -> bool:
    return db.execute("SELECT 1 FROM detections WHERE item = ? AND threat = 1 LIMIT 1", (item,)).fetchone() is not None


def _payload(item: sqlite3.Row, v: Verdict, site: str, lane: str) -> dict[str, object]:
    """The `items/verdict` message; an undo is the same shape, with verdict UNDONE and `undo_of`."""
    undo = v.undone_at is not None
    at = v.undone_at if v.undone_at is not None else v.at
    shown = None if undo or v.shown_at is None else v.shown_at
    return {
        "msg_id": f"{item['uid']}/verdict/{v.id}" + ("/undo" if undo else ""),
        "schema": MESSAGE_SCHEMA,
        "site": site,
        "lane": lane,
        "uid": item["uid"],
        "item_id": item["item_id"],
        "scan_id": item["scan_id"],
        "image_sha256": item["image_sha256"],
        "verdict_id": v.id,
        "verdict": UNDONE if undo else v.verdict,
        "threat_class": None if undo else v.threat_class,
        "reason_code": None if undo else v.reason_code,
        "note": None if undo else v.note,
        "by": v.undone_by if undo else v.by,
        "at": _iso(at),
        "shown_at": None if shown is None else _iso(shown),
        "decision_s": None if shown is None else round(max(0.0, v.at - shown), 3),
        "override": False if undo else v.override,
        "machine": {"decision": item["decision"], "reasons": list(_codes(item["reasons"])),
                    "model_hash": item["model_hash"], "rules_version": item["rules_version"],
                    "revision": item["revision"]},
        "undo_of": v.id if undo else None,
    }


def _iso(at: float) -> str:
    return iso_time(at)


def _codes(reasons_json: str) -> tuple[str, ...]:
    reasons = json.loads(reasons_json)
    return tuple(str(r["code"]) for r in reasons if isinstance(r, dict) and "code" in r)


def _verdict(row: sqlite3.Row, machine_threat: bool) -> Verdict:
    return Verdict(row["id"], row["item"], row["verdict"], row["threat_class"], row["reason_code"], row["note"],
                   row["by"], row["at"], row["shown_at"], row["undone_at"], row["undone_by"],
                   is_override(row["verdict"], machine_threat), tuple(json.loads(row["methods"] or "[]")))


# ---- the queue -----------------------------------------------------------------------------------

def awaiting_verdict(item: str) -> str:
    """SQL, true while the item aliased `item` waits for a verdict: INSPECT, and no verdict not undone (the
    queue's rule; retention keeps such an item whole)."""
    return (f"{item}.decision = 'INSPECT' AND NOT EXISTS"
            f" (SELECT 1 FROM verdicts AS v WHERE v.item = {item}.id AND v.undone_at IS NULL)")


_PENDING = f"FROM items AS i WHERE i.id > ? AND {awaiting_verdict('i')}"


def queue(store: Store, *, limit: int = 50, after_id: int = 0) -> list[QueueItem]:
    """INSPECT items waiting for a verdict, oldest first, after items.id `after_id` (the page before)."""
    rows = store.db.execute(f"SELECT i.id, i.uid, i.item_id, i.routed, i.routed_at, i.score, i.reasons {_PENDING}"
                            " ORDER BY i.id LIMIT ?", (after_id, _limit(limit))).fetchall()
    return [QueueItem(r["id"], r["uid"], r["item_id"], r["routed"], r["routed_at"], r["score"], _codes(r["reasons"]))
            for r in rows]


def pending_count(store: Store) -> int:
    return count_pending_after(store, 0)


def count_pending_after(store: Store, after_id: int) -> int:
    """Items waiting for a verdict with items.id above `after_id` ("N new since you loaded the page")."""
    return int(store.db.execute(f"SELECT count(*) {_PENDING}", (after_id,)).fetchone()[0])


def newest_pending_id(store: Store) -> int:
    """The items.id of the newest item waiting for a verdict; 0 when none waits."""
    row = store.db.execute(f"SELECT i.id {_PENDING} ORDER BY i.id DESC LIMIT 1", (0,)).fetchone()
    return 0 if row is None else int(row[0])


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_ROWS:
        raise VerdictError(f"limit {limit}: 1 to {MAX_ROWS} rows")
    return limit


# ---- one item ------------------------------------------------------------------------------------


def item_view(store: Store, item_pk: int) -> ItemView | None:
    """The item page's data for items.id `item_pk`, None when there is no such item."""
    row = store.db.execute("SELECT * FROM items WHERE id = ?", (item_pk,)).fetchone()
    if row is None:
        return None
    detections = tuple(Detected(d["label"], d["score"], (d["x1"], d["y1"], d["x2"], d["y2"]), bool(d["threat"]))
                       for d in store.db.execute("SELECT * FROM detections WHERE item = ? ORDER BY rowid", (item_pk,)))
    threat = any(d.threat for d in detections)
    verdicts = tuple(_verdict(v, threat) for v in
                     store.db.execute("SELECT * FROM verdicts WHERE item = ? ORDER BY id", (item_pk,)))
    explanation: dict[str, Any] = json.loads(row["explanation"]) if row["explanation"] else {}
    evidence: dict[str, Any] = explanation.get("evidence") or {}
    declaration = store.ead_for(row["item_id"]) if row["item_id"] else None
    declared = evidence.get("declared_weight_kg")
    if declared is None and declaration is not None:
        declared = declaration.total_gross_weight_kg
    pruned = store.db.execute("SELECT pruned_at FROM pruned_images WHERE item = ?", (item_pk,)).fetchone()
    return ItemView(
        id=row["id"], uid=row["uid"], track_id=row["track_id"], item_id=row["item_id"], barcode=row["barcode"],
        scan_id=row["scan_id"], image_path=row["image_path"], image_sha256=row["image_sha256"],
        decision=row["decision"], routed=row["routed"], score=row["score"],
        reasons=tuple(_reason(r) for r in json.loads(row["reasons"]) if isinstance(r, dict)),
        ead_status=row["ead_status"], ead_version=row["ead_version"], model_hash=row["model_hash"],
        rules_version=row["rules_version"], decision_latency_ms=row["decision_latency_ms"],
        routed_at=row["routed_at"], revision=row["revision"], detections=detections, declaration=declaration,
        ead_findings=tuple(_reason(r) for r in evidence.get("ead_findings") or ()),
        rules_fired=tuple(_hit(h) for h in explanation.get("trace") or ()),
        declared_weight_kg=declared, measured_weight_kg=evidence.get("measured_weight_kg"), verdicts=verdicts,
        instructions=tuple(customs.instructions_for(store.db, row["item_id"])) if row["item_id"] else (),
        held=customs.active(store, row["item_id"]) if row["item_id"] else None,
        image_pruned_at=pruned["pruned_at"] if pruned else None,
        legal_hold=holds.current(store.db, item_pk))


def _reason(r: dict[str, Any]) -> Reason:
    return Reason(str(r.get("code", "")), str(r.get("detail", "")), r.get("field"))


def _hit(h: dict[str, Any]) -> RuleHit:
    return RuleHit(h["rule"], h["action"], h["score"], h["says"], tuple(_reason(r) for r in h.get("reasons") or ()))


# ---- the history ---------------------------------------------------------------------------------

# Every page is read in items.id order, newest first, and never sorted: each filter either walks an index
# whose entries are in id order (items_item_id, items_decision: (value, id)) or lists its items' ids from
# one (item_reasons, the partial indexes of verdicts not undone), which SQLite then walks in order. A time
# range becomes the ids of the items routed in it (min and max, read off items_routed_at) and is checked
# again row by row: ids follow routing order, so the range is tight, and a clock set back cannot make it
# wrong. Each filter is a fixed fragment, only values are parameters. v: the current verdict, for the row.
_SEARCH = ("SELECT i.id, i.uid, i.item_id, i.routed_at, i.decision, i.routed, i.revision, i.reasons,"
           " v.verdict, v.by, v.at, v.threat_class"
           " FROM items AS i LEFT JOIN verdicts AS v ON v.item = i.id AND v.undone_at IS NULL")
_FILTERS = {
    "s10": "i.item_id = ?",
    "decision": "i.decision = ?",
    "reason": "i.id IN (SELECT r.item FROM item_reasons AS r WHERE r.code = ?{below})",
    "verdict": "i.id IN (SELECT c.item FROM verdicts AS c WHERE c.verdict = ? AND c.undone_at IS NULL{below})",
    "operator": "i.id IN (SELECT c.item FROM verdicts AS c WHERE c.by = ? AND c.undone_at IS NULL{below})",
    "since": "+i.routed_at >= ?",
    "until": "+i.routed_at < ?",
    "first_id": "i.id >= ?",
    "before_id": "i.id < ?",
}
_BELOW = {"reason": " AND r.item < ?", "verdict": " AND c.item < ?", "operator": " AND c.item < ?"}
_NOT_JUDGED = "v.id IS NULL"


def search(store: Store, *, s10: str | None = None, since: float | None = None, until: float | None = None,
           decision: str | None = None, reason: str | None = None, verdict: str | None = None,
           operator: str | None = None, limit: int = 100, before_id: int | None = None) -> list[HistoryRow]:
    """Stored items, newest first, that pass every filter given: S10 id, routed in [since, until) (Unix
    seconds), decision, a reason code, the current verdict (NOT_JUDGED: none) and who gave it. The next
    page: `before_id` = the last row's id."""
    if decision is not None and decision not in ("CLEAR", "INSPECT"):
        raise VerdictError(f"decision {decision!r}: CLEAR or INSPECT")
    if verdict is not None and verdict not in (*VERDICTS, NOT_JUDGED):
        raise VerdictError(f"verdict {verdict!r}: one of {', '.join(VERDICTS)} or {NOT_JUDGED}")
    query = _query(store.db, {"s10": None if s10 is None else s10.strip().upper(), "since": since, "until": until,
                              "decision": decision, "reason": reason, "verdict": verdict, "operator": operator,
                              "before_id": before_id}, _limit(limit))
    if query is None:
        return []
    return [HistoryRow(r["id"], r["uid"], r["item_id"], r["routed_at"], r["decision"], r["routed"], r["revision"],
                       _codes(r["reasons"]), r["verdict"], r["by"], r["at"], r["threat_class"])
            for r in store.db.execute(*query)]


def _query(db: sqlite3.Connection, filters: dict[str, Any], limit: int) -> tuple[str, list[object]] | None:
    """The search's SQL and parameters for the filters that are not None; None when no item was routed
    in the time range."""
    given = {name: value for name, value in filters.items() if value is not None}
    if ("since" in given or "until" in given) and "s10" not in given:  # (an S10 id's few items need no bounds)
        first, last = db.execute("SELECT min(id), max(id) FROM items WHERE routed_at >= ? AND routed_at < ?",
                                 (given.get("since", -math.inf), given.get("until", math.inf))).fetchone()
        if first is None:
            return None
        given["first_id"] = first
        given["before_id"] = min(last + 1, given.get("before_id", last + 1))
    judged = given.get("verdict") != NOT_JUDGED
    if not judged:
        del given["verdict"]
    where: list[str] = [] if judged else [_NOT_JUDGED]
    params: list[object] = []
    for name, value in given.items():
        below = _BELOW.get(name, "") if "before_id" in given else ""
        where.append(_FILTERS[name].format(below=below))
        params.extend((value, given["before_id"]) if below else (value,))
    sql = _SEARCH + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY i.id DESC LIMIT ?"
    return sql, [*params, limit]
