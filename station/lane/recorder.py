"""One item's record: its row, its messages, its scan kept, and its revisions.

The runtime hands the recorder values (an `ItemRouted` from the core, a track an earlier run left on
the belt, a declaration that came late) and the recorder does the rest on the store writer's thread:
the scan moved out of the spool into `images/`, the row and its `items/result` (and `items/alert`)
messages stored in one transaction, a later revision stored and queued the same way. It decides nothing
itself: a revision is decided by the rule set it is given.

A revision (a late declaration, a customs instruction) is worked out on the writer's thread from the
row as stored at that moment, so two revisions of one item in flight at once never claim the same
revision number, and one that changes nothing stores nothing. Each stored revision carries its alert
(`station.alerts`): `new`, `update` or `end` as the item's review opens, stays open or closes.

The alert's thumbnail is rendered here, on the writer's thread, from the kept scan, for INSPECT items
only. Measured on a 2048x1365 16-bit scan (bench/thumbnail.py, median of 20, a shared 2-core box):
from the kept file 11-13 ms (.xde, the simulator's) to 40 ms (16-bit PNG, its decode); from the image
the inference worker has already decoded, 8-10 ms. The worker would add those ms to every item's
inference, CLEAR ones too, and so to every decision; here they cost no decision and no PLC poll
(OpenCV releases the GIL: the event loop woke at most 0.7 ms late meanwhile), only the writer's time,
one INSPECT item at a time, and a revision that opens an alert needs the kept file anyway.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from station import customs
from station.alerts import Event, Thumbnail, ThumbnailMissing, alert_payload, thumbnail_file
from station.contract import iso_time
from station.domain import Decision, Detected, Evidence, Reason
from station.ead.record import EadRecord
from station.lane import messages as m
from station.mqtt_link import Topics
from station.risk import with_declaration
from station.spool import SpoolError, keep_image
from station.store import ItemRow, OutboxMessage, Store
from station.writer import StoreWriter

log = logging.getLogger(__name__)


class Recorder:
    def __init__(self, store: Store, writer: StoreWriter, topics: Topics, *, decide: Callable[[Evidence], Decision],
                 images_dir: Path, max_image_bytes: int, alarm: Callable[[str, str], None],
                 on_stored: Callable[[], None]) -> None:
        self.store = store  # the loop's reading connection (a revision reads what was stored)
        self.writer = writer
        self.topics = topics
        self.decide = decide  # the rule set a revision is decided by
        self.images_dir = images_dir
        self.max_image_bytes = max_image_bytes
        self.alarm = alarm  # (code, detail): an image that could not be kept
        self.on_stored = on_stored  # something new is in the outbox

    def routed(self, item: m.ItemRouted, on_belt_key: str | None) -> tuple[ItemRow, asyncio.Future[None]]:
        """Store an item that passed the gate (or never reached it); the future is done once it is stored."""
        latency = None
        if item.decided_t is not None and item.image_ready_t is not None:
            latency = max(0.0, (item.decided_t - item.image_ready_t) * 1000.0)
        row = ItemRow(
            uid=str(uuid.uuid4()), track_id=item.track_id, item_id=item.item_id, barcode=item.barcode,
            scan_id=item.scan_id, image_path=None, image_sha256=item.image_sha256, decision=item.decision,
            routed=item.routed, score=item.score, reasons=[reason_json(r) for r in item.reasons],
            ead_status=item.ead_status, ead_version=item.ead_version, model_hash=item.model_hash,
            rules_version=item.rules_version, decision_latency_ms=latency,
            routed_at=time.time(), explanation=item.explanation,
            detections=tuple((d.label, d.score, d.threat, d.box) for d in item.detections),
        )
        payload = result_payload(row, self.topics, detections=item.detections, weight_kg=item.weight_kg,
                                 ead_findings=item.ead_findings)
        return row, self._record(row, payload, item.image_path, on_belt_key)

    def left_on_belt(self, key: str, track: Mapping[str, object]) -> asyncio.Future[None]:
        """An item an earlier run was tracking when it stopped: recorded UNCONFIRMED (it may be anywhere now).
        Armed: the gate may have carried the station's own CLEAR for it, whatever came later (a link loss
        turns every decision to INSPECT, too late to recall an arm): its record is that CLEAR."""
        armed = bool(track.get("armed"))
        reason = {"code": "ROUTING_UNCONFIRMED", "detail": "the station stopped while the item was on the belt"
                  + (" (its CLEAR was on the gate)" if armed else "")}

        def text(name: str) -> str | None:
            value = track.get(name)
            return None if value is None else str(value)

        row = ItemRow(
            uid=str(uuid.uuid4()), track_id=0, item_id=text("item_id"), barcode=text("barcode"),
            scan_id=text("scan_id"), image_path=None, image_sha256=text("image_sha256"),
            decision="CLEAR" if armed else "INSPECT", routed="UNCONFIRMED", score=0.0 if armed else 0.5,
            reasons=[reason], ead_status="not_looked_up", ead_version=None, model_hash=None,
            rules_version="-", decision_latency_ms=None, routed_at=time.time())
        payload = result_payload(row, self.topics, detections=(), weight_kg=None, ead_findings=())
        done = self._record(row, payload, text("image_path"), key)
        done.add_done_callback(lambda _: self.on_stored())
        return done

    def revise(self, record: EadRecord, findings: tuple[Reason, ...]) -> int:
        """A declaration that reached the station after its item passed the gate: decide the item again
        from its stored evidence with the declaration in it, and when the decision or its reasons
        change, store the revision and publish it (the item's routing stays what it was: the officer at
        the inspection table, or central, acts on the revision). Returns how many items will be revised."""
        def change(row: sqlite3.Row) -> Revision | None:
            return self._with_declaration(row, record, findings)

        count = 0
        for row in self.store.items_for(record.item_id):
            if change(row) is None:  # worked out again on the writer's thread, from the row as it is then
                continue
            self._submit(functools.partial(self._revise_stored, uid=str(row["uid"]), change=change))
            count += 1
            log.info("item %s (%s) to be decided again with a late declaration", row["uid"], record.item_id)
        return count

    def instructed(self, instruction: customs.Instruction) -> asyncio.Future[int]:
        """A customs instruction stored: every stored item with its S10 id that it refers (hold,
        do_not_load, screen) and that is not INSPECT for it already becomes INSPECT, in a revision (its
        routing stays what it was); an item judged already answers the referral with its verdict. The
        future gives how many items were revised."""
        def job(store: Store) -> int:
            return sum(self._apply_instruction(store, row, instruction) for row in store.items_for(instruction.item_id))

        return self._submit(job)

    def _submit(self, job: Callable[[Store], int]) -> asyncio.Future[int]:
        done = self.writer.submit(job, want_result=True)
        assert done is not None
        done.add_done_callback(lambda _: self.on_stored())
        return done

    # ---- on the writer's thread --------------------------------------------------------------------

    def _apply_instruction(self, store: Store, row: sqlite3.Row, instruction: customs.Instruction) -> int:
        if not instruction.refers:
            return 0
        revised = self._revise_stored(store, row["uid"], lambda now: self._with_instruction(now, instruction))
        verdict = store.db.execute("SELECT * FROM verdicts WHERE item = ? AND undone_at IS NULL",
                                   (row["id"],)).fetchone()
        if verdict is not None:  # judged before customs asked: the verdict is the answer
            remarks = f"judged before this instruction arrived (verdict {verdict['id']})"
            payload = customs.screening_result(
                instruction, row, msg_id=f"{row['uid']}/screening_result/{instruction.instruction_id}/{verdict['id']}",
                site=self.topics.site, lane=self.topics.lane, verdict=verdict["verdict"],
                methods=tuple(json.loads(verdict["methods"] or "[]")), person=verdict["by"], at=verdict["at"],
                remarks=remarks)
            store.enqueue([OutboxMessage(str(payload["msg_id"]), self.topics.screening_result, json.dumps(payload))])
        return revised

    def _revise_stored(self, store: Store, uid: str, change: Callable[[sqlite3.Row], Revision | None]) -> int:
        """Decide the stored item `uid` again with `change`, from its row as stored now; store the
        revision with its messages when something changed. Returns 1 when it did, else 0."""
        row = store.db.execute("SELECT * FROM items WHERE uid = ?", (uid,)).fetchone()
        revision = None if row is None else change(row)
        if revision is None:
            return 0
        payload = result_payload(revision.row, self.topics, detections=_detections(store.db, row["id"]),
                                 weight_kg=revision.weight_kg, ead_findings=revision.ead_findings,
                                 revision=revision.number)
        store.revise_item(revision.row, revision.number, self._messages(payload, store.db, row, revision.changes))
        log.info("item %s (%s) decided again: %s -> %s (%s)", uid, row["item_id"], row["decision"],
                 revision.row.decision, "; ".join(revision.changes))
        return 1

    def _with_declaration(self, row: sqlite3.Row, record: EadRecord, findings: tuple[Reason, ...]) -> Revision | None:
        if row["explanation"] is None or (row["ead_version"] or 0) >= record.version:
            return None
        evidence = with_declaration(_evidence(row), record, findings)
        decision = self.decide(evidence)
        revised = replace(_decided(row, decision), ead_status="found", ead_version=record.version)
        if decision.decision == row["decision"] and revised.reasons == json.loads(row["reasons"]):
            return None
        return Revision(revised, int(row["revision"]) + 1, evidence.measured_weight_kg, evidence.ead_findings,
                        _changes(row, revised))

    def _with_instruction(self, row: sqlite3.Row, instruction: customs.Instruction) -> Revision | None:
        """The item INSPECT with the instruction's reason. Whatever a site's rules make of the reason,
        customs' referral is INSPECT; an item stored with no evidence (left on the belt) keeps its
        reasons and gains this one."""
        reason = instruction.reason()
        if row["decision"] == "INSPECT" and reason.code in _codes(row["reasons"]):
            return None
        if row["explanation"] is None:
            stored = stored_row(row)
            revised = replace(stored, decision="INSPECT", score=max(stored.score, 0.5),
                              reasons=[*stored.reasons, reason_json(reason)])
            weight: float | None = None
            findings: tuple[Reason, ...] = ()
        else:
            evidence = _evidence(row)
            if reason.code not in {r.code for r in evidence.lane_problems}:
                evidence = replace(evidence, lane_problems=(*evidence.lane_problems, reason))
            decision = self.decide(evidence)
            if decision.decision != "INSPECT":
                decision = replace(decision, decision="INSPECT", score=max(decision.score, 0.5),
                                   reasons=(*decision.reasons, reason))
            revised, weight, findings = _decided(row, decision), evidence.measured_weight_kg, evidence.ead_findings
        changes = [f"customs: {instruction.type}", *_changes(row, revised)]
        return Revision(revised, int(row["revision"]) + 1, weight, findings, changes)

    def _record(self, row: ItemRow, payload: dict[str, object], spooled: str | None,
                on_belt_key: str | None) -> asyncio.Future[None]:
        """Store an item with its messages on the writer's thread, its scan moved out of the spool first.
        Then an instruction customs sent before the item was stored, which the lane could not apply on
        the belt (the item had passed the gate, or its CLEAR could not be recalled), revises it at once."""
        # The image is moved, the thumbnail made and the item stored once, however often a full disk
        # makes the job run again.
        kept: list[str | None] = []
        messages: list[OutboxMessage] = []
        recorded: list[bool] = []
        loop = asyncio.get_running_loop()

        def job(store: Store) -> None:
            if not kept:
                kept.append(self._keep_image(spooled, row.scan_id, row.uid, loop))
            if not messages:
                messages.extend(self._messages(payload, store.db, None, [], image_path=kept[0]))
            if not recorded:
                store.record_item(replace(row, image_path=kept[0]), messages, on_belt_key=on_belt_key)
                recorded.append(True)
            instruction = customs.active(store, row.item_id) if row.item_id else None
            if instruction is not None:
                self._revise_stored(store, row.uid, lambda now: self._with_instruction(now, instruction))

        future = self.writer.submit(job, want_result=True)
        assert future is not None
        return future

    def _keep_image(self, spooled: str | None, scan_id: str | None, uid: str,
                    loop: asyncio.AbstractEventLoop) -> str | None:
        """On the writer's thread: move the scan from the spool into images/YYYY-MM-DD/ under a name no
        other scan can have. An image that cannot be kept is an alarm (the item's record stays)."""
        if spooled is None:
            return None
        source = Path(spooled)
        name = f"{_safe_name(scan_id or 'scan')}-{uid[:12]}{source.suffix}"
        try:
            return str(keep_image(source, self.images_dir, name=name, max_bytes=self.max_image_bytes))
        except SpoolError as err:
            loop.call_soon_threadsafe(self.alarm, "IMAGE_NOT_KEPT", str(err))
            return None

    def _messages(self, payload: dict[str, object], db: sqlite3.Connection, before: sqlite3.Row | None,
                  changes: list[str], image_path: str | None = None) -> list[OutboxMessage]:
        """The result message of one item (revision), and its alert as the item's review opens (`new`,
        with the thumbnail), stays open (`update`) or closes (`end`: revised to CLEAR). `before`: the
        row the revision replaces (None: the item is new). An item judged already has no open alert: its
        revision is a result only."""
        result_id = str(payload["msg_id"])
        messages = [OutboxMessage(result_id, self.topics.result, json.dumps(payload))]
        judged = before is not None and _judged(db, before["id"])
        was_open = before is not None and before["decision"] == "INSPECT" and not judged
        is_open = payload["decision"] == "INSPECT" and not judged
        if was_open or is_open:
            event: Event = "update" if was_open and is_open else "new" if is_open else "end"
            picture: Thumbnail | ThumbnailMissing | None = None
            if event == "new":
                picture = _thumbnail(image_path if before is None else before["image_path"])
            alert = alert_payload(payload, msg_id=result_id.replace("/result", "/alert", 1), event=event,
                                  changes=changes if before is not None else [], thumbnail=picture)
            messages.append(OutboxMessage(str(alert["msg_id"]), self.topics.alert, json.dumps(alert)))
        return messages


@dataclass(frozen=True)
class Revision:
    """A stored item decided again: its new row, its revision number and what changed, in words."""

    row: ItemRow
    number: int
    weight_kg: float | None
    ead_findings: tuple[Reason, ...]
    changes: list[str]


def _thumbnail(path: str | None) -> Thumbnail | ThumbnailMissing:
    """The alert's thumbnail, or why there is none: never an error that would cost the item its record."""
    try:
        return thumbnail_file(path)
    except ThumbnailMissing as missing:
        return missing
    except Exception as err:  # a bug or an exhausted machine: the item is stored all the same
        log.exception("thumbnail of %s failed", path)
        return ThumbnailMissing(f"the thumbnail could not be made: {type(err).__name__}: {err}")


def _evidence(row: sqlite3.Row) -> Evidence:
    return Evidence.from_dict(json.loads(row["explanation"])["evidence"])


def _decided(row: sqlite3.Row, decision: Decision) -> ItemRow:
    return replace(stored_row(row), decision=decision.decision, score=decision.score,
                   reasons=[reason_json(r) for r in decision.reasons], rules_version=decision.rules_version,
                   explanation=decision.explanation_json())


def _judged(db: sqlite3.Connection, item: int) -> bool:
    """Whether the item has an operator's verdict (not undone): its alert has ended."""
    return db.execute("SELECT 1 FROM verdicts WHERE item = ? AND undone_at IS NULL", (item,)).fetchone() is not None


def _detections(db: sqlite3.Connection, item: int) -> tuple[Detected, ...]:
    return tuple(Detected(d["label"], d["score"], (d["x1"], d["y1"], d["x2"], d["y2"]), bool(d["threat"]))
                 for d in db.execute("SELECT * FROM detections WHERE item = ? ORDER BY rowid", (item,)))


def _codes(reasons: str) -> set[str]:
    return {str(r["code"]) for r in json.loads(reasons) if isinstance(r, dict) and "code" in r}


def stored_result(db: sqlite3.Connection, row: sqlite3.Row, topics: Topics) -> dict[str, object]:
    """The `items/result` fields of a stored item's current revision (what its alert carries)."""
    explanation = json.loads(row["explanation"]) if row["explanation"] else {}
    evidence = explanation.get("evidence") or {}
    findings = tuple(Reason(r["code"], r.get("detail", ""), r.get("field")) for r in evidence.get("ead_findings") or ())
    return result_payload(stored_row(row), topics, detections=_detections(db, row["id"]),
                          weight_kg=evidence.get("measured_weight_kg"), ead_findings=findings,
                          revision=int(row["revision"]))


def _changes(before: sqlite3.Row, after: ItemRow) -> list[str]:
    """What a revision changed, in words for central: the decision, reason codes added and gone."""
    changes = []
    if before["decision"] != after.decision:
        changes.append(f"decision: {before['decision']} -> {after.decision}")
    old = _codes(before["reasons"])
    new = {r["code"] for r in after.reasons}
    changes += [f"reasons: +{code}" for code in sorted(new - old)]
    changes += [f"reasons: -{code}" for code in sorted(old - new)]
    if before["ead_version"] != after.ead_version:
        changes.append(f"declaration: version {after.ead_version}")
    return changes


def _safe_name(text: str) -> str:
    """A scanner-given id as part of a file name: letters, digits, '-', '_' and '.' only."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)[:64] or "scan"


def result_payload(row: ItemRow, topics: Topics, *, detections: tuple[Detected, ...], weight_kg: float | None,
                   ead_findings: tuple[Reason, ...], revision: int = 1) -> dict[str, object]:
    """The `items/result` (and `items/alert`) message: everything central needs about one item.
    Revision 2, 3...: the item was decided again after routing (a late declaration); `routed` says
    where it physically went."""
    return {
        "msg_id": f"{row.uid}/result" + (f"/{revision}" if revision > 1 else ""),
        "schema": "screening/v1/item-result",
        "site": topics.site,
        "lane": topics.lane,
        "uid": row.uid,
        "revision": revision,
        "item_id": row.item_id,
        "barcode": row.barcode,
        "scan_id": row.scan_id,
        "image_sha256": row.image_sha256,
        "decision": row.decision,
        "routed": row.routed,
        "score": round(row.score, 4),
        "reasons": row.reasons,
        "detections": [{"label": d.label, "score": round(d.score, 4), "threat": d.threat,
                        "box": [round(v, 1) for v in d.box]} for d in detections],
        "ead": {"status": row.ead_status, "version": row.ead_version,
                "findings": [reason_json(r) for r in ead_findings]},
        "weight_kg": None if weight_kg is None else round(weight_kg, 3),
        "model_hash": row.model_hash,
        "rules_version": row.rules_version,
        "decision_latency_ms": None if row.decision_latency_ms is None else round(row.decision_latency_ms, 2),
        "routed_at": iso_time(row.routed_at),
    }


def reason_json(reason: Reason) -> dict[str, str]:
    """A reason as stored and published: its code and sentence, and the EAD field it concerns if any."""
    return {"code": reason.code, "detail": reason.detail, **({"field": reason.field} if reason.field else {})}


def stored_row(row: sqlite3.Row) -> ItemRow:
    """An items-table row as the ItemRow it was stored from (detections left out)."""
    names = [f.name for f in fields(ItemRow) if f.name != "detections"]
    return ItemRow(**{name: json.loads(row[name]) if name == "reasons" else row[name] for name in names})
