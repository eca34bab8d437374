"""The asyncio side of the lane: feeds the core its events and carries out its commands.

Event sources (PLC snapshots, scanner events, barcode reads, a tick) each run as one task. Every
event goes through `dispatch`, which runs the core and executes its commands in order: PLC writes go
through one queue so they reach the PLC in the order the core decided them; inference runs on the
worker thread; an item that passed the gate goes to the recorder (station/lane/recorder.py), which
stores it with its messages in one transaction on the store writer's thread (`station.writer`), so the
loop never waits on the store. What the core tracks
is kept in the store as it changes, so a crash leaves every item that was on the belt recorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from drivers.barcode import BarcodeReader
from drivers.health import DeviceHealth, HealthState
from drivers.plc import Plc, PlcError, PlcWriteError
from drivers.scanner import Scanner
from drivers.scanner_events import Interlock, ScanDone, ScanStarted
from station import customs
from station.alarms import NOTICES, ROUTINE, STATION, ActiveAlarm, AlarmBook, alarm_payload
from station.domain import Decision, Evidence, Reason, ReasonCode
from station.ead.checks import check_record
from station.ead.record import EadRecord, RecordInvalid, parse_json_record
from station.inference import InferenceProblem, InferenceWorker
from station.lane import messages as m
from station.lane.core import LaneCore, LaneState
from station.lane.recorder import Recorder
from station.lane.status import Counters, DeviceStatus, LaneStatus, ModelInfo, OnBelt, Outbox, StatusBoard
from station.logs import fields
from station.metrics import LaneMetrics
from station.mqtt_link import Topics
from station.store import ItemRow, OutboxMessage, Store
from station.writer import StoreWriter

log = logging.getLogger(__name__)

PUBLISH_S = 0.1  # the lane status snapshot is at most this much behind the lane
READER_GRACE_S = 2.0  # a scanner or barcode reader still connecting after this long is not usable


class LaneRuntime:
    def __init__(self, core: LaneCore, store: Store, writer: StoreWriter, topics: Topics, *, plc: Plc,
                 spool_dir: Path, images_dir: Path, worker: InferenceWorker, max_image_bytes: int = 64 * 2**20,
                 on_stored: Callable[[], None] = lambda: None,
                 devices: Mapping[str, Callable[[], DeviceHealth]] | None = None) -> None:
        self.core = core
        self.store = store  # this loop's reading connection: WAL readers never wait for the writer
        self.writer = writer
        self.topics = topics
        self.plc = plc
        self.spool_dir = spool_dir
        self.worker = worker
        self.on_stored = on_stored
        # the rule set the core decides with also decides an item again after a late declaration
        self.recorder = Recorder(store, writer, topics, decide=core.decide, images_dir=images_dir,
                                 max_image_bytes=max_image_bytes, alarm=self.dispatch_alarm, on_stored=on_stored)
        self.run_id = uuid.uuid4().hex[:12]  # tells this run's tracks from an earlier run's in the store
        self.item_stored = asyncio.Event()  # set after each item is stored; waiters clear it
        self.alarms: dict[str, int] = {}
        self.items_stored = 0  # by this runtime (the store also holds earlier runs)
        self.longest_stall_s = 0.0  # the event loop's longest stall seen by `watch_loop`
        self.disk_low = False  # free space under storage.warn_free_mb, as the space keeper last said
        self.metrics = LaneMetrics()  # what /metrics can only learn as it happens: latencies (station/metrics.py)
        self._queue: deque[m.Event] = deque()
        self._writes: asyncio.Queue[m.WriteOutput] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._kept: dict[int, tuple[object, ...]] = {}  # track id -> what the store holds of it on the belt
        # ---- what the status snapshot is made of
        self.devices = dict(devices or {})  # health of the devices the runtime does not own: plc, scanner, ...
        self.board = StatusBoard()
        self.book = AlarmBook(ActiveAlarm(r["code"], r["detail"], r["first_at"], r["last_at"], r["count"],
                                          r["acked_by"], r["acked_at"]) for r in store.active_alarms())
        self.model: ModelInfo | None = None
        self.rules_version = "-"  # of the rule set the core decides with (set by the daemon, and by a reload)
        self.why_no_model: str | None = None
        self.detector_health = DeviceHealth("detector")
        self.ead_health = DeviceHealth("ead")
        self.counters = Counters()
        self.outbox = Outbox(0, None, 0)
        # how many messages this run has published (the central link's count)
        self.published: Callable[[], int] = lambda: 0
        self._reasons: Counter[str] = Counter()
        self._weighed_at: float | None = None
        self._not_usable_since: dict[str, float] = {}
        self._reported_down: set[str] = set()
        self._publish_due = False

    # ---- the one way in -----------------------------------------------------------------------

    def dispatch(self, event: m.Event) -> None:
        """Run the core on `event` and on anything its commands feed back, then carry out the commands."""
        self._queue.append(event)
        if len(self._queue) > 1:
            return  # an outer dispatch is draining the queue
        try:
            while self._queue:
                for command in self.core.handle(self._queue[0]):
                    self._execute(command)
                self._queue.popleft()
        except BaseException:
            self._queue.clear()  # a bug in the core must crash the daemon, not leave later events queued forever
            raise
        self._keep_tracks()
        self.publish_soon()

    def _execute(self, cmd: m.Command) -> None:
        match cmd:
            case m.WriteOutput():
                self._writes.put_nowait(cmd)
            case m.SetHeartbeat(on=on):
                self.plc.heartbeat_enabled = on
            case m.RunInference():
                self._spawn(self._infer(cmd))
            case m.LookUpEad(track_id=track_id, item_id=item_id):
                self._queue.append(self._look_up(track_id, item_id))
            case m.Alarm(code=code, detail=detail):
                self.dispatch_alarm(code, detail)
            case m.ItemRouted():
                self._store_item(cmd)

    def _look_up(self, track_id: int, item_id: str) -> m.EadResolved:
        """The item's declaration from the local store: never waits on the network, nor on the writer.
        A customs referral in force for the item comes with it."""
        try:
            record = self.store.ead_for(item_id)
        except (sqlite3.Error, ValueError) as err:  # unreadable: fail safe, as if none had come
            self.dispatch_alarm("EAD_LOOKUP_FAILED", f"{item_id}: {err}")
            record = None
        return m.EadResolved(time.monotonic(), track_id, record is not None, record.version if record else None,
                             record, check_record(record) if record else (), self._referral(item_id))

    def _referral(self, item_id: str) -> Reason | None:
        """The reason of customs' referral in force for the item; unreadable: the customs reason that says so
        (INSPECT: a hold the station cannot read must not let the item go)."""
        try:
            held = customs.active(self.store, item_id)
        except (sqlite3.Error, ValueError) as err:
            self.dispatch_alarm("CUSTOMS_LOOKUP_FAILED", f"{item_id}: {err}")
            return Reason(ReasonCode.CUSTOMS_HOLD, f"customs instructions could not be read: {err}")
        return None if held is None else held.reason()

    def ead_message(self, topic: str, payload: bytes) -> None:
        """A declaration from central (MQTT): checked, cached, and applied to its item, on the belt or
        already past the gate. A bad message is an alarm naming the problem; it changes nothing stored."""
        try:
            record = parse_json_record(payload)
        except RecordInvalid as err:  # not JSON, or not a record: names the field
            self.ead_health = self.ead_health.failed("rejected", f"{topic}: {err}", HealthState.DEGRADED)
            self.dispatch_alarm("EAD_REJECTED", f"{topic}: {err}")
            return
        future = self.writer.submit(lambda store: store.upsert_ead(record, source="mqtt"), want_result=True)
        assert future is not None
        future.add_done_callback(lambda done: self._ead_stored(topic, record, done))

    def customs_message(self, topic: str, payload: bytes) -> None:
        """An instruction from customs (MQTT): checked, stored, and applied to its item, on the belt or
        already past the gate. A bad message is the alarm CUSTOMS_REJECTED naming the problem; it
        changes nothing stored. An instruction id seen before changes nothing either."""
        try:
            instruction = customs.parse_instruction(payload)
        except customs.InstructionInvalid as err:
            self.dispatch_alarm("CUSTOMS_REJECTED", f"{topic}: {err}")
            return
        future = self.writer.submit(lambda store: customs.store_instruction(store, instruction), want_result=True)
        assert future is not None
        future.add_done_callback(lambda done: self._customs_stored(topic, instruction, done))

    def _customs_stored(self, topic: str, instruction: customs.Instruction, done: asyncio.Future[bool]) -> None:
        if (err := done.exception()) is not None:
            self.dispatch_alarm("CUSTOMS_NOT_STORED", f"{topic}: {instruction.instruction_id}: {err}")
            return
        if not done.result():
            log.info("customs instruction %s seen before: nothing to do", instruction.instruction_id)
            return
        log.info("customs %s for %s (instruction %s from %s)", instruction.type, instruction.item_id,
                 instruction.instruction_id, instruction.issued_by)
        if instruction.refers:  # a release or an info changes no decision (a release lifts the console's block)
            self.dispatch(m.CustomsInstructed(time.monotonic(), instruction.item_id, instruction.reason()))
            self.recorder.instructed(instruction)

    def _ead_stored(self, topic: str, record: EadRecord, done: asyncio.Future[bool]) -> None:
        err = done.exception()
        if isinstance(err, RecordInvalid):  # a version jump the store refuses: names the field
            self.ead_health = self.ead_health.failed("rejected", f"{topic}: {err}", HealthState.DEGRADED)
            self.dispatch_alarm("EAD_REJECTED", f"{topic}: {err}")
            return
        if err is not None:
            self.ead_health = self.ead_health.failed("not_stored", f"{topic}: {err}", HealthState.DEGRADED)
            self.dispatch_alarm("EAD_NOT_STORED", f"{topic}: {record.item_id}: {err}")
            return
        self.ead_health = self.ead_health.ok(f"last record {record.item_id} v{record.version}")
        if done.result():  # a new version (an older or the same one changes nothing)
            self.declarations_arrived([record])

    def declarations_arrived(self, records: Iterable[EadRecord]) -> int:
        """The one way in for declarations the store has just taken, from central (MQTT) or from a file
        (`station ead import` while the lane runs): each is checked, given to its item if it is on the
        belt, and decides again an item already stored without it. Returns how many items were revised."""
        revised = 0
        for record in records:
            findings = check_record(record)
            self.dispatch(m.EadArrived(time.monotonic(), record, findings))
            revised += self.recorder.revise(record, findings)
        return revised

    async def declarations_imported(self, since: float) -> dict[str, int]:
        """A file of declarations was imported into the store since `since` (time.time()) by another
        process: the ones that concern the lane are read off the loop and go the way central's do."""
        on_belt = {t.item_id for t in self.core.tracks if t.item_id}

        def news() -> list[EadRecord]:
            with Store(self.store.path) as store:
                return store.ead_news(since, on_belt)

        records = await asyncio.to_thread(news)
        revised = self.declarations_arrived(records)
        log.info("%d imported declarations concern the lane: %d items decided again", len(records), revised)
        return {"records": len(records), "revised": revised}

    def dispatch_alarm(self, code: str, detail: str) -> None:
        self.alarms[code] = self.alarms.get(code, 0) + 1
        # what an operator did or the lane got back (a model loaded, space again) is news, not trouble
        log.log(logging.INFO if code in ROUTINE else logging.WARNING, "alarm %s: %s", code, detail,
                extra=fields(alarm=code))
        at = time.time()
        self.book.raised(code, detail, at)
        notice = STATION if code in NOTICES else None
        message = self._alarm_message("raised", code, detail, at, notice)
        self.writer.submit(lambda store: store.add_alarm(code, detail, at, cleared_by=notice, messages=[message]))
        self.on_stored()
        self.publish_soon()

    # ---- the operator's way in ----------------------------------------------------------------

    def operator(self, action: str, by: str) -> list[str]:
        """An operator's command to the lane, audited with who gave it. Returns the alarms it was refused with."""
        before, fault, state = dict(self.alarms), self.core.fault, self.core.state
        self.audit(by, f"lane {action}")
        self.dispatch(m.Operator(time.monotonic(), action))  # type: ignore[arg-type]
        if action == "reset" and state in (LaneState.FAULT, LaneState.ESTOP) and self.core.state is LaneState.STOPPED:
            for code in {fault or state.value, state.value} & {a.code for a in self.book.active}:
                self._clear(code, by)  # the reset was the fault's clear
        return sorted(k for k, v in self.alarms.items() if v != before.get(k) and k.endswith("_REFUSED"))

    def ack_alarm(self, code: str, by: str) -> str | None:
        """Acknowledge an active alarm; None, or why not."""
        if (alarm := self.book.get(code)) is None:
            return f"no active alarm {code}"
        at = time.time()
        self.book.acked(code, by, at)
        self.audit(by, f"alarm ack {code}")
        message = self._alarm_message("acknowledged", code, alarm.detail, at, by)
        self.writer.submit(lambda store: store.ack_alarm(code, by, at, messages=[message]))
        self.on_stored()
        self.publish_soon()
        return None

    def clear_alarm(self, code: str, by: str) -> str | None:
        """Clear an active alarm (and release the belt if it held it); None, or why not."""
        if self.book.get(code) is None:
            return f"no active alarm {code}"
        self.check_readers(time.monotonic())  # a reader plugged back a moment ago counts as back
        if why := self.core.why_held(code) or self._reader_not_back(code) or self._space_not_back(code):
            self.audit(by, f"alarm clear {code} refused: {why}")
            return f"{code} cannot be cleared yet: {why}"
        self.audit(by, f"alarm clear {code}")
        self._clear(code, by)
        self.dispatch(m.AlarmCleared(time.monotonic(), code))
        return None

    def _clear(self, code: str, by: str) -> None:
        at = time.time()
        alarm = self.book.get(code)
        self.book.cleared(code)
        message = self._alarm_message("cleared", code, alarm.detail if alarm else "", at, by)
        self.writer.submit(lambda store: store.clear_alarm(code, by, at, messages=[message]))
        self.on_stored()
        self.publish_soon()

    def _alarm_message(self, event: str, code: str, detail: str, at: float, by: str | None) -> OutboxMessage:
        payload = alarm_payload(self.topics.site, self.topics.lane, event, code, detail, at, by,
                                notice=code in NOTICES)
        return OutboxMessage(str(payload["msg_id"]), self.topics.alarms, json.dumps(payload))

    def _reader_not_back(self, code: str) -> str:
        """A reader's alarm is not cleared while its health still says it is not usable."""
        for reader in ("scanner", "barcode"):
            if code.startswith(reader.upper() + "_") and reader in self.devices:
                health = self.devices[reader]()
                if health.state not in (HealthState.UP, HealthState.DEGRADED):
                    return f"the {reader} is {health.state.value}: {health.detail}"
        return ""

    def _space_not_back(self, code: str) -> str:
        return "free space is still under storage.warn_free_mb" if code == "DISK_LOW" and self.disk_low else ""

    def audit(self, who: str, action: str) -> None:
        log.info("audit: %s: %s", who, action)
        self.writer.submit(lambda store: store.add_audit(who, action))

    def store_full(self, full: bool, why: str) -> None:
        """The writer's report: the store cannot take more (the lane pauses), or can again."""
        self.dispatch(m.StoreFull(time.monotonic(), full, why))

    def space_low(self, low: bool, why: str) -> None:
        """The space keeper's report (station/space.py): free space under storage.warn_free_mb (DISK_LOW), or
        back above it, when the station clears DISK_LOW itself."""
        self.disk_low = low
        if low and self.book.get("DISK_LOW") is None:
            self.dispatch_alarm("DISK_LOW", why)
        elif not low and self.book.get("DISK_LOW") is not None:
            self._clear("DISK_LOW", STATION)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _infer(self, cmd: m.RunInference) -> None:
        started = time.perf_counter()
        try:
            found, model_hash = await self.worker.run(Path(cmd.path), cmd.sha256)
        except InferenceProblem as err:
            self.detector_health = self.detector_health.failed(err.reason.code, err.reason.detail, HealthState.DEGRADED)
            self.dispatch(m.InferenceFailed(time.monotonic(), cmd.track_id, err.reason))
        else:
            self.detector_health = self.detector_health.ok()
            self.metrics.inferred(time.perf_counter() - started)
            self.dispatch(m.InferenceDone(time.monotonic(), cmd.track_id, found, model_hash))

    # ---- items on the belt, kept in the store -------------------------------------------------

    def _keep_tracks(self) -> None:
        """Write what the store should know of each tracked item when it changes, so that a crash leaves
        every item that was on the belt in the store (recorded UNCONFIRMED at the next start)."""
        for track in self.core.tracks + self.core.unplaced:
            known = (track.item_id, track.barcode, track.scan_id, track.image_path, track.image_sha256,
                     track.decision.decision if track.decision else None, track.armed_with is not None)
            if self._kept.get(track.track_id) != known:
                self._kept[track.track_id] = known
                data: dict[str, object] = dict(zip(("item_id", "barcode", "scan_id", "image_path", "image_sha256",
                                                    "decision", "armed"), known, strict=True))
                key = self._belt_key(track.track_id)

                def keep(store: Store, key: str = key, data: dict[str, object] = data) -> None:
                    store.keep_on_belt(key, data)

                self.writer.submit(keep)

    def _belt_key(self, track_id: int) -> str:
        return f"{self.run_id}/{track_id}"

    def record_left_on_belt(self) -> int:
        """At start: record every item an earlier run was tracking when it stopped, UNCONFIRMED (it may
        be anywhere now), then forget it. Returns how many."""
        left = self.store.on_belt()
        for key, track in left:
            self.recorder.left_on_belt(key, track)
            self.dispatch_alarm("ROUTING_UNCONFIRMED", f"{track.get('scan_id') or key}: the station stopped while "
                                "it was on the belt")
        return len(left)

    # ---- storing a routed item ----------------------------------------------------------------

    def _store_item(self, item: m.ItemRouted) -> None:
        self._kept.pop(item.track_id, None)
        row, done = self.recorder.routed(item, self._belt_key(item.track_id) if item.track_id > 0 else None)
        done.add_done_callback(lambda done: self._item_stored(done, row))

    def _count(self, row: ItemRow) -> None:
        c = self.counters
        if row.decision == "INSPECT":
            self._reasons.update({str(r["code"]) for r in row.reasons})
        self.counters = Counters(c.items + 1, c.cleared + (row.decision == "CLEAR"),
                                 c.inspected + (row.decision == "INSPECT"), tuple(sorted(self._reasons.items())))

    def _item_stored(self, done: asyncio.Future[None], row: ItemRow) -> None:
        if done.exception() is not None:
            log.error("item not stored", exc_info=done.exception())
            self.dispatch_alarm("ITEM_NOT_STORED", f"{done.exception()}")
            return
        self.items_stored += 1
        self._count(row)
        self.metrics.decided(row.decision_latency_ms)
        log.info("item %s %s: %s, routed %s%s, %s", row.item_id or row.barcode or "(no id)",
                 row.scan_id or "(no scan)", row.decision, row.routed,
                 f" ({', '.join(str(r['code']) for r in row.reasons)})" if row.reasons else "",
                 "latency -" if row.decision_latency_ms is None else f"latency {row.decision_latency_ms:.0f} ms",
                 extra=fields(item=row.uid, s10=row.item_id, scan=row.scan_id))
        self.on_stored()
        self.item_stored.set()
        self.publish_soon()

    async def wait_stored(self, count: int) -> None:
        """Until this runtime has stored `count` items."""
        while True:
            self.item_stored.clear()
            if self.items_stored >= count:
                return
            await self.item_stored.wait()

    # ---- the status snapshot ------------------------------------------------------------------

    def use_rules(self, decide: Callable[[Evidence], Decision], version: str) -> None:
        """A reloaded rule set: items decided from now on (and revisions) are decided by it."""
        self.core.decide = decide
        self.recorder.decide = decide
        self.rules_version = version
        log.info("rules %s in use", version)

    def set_model(self, model: ModelInfo | None, why_none: str | None = None) -> None:
        self.model, self.why_no_model = model, why_none
        self.publish_soon()

    def publish_soon(self) -> None:
        """Publish a new snapshot within PUBLISH_S: every change is in the next one, and the snapshot is
        not rebuilt at every PLC poll (50 a second), on the loop that must answer them."""
        if not self._publish_due:
            self._publish_due = True
            asyncio.get_running_loop().call_later(PUBLISH_S, self.publish_status)

    def publish_status(self) -> LaneStatus:
        self._publish_due = False
        current = self.board.current
        status = self.build_status(1 if current is None else current.seq + 1)
        self.board.publish(status)
        return self.board.current or status

    def build_status(self, seq: int) -> LaneStatus:
        core, pos = self.core, self.core.position_mm
        reason = core.fault or core.why_not_running()
        wall = time.time() - time.monotonic()  # the core's times are the loop's monotonic clock
        on_belt = tuple(OnBelt(t.track_id, t.item_id, None if pos is None else round(t.lead(pos), 1),
                               t.decision.decision if t.decision else None, t.clear_on_gate or t.armed_with is not None,
                               tuple(dict.fromkeys(r.code for r in t.problems)),
                               None if t.decided_t is None or t.decision is None else round(wall + t.decided_t, 3))
                        for t in core.tracks)
        unseen = sum(z.length_mm for z in core.blind if z.length_mm != float("inf"))
        return LaneStatus(seq, time.time(), self.topics.site, self.topics.lane, core.state.value, reason,
                          core.manual_only, self.model, self._device_statuses(), self.outbox, self.counters, on_belt,
                          self.book.active, round(unseen), self.writer.pending)

    def _device_statuses(self) -> tuple[DeviceStatus, ...]:
        health = {name: source() for name, source in self.devices.items()}
        plc = health.get("plc")
        if plc is not None:
            if "weight_g" in self.core.values or plc.state is not HealthState.UP:
                scale = DeviceHealth("scale", plc.state, self._weighed_at, "read through the PLC")
            else:
                scale = DeviceHealth("scale", HealthState.DOWN, None,
                                     "no checkweigher in the PLC profile: no weight check")
            health["scale"] = scale
        if self.model is None:
            health["detector"] = DeviceHealth("detector", HealthState.DOWN, self.detector_health.last_success,
                                              f"MANUAL_ONLY: {self.why_no_model or 'no model'}; every item to INSPECT",
                                              self.detector_health.errors)
        else:
            health["detector"] = DeviceHealth(
                "detector", self.detector_health.state if self.detector_health.last_success else HealthState.UP,
                self.detector_health.last_success, f"{self.model.name} {self.model.version}",
                self.detector_health.errors)
        mqtt = health.get("mqtt")
        if mqtt is not None:
            if mqtt.state is HealthState.DOWN and not mqtt.errors and not mqtt.last_success:
                health["ead"] = replace(self.ead_health, state=HealthState.UP,
                                        detail="no central feed: declarations come from `station ead import`")
            elif mqtt.state is not HealthState.UP:
                health["ead"] = replace(self.ead_health, state=mqtt.state, detail=f"central link {mqtt.state.value}")
            else:
                health["ead"] = replace(self.ead_health, state=self.ead_health.state if self.ead_health.last_success
                                        else HealthState.UP, detail=self.ead_health.detail or "subscribed")
        order = ("plc", "scanner", "barcode", "scale", "detector", "mqtt", "ead")
        return tuple(DeviceStatus.of(health[name], name) for name in order if name in health)

    def readers_usable(self) -> bool:
        return all(self.devices[r]().state in (HealthState.UP, HealthState.DEGRADED)
                   for r in ("scanner", "barcode") if r in self.devices)

    def check_readers(self, now: float, *, grace_s: float = READER_GRACE_S) -> None:
        """Tell the core when the scanner or the barcode reader stops (or starts) being usable: down, or
        still connecting `grace_s` after it stopped being up (a port that opens but never answers)."""
        for reader in ("scanner", "barcode"):
            if reader not in self.devices:
                continue
            health = self.devices[reader]()
            usable = health.state in (HealthState.UP, HealthState.DEGRADED)
            since = self._not_usable_since.setdefault(reader, now) if not usable else None
            if usable:
                self._not_usable_since.pop(reader, None)
            down = not usable and (health.state is HealthState.DOWN or now - (since or now) >= grace_s)
            if down and reader not in self._reported_down:
                self._reported_down.add(reader)
                self.dispatch(m.ReaderLink(time.monotonic(), reader, False, health.detail or health.state.value))
            elif usable and reader in self._reported_down:
                self._reported_down.discard(reader)
                self.dispatch(m.ReaderLink(time.monotonic(), reader, True, health.detail))

    async def watch_devices(self, interval: float = 0.25) -> None:
        """What no event tells: readers lost, the outbox's depth, device health; a snapshot when it changed."""
        while True:
            self.check_readers(time.monotonic())
            try:
                depth, oldest = self.store.outbox_depth()
            except sqlite3.Error as err:  # a busy or broken store is the writer's to report
                log.debug("outbox depth not read: %s", err)
            else:
                self.outbox = Outbox(depth, oldest, self.published())
            self.publish_soon()
            await asyncio.sleep(interval)

    # ---- event sources ------------------------------------------------------------------------

    async def pump_plc(self, stale_s: float = 1.0) -> None:
        """Snapshots to the core; no snapshot for `stale_s` is a lost link, whatever the driver still hopes."""
        seq, was_up = -1, False
        while True:
            try:
                async with asyncio.timeout(stale_s):
                    snap = await self.plc.next_snapshot(seq)
            except TimeoutError:
                if was_up:
                    was_up = False
                    detail = (f"no PLC poll answered for {stale_s:g} s "
                              f"({self.plc.health.state.value}: {self.plc.health.detail})")
                    self.dispatch(m.PlcLink(time.monotonic(), False, detail))
                continue
            seq, was_up = snap.seq, True
            if snap.values.get("weight_seq") != self.core.values.get("weight_seq"):
                self._weighed_at = time.time()  # the checkweigher's last reading: the scale's last success
            self.dispatch(m.Snapshot(snap.t, snap.values))

    async def pump_writes(self) -> None:
        while True:
            cmd = await self._writes.get()
            try:
                await self.plc.write(cmd.name, cmd.value)
            except PlcWriteError as err:  # the PLC answered but refused or changed the value
                self.dispatch_alarm("PLC_WRITE_REFUSED", f"{cmd.name}={cmd.value}: {err}")
            except PlcError as err:
                log.warning("PLC write %s=%s failed: %s", cmd.name, cmd.value, err)
                if self.core.plc_up:  # once is enough: the core already knows the link is down
                    self.dispatch(m.PlcLink(time.monotonic(), False, f"write {cmd.name} failed: {err}"))
            finally:
                self._writes.task_done()

    async def writes_done(self, timeout: float = 1.0) -> None:
        """Until the PLC writes asked for so far are done (the last belt stop, at the end of a run)."""
        try:
            async with asyncio.timeout(timeout):
                await self._writes.join()
        except TimeoutError:
            log.warning("%d PLC writes still pending at the end of the run", self._writes.qsize())

    async def pump_scanner(self, scanner: Scanner) -> None:
        async for ev in scanner.events():
            if isinstance(ev, ScanStarted):
                self.dispatch(m.ScanStarted(ev.t, ev.scan_id))
            elif isinstance(ev, ScanDone):
                self.dispatch(m.ScanDone(ev.t, ev.scan_id, str(self.spool_dir / ev.file), ev.sha256))
            elif isinstance(ev, Interlock):
                self.dispatch(m.InterlockChanged(ev.t, ev.open))

    async def pump_barcode(self, reader: BarcodeReader) -> None:
        async for read in reader.reads():
            self.dispatch(m.BarcodeScanned(read.t, read.code))

    async def tick(self, interval: float = 0.05) -> None:
        while True:
            await asyncio.sleep(interval)
            self.dispatch(m.Tick(time.monotonic()))

    async def watch_loop(self, interval: float = 0.01, warn_s: float = 0.1) -> None:
        """Measure how late the event loop wakes: anything that blocks it delays every PLC poll."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + interval
            await asyncio.sleep(interval)
            stall = loop.time() - due
            if stall > self.longest_stall_s:
                self.longest_stall_s = stall
            if stall > warn_s:
                log.warning("event loop stalled for %.0f ms", stall * 1000)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
