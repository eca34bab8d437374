"""One item's record: its row, its messages, its scan kept, and its revisions.

The runtime hands the recorder values (an `ItemRouted` from the core, a track an earlier run left on
the belt, a declaration that came late) and the recorder does the rest on the store writer's thread:
the scan moved out of the spool into `images/`, the row and its `items/result` (and `items/alert`)
messages stored in one transaction, a later revision stored and queued the same way. It decides nothing
itself: a revision is decided by the rule set it is given.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import fields, replace
from datetime import UTC, datetime
from pathlib import Path

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
        the inspection table, or central, acts on the revision). Returns how many items were revised."""
        revised_count = 0
        for row in self.store.items_for(record.item_id):
            if row["explanation"] is None or (row["ead_version"] or 0) >= record.version:
                continue
            before = Evidence.from_dict(json.loads(row["explanation"])["evidence"])
            evidence = with_declaration(before, record, findings)
            decision = self.decide(evidence)
            reasons = [reason_json(r) for r in decision.reasons]
            if decision.decision == row["decision"] and reasons == json.loads(row["reasons"]):
                continue
            revision = int(row["revision"]) + 1
            revised = replace(stored_row(row), decision=decision.decision, score=decision.score, reasons=reasons,
                              ead_status="found", ead_version=record.version, rules_version=decision.rules_version,
                              explanation=decision.explanation_json())
            payload = result_payload(revised, self.topics, detections=evidence.detections,
                                     weight_kg=evidence.measured_weight_kg, ead_findings=evidence.ead_findings,
                                     revision=revision)
            messages = self._messages(payload)

            def revise(store: Store, revised: ItemRow = revised, revision: int = revision,
                       messages: list[OutboxMessage] = messages) -> None:
                store.revise_item(revised, revision, messages)

            done = self.writer.submit(revise, want_result=True)
            assert done is not None
            done.add_done_callback(lambda _: self.on_stored())
            revised_count += 1
            log.info("item %s (%s) decided again with a late declaration: %s -> %s", row["uid"], record.item_id,
                     row["decision"], decision.decision)
        return revised_count

    def _record(self, row: ItemRow, payload: dict[str, object], spooled: str | None,
                on_belt_key: str | None) -> asyncio.Future[None]:
        """Store an item with its messages on the writer's thread, its scan moved out of the spool first."""
        kept: list[str | None] = []  # the image is moved once, however often a full disk makes the job retry
        loop = asyncio.get_running_loop()

        def job(store: Store) -> None:
            if not kept:
                kept.append(self._keep_image(spooled, row.scan_id, row.uid, loop))
            store.record_item(replace(row, image_path=kept[0]), self._messages(payload), on_belt_key=on_belt_key)

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

    def _messages(self, payload: dict[str, object]) -> list[OutboxMessage]:
        """The result message, and for an INSPECT decision the alert, of one item (revision)."""
        result_id = str(payload["msg_id"])
        messages = [OutboxMessage(result_id, self.topics.result, json.dumps(payload))]
        if payload["decision"] == "INSPECT":
            alert_id = result_id.replace("/result", "/alert", 1)
            alert = {**payload, "msg_id": alert_id, "schema": "screening/v1/item-alert"}
            messages.append(OutboxMessage(alert_id, self.topics.alert, json.dumps(alert)))
        return messages


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
        "routed_at": datetime.fromtimestamp(row.routed_at, UTC).isoformat(),
    }


def reason_json(reason: Reason) -> dict[str, str]:
    """A reason as stored and published: its code and sentence, and the EAD field it concerns if any."""
    return {"code": reason.code, "detail": reason.detail, **({"field": reason.field} if reason.field else {})}


def stored_row(row: sqlite3.Row) -> ItemRow:
    """An items-table row as the ItemRow it was stored from (detections left out)."""
    names = [f.name for f in fields(ItemRow) if f.name != "detections"]
    return ItemRow(**{name: json.loads(row[name]) if name == "reasons" else row[name] for name in names})
