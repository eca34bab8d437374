"""The lane's decisions, as a pure state machine: `LaneCore.handle(event) -> list[command]`.

It follows every item by belt position (encoder millimetres), binds the barcode and the scan that
belong to it, asks for inference and EAD, decides, and keeps the divert gate's output equal to the
decision of the next item to reach the gate. Nothing here awaits, reads a clock or touches I/O.

Guarantees (each is tested):
- every tracked item that reaches the gate is reported exactly once (`ItemRouted`), in belt order;
- the gate output is CLEAR only while the next item to reach the gate has a CLEAR decision made before
  its deadline (`gate_mm - gate_margin_mm`) and the lane is RUNNING; the gate acts on the item whose
  leading edge crosses it, so the output moves on to the next item once the gate eye has seen this one;
- E-stop, a PLC fault, a lost PLC link or an open scanner interlock stop the belt and send every item
  still on it to INSPECT; E-stop needs an operator reset before the belt may start again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from station.config import LaneSection
from station.ead.record import EadRecord
from station.ead.s10 import s10_problem
from station.lane import messages as m
from station.risk import Decision, Evidence, decide, with_declaration


class LaneState(str, Enum):
    STOPPED = "STOPPED"
    RUNNING = "RUNNING"
    FAULT = "FAULT"
    ESTOP = "ESTOP"


@dataclass
class Track:
    track_id: int
    entry_mm: float  # encoder reading when the leading edge reached the entry eye
    length_mm: float | None = None
    weight_kg: float | None = None  # from the checkweigher, when the lane has one
    barcode: str | None = None
    barcode_state: str = "pending"  # pending | read | noread | missing
    item_id: str | None = None
    id_problem: m.Reason | None = None
    ead_state: str = "pending"  # pending | found | missing | not_looked_up
    ead_version: int | None = None
    ead_record: EadRecord | None = None
    ead_findings: tuple[m.Reason, ...] = ()
    scan_id: str | None = None
    scan_state: str = "pending"  # pending | started | done
    image_path: str | None = None
    image_sha256: str | None = None
    image_ready_t: float | None = None
    inference_state: str = "pending"  # pending | running | done | failed
    detections: tuple[m.Detected, ...] = ()
    model_hash: str | None = None
    inference_failure: m.Reason | None = None
    problems: list[m.Reason] = field(default_factory=list)
    decision: Decision | None = None
    decided_t: float | None = None

    def lead(self, encoder_mm: float) -> float:
        return encoder_mm - self.entry_mm


class LaneCore:
    def __init__(self, lane: LaneSection, *, manual_only: bool = False,
                 decide_fn: Callable[[Evidence], Decision] = decide) -> None:
        self.lane = lane
        self.manual_only = manual_only
        self.decide = decide_fn
        self.state = LaneState.STOPPED
        self.fault: str | None = None
        self.tracks: list[Track] = []  # unrouted, in belt order (oldest = nearest the gate)
        self.values: dict[str, bool | int | float] = {}
        self.plc_up = False
        # What we last commanded; None: unknown, so the next wanted value is written whatever it is.
        self.gate_clear: bool | None = False
        self._blind = False  # the PLC link was lost: the next snapshot's edges are not to be trusted
        self._at_gate: Track | None = None  # passed the gate eye; where it went is read from the next poll
        self._snapshot_t = 0.0  # when self.values were polled
        self._next_id = 1

    # ---- entry point --------------------------------------------------------------------------

    def handle(self, event: m.Event) -> list[m.Command]:
        out: list[m.Command] = []
        match event:
            case m.Snapshot():
                self._on_snapshot(event, out)
            case m.PlcLink(up=False, detail=detail):
                if self.plc_up or not self._blind:
                    self._enter_fault("PLC_LINK_LOST", detail or "PLC not answering", event.t, out)
                    # We cannot trust our writes to land: let the PLC's own watchdog stop the belt.
                    out.append(m.SetHeartbeat(False))
                self.plc_up, self._blind = False, True
            case m.BarcodeScanned():
                self._on_barcode(event, out)
            case m.ScanStarted():
                self._on_scan_started(event, out)
            case m.ScanDone():
                self._on_scan_done(event, out)
            case m.InterlockChanged(open=True):
                self._enter_fault("SCANNER_INTERLOCK", "scanner interlock opened", event.t, out)
            case m.InferenceDone() | m.InferenceFailed() | m.EadResolved():
                self._on_result(event)
            case m.EadArrived():
                self._on_ead_arrived(event)
            case m.Operator():
                self._on_operator(event, out)
            case m.ModelChanged(model_hash=model_hash):
                self.manual_only = model_hash is None  # scans already being analysed finish on the old model
        self._check_positions(event.t, out)
        self._decide_ready(event.t)
        self._drive_gate(out)
        return out

    # ---- PLC snapshots ------------------------------------------------------------------------

    def _on_snapshot(self, snap: m.Snapshot, out: list[m.Command]) -> None:
        before, now = self.values, dict(snap.values)
        self.values = now
        self._snapshot_t = snap.t
        self.plc_up = True
        enc = float(now["encoder"])
        if self._at_gate is not None:
            self._confirm_route(self._at_gate, unseen=self._blind, out=out)
        if self._blind:
            self._blind = False
            self._after_blackout(snap.t, enc, out)
            out.append(m.SetHeartbeat(True))  # the belt stays stopped (the PLC dropped belt_run) until a start
            before = now  # what happened while we could not see is not a set of edges
        elif before and enc - float(before["encoder"]) > self.lane.read_window_mm and self.state is LaneState.RUNNING:
            self._enter_fault("PLC_POLL_TOO_SLOW", f"the belt moved {enc - float(before['encoder']):.0f} mm between two "
                              f"PLC polls; tracking needs less than {self.lane.read_window_mm:.0f} mm", snap.t, out)

        def rose(name: str) -> bool:
            return bool(now.get(name)) and not bool(before.get(name, False))

        def fell(name: str) -> bool:
            return bool(before.get(name)) and not bool(now.get(name))

        if rose("estop_active"):
            self._enter_fault("ESTOP", "emergency stop pressed", snap.t, out, estop=True)
        elif now.get("fault_code") and not before.get("fault_code") and self.state is not LaneState.ESTOP:
            self._enter_fault("PLC_FAULT", f"PLC fault code {now['fault_code']}", snap.t, out)
        if before and fell("entry_eye") and self.tracks and self.tracks[-1].length_mm is None:
            last = self.tracks[-1]
            last.length_mm = last.lead(enc)
        if rose("entry_eye"):
            # The edge happened somewhere since the last poll; assume the earliest moment, so the item's
            # position is never underestimated and its gate deadline never comes later than it really does.
            track = Track(self._next_id, float(before.get("encoder", enc)))
            if self.state in (LaneState.FAULT, LaneState.ESTOP):
                track.problems.append(m.Reason(self.fault or self.state.value, "the lane was in fault when the item entered"))
            self.tracks.append(track)
            self._next_id += 1
        if rose("gate_eye"):
            self._route(snap.t, enc, out)
        if before and "weight_seq" in now and now["weight_seq"] != before.get("weight_seq"):
            self._on_weighed(float(now["weight_g"]) / 1000.0, enc, out)

    def _on_weighed(self, kg: float, enc: float, out: list[m.Command]) -> None:
        """The checkweigher latched a weight as an item's trailing edge left it: that item's."""
        def off_scale(tr: Track) -> float:
            return abs(tr.lead(enc) - (tr.length_mm or 0.0) - self.lane.scale_mm)

        near = [tr for tr in self.tracks if tr.weight_kg is None and tr.length_mm is not None
                and off_scale(tr) <= self.lane.read_window_mm]
        track = min(near, key=off_scale, default=None)
        if track is None:
            out.append(m.Alarm("UNMATCHED_WEIGHT", f"the scale weighed {kg:.3f} kg with no tracked item leaving it"))
            return
        track.weight_kg = kg

    def _after_blackout(self, t: float, enc: float, out: list[m.Command]) -> None:
        """Items that crossed the gate while the PLC link was down went somewhere we did not see."""
        while self.tracks and self.tracks[0].lead(enc) >= self.lane.gate_mm:
            self._unconfirmed(self.tracks.pop(0), "it passed the gate while the PLC link was down", t, out)

    def _unconfirmed(self, track: Track, why: str, t: float, out: list[m.Command]) -> None:
        """Record an item whose bin the station did not see: INSPECT, routed UNCONFIRMED."""
        track.problems.append(m.Reason("ROUTING_UNCONFIRMED", why))
        self._decide_now(track, t)
        out.append(m.Alarm("ROUTING_UNCONFIRMED", f"track {track.track_id}: {why}"))
        out.append(self._routed(track, "UNCONFIRMED"))

    def _route(self, t: float, enc: float, out: list[m.Command]) -> None:
        """The gate eye saw an item arrive: the gate has routed it by the output it had at that moment."""
        own_output = self.gate_clear
        # The PLC consumes the output as the item passes, unless our write landed after it: then the CLEAR
        # would wait for the next item. Re-state the output for the next item, INSPECT included.
        self.gate_clear = None
        head = self.tracks[0] if self.tracks else None
        if head is None or head.lead(enc) < self.lane.gate_mm - self.lane.read_window_mm:
            # Something reached the gate that we never saw enter (or tracking slipped): record it.
            head = Track(-self._next_id, enc - self.lane.gate_mm)
            self._next_id += 1
            head.problems.append(m.Reason("UNTRACKED_ITEM", "an item reached the gate that was not tracked"))
            output = "CLEAR" if own_output else "INSPECT"
            out.append(m.Alarm("UNTRACKED_ITEM", f"item at the gate with no track (gate output {output})"))
        else:
            self.tracks.pop(0)
        if head.decision is None or head.problems:
            self._decide_now(head, t)
        if "gate_position_clear" in self.values:
            # The diverter reports where the item went, but a poll of several requests is not one PLC scan:
            # the gate eye may be read after the scan that routed the item and the diverter before it. The
            # next poll starts after this one, so all of it is later than the routing: read it there.
            self._at_gate = head
        else:
            self._finish_route(head, "CLEAR" if own_output else "INSPECT", t, out)

    def _confirm_route(self, head: Track, unseen: bool, out: list[m.Command]) -> None:
        self._at_gate = None
        if unseen:
            self._unconfirmed(head, "the PLC link was lost before the diverter reported", self._snapshot_t, out)
        else:
            self._finish_route(head, "CLEAR" if self.values.get("gate_position_clear") else "INSPECT", self._snapshot_t, out)

    def _finish_route(self, head: Track, routed: str, t: float, out: list[m.Command]) -> None:
        assert head.decision is not None
        if routed == "INSPECT" and head.decision.decision == "CLEAR":
            # Fail safe, but the record must say where the item really went and why.
            head.problems.append(m.Reason("GATE_NOT_SET", "the gate output was not CLEAR when the item reached it"))
            self._decide_now(head, t)
            out.append(m.Alarm("GATE_NOT_SET", f"track {head.track_id}: decided CLEAR, gate sent it to INSPECT"))
        elif routed == "CLEAR" and head.decision.decision == "INSPECT":
            out.append(m.Alarm("MISROUTED", f"track {head.track_id}: decided INSPECT, gate sent it to CLEAR"))
        out.append(self._routed(head, routed))

    # ---- bindings -----------------------------------------------------------------------------

    def _nearest(self, position_mm: float, pending: Callable[[Track], bool]) -> Track | None:
        enc = float(self.values.get("encoder", 0.0))
        near = [tr for tr in self.tracks if pending(tr) and abs(tr.lead(enc) - position_mm) <= self.lane.read_window_mm]
        return min(near, key=lambda tr: abs(tr.lead(enc) - position_mm), default=None)

    def _spanning(self, position_mm: float) -> Track | None:
        """The track whose extent covers `position_mm` (its length is open while it is under the entry eye)."""
        enc = float(self.values.get("encoder", 0.0))
        for track in self.tracks:
            lead = track.lead(enc)
            trail = lead - track.length_mm if track.length_mm is not None else 0.0
            if trail - self.lane.read_window_mm <= position_mm <= lead + self.lane.read_window_mm:
                return track
        return None

    def _second_item(self, position_mm: float, what: str, out: list[m.Command]) -> bool:
        """A second label or scan inside one tracked item: two items touching, seen as one. INSPECT it."""
        track = self._spanning(position_mm)
        if track is None:
            return False
        if not any(r.code == "MULTIPLE_ITEMS" for r in track.problems):
            track.problems.append(m.Reason("MULTIPLE_ITEMS", f"a second {what} within one item: items touching"))
        out.append(m.Alarm("MULTIPLE_ITEMS", f"track {track.track_id}: second {what}"))
        return True

    def _on_barcode(self, ev: m.BarcodeScanned, out: list[m.Command]) -> None:
        track = self._nearest(self.lane.barcode_mm, lambda tr: tr.barcode_state == "pending")
        if track is None:
            if not self._second_item(self.lane.barcode_mm, "barcode read", out):
                out.append(m.Alarm("UNMATCHED_BARCODE", f"read {ev.code!r} with no item under the reader"))
            return
        if ev.code is None:
            track.barcode_state, track.ead_state = "noread", "not_looked_up"
            track.id_problem = m.Reason("NO_READ", "the barcode reader could not read the label")
            return
        track.barcode, track.barcode_state = ev.code, "read"
        problem = s10_problem(ev.code)
        if problem is not None:
            track.ead_state = "not_looked_up"
            track.id_problem = m.Reason("S10_INVALID", problem)
            return
        track.item_id = ev.code
        out.append(m.LookUpEad(track.track_id, ev.code))

    def _on_scan_started(self, ev: m.ScanStarted, out: list[m.Command]) -> None:
        track = self._nearest(self.lane.tunnel_start_mm, lambda tr: tr.scan_state == "pending")
        if track is None:
            if not self._second_item(self.lane.tunnel_start_mm, "scan", out):
                out.append(m.Alarm("UNMATCHED_SCAN", f"scan {ev.scan_id} started with no item at the tunnel"))
            return
        track.scan_id, track.scan_state = ev.scan_id, "started"

    def _on_scan_done(self, ev: m.ScanDone, out: list[m.Command]) -> None:
        track = next((tr for tr in self.tracks if tr.scan_id == ev.scan_id), None)
        if track is None:
            out.append(m.Alarm("UNMATCHED_SCAN", f"scan {ev.scan_id} finished for no tracked item"))
            return
        track.scan_state, track.image_path, track.image_sha256 = "done", ev.path, ev.sha256
        track.image_ready_t = ev.t
        if self.manual_only:
            track.inference_state = "failed"
            track.inference_failure = m.Reason("MANUAL_ONLY", "no usable detection model when the scan arrived")
        else:
            track.inference_state = "running"
            out.append(m.RunInference(track.track_id, ev.path, ev.sha256))

    def _on_result(self, ev: m.InferenceDone | m.InferenceFailed | m.EadResolved) -> None:
        track = next((tr for tr in self.tracks if tr.track_id == ev.track_id), None)
        if track is None:
            return  # the item already passed the gate (and went to INSPECT): a late answer changes nothing
        if isinstance(ev, m.InferenceDone):
            track.inference_state, track.detections, track.model_hash = "done", ev.detections, ev.model_hash
        elif isinstance(ev, m.InferenceFailed):
            track.inference_state, track.inference_failure = "failed", ev.reason
        else:
            track.ead_state = "found" if ev.found else "missing"
            track.ead_version, track.ead_record, track.ead_findings = ev.version, ev.record, ev.findings

    def _on_ead_arrived(self, ev: m.EadArrived) -> None:
        """A declaration arrived (or was amended) after its item's look-up. An item still short of its
        gate deadline is decided again with it; one past the deadline keeps its routing, and the
        runtime revises the stored item once it has passed the gate."""
        if "encoder" not in self.values:
            return
        for track in self.tracks:
            if track.item_id != ev.record.item_id or track.ead_state not in ("found", "missing"):
                continue
            if track.ead_version is not None and track.ead_version >= ev.record.version:
                continue
            if self._past_deadline(track, ev.t):
                continue
            track.ead_state, track.ead_version = "found", ev.record.version
            track.ead_record, track.ead_findings = ev.record, ev.findings
            if track.decision is not None:
                track.decision = None  # decided again below, before the deadline

    # ---- positions, deadlines, decisions ------------------------------------------------------

    def _check_positions(self, t: float, out: list[m.Command]) -> None:
        if "encoder" not in self.values:
            return
        enc, lane = float(self.values["encoder"]), self.lane
        while self.tracks and self.tracks[0].lead(enc) > lane.gate_mm + lane.read_window_mm:
            self._missing(self.tracks.pop(0), t, out)
        for track in self.tracks:
            lead = track.lead(enc)
            under_entry = track is self.tracks[-1] and bool(self.values.get("entry_eye"))
            long_mm = track.length_mm if track.length_mm is not None else (lead if under_entry else 0.0)
            if long_mm > lane.max_item_mm and not any(r.code == "ITEM_TOO_LONG" for r in track.problems):
                track.problems.append(m.Reason("ITEM_TOO_LONG", f"{long_mm:.0f} mm under the entry eye, more than "
                                               f"{lane.max_item_mm:.0f} mm: items may be touching"))
                out.append(m.Alarm("ITEM_TOO_LONG", f"track {track.track_id}: {long_mm:.0f} mm"))
            if track.barcode_state == "pending" and lead > lane.barcode_mm + lane.read_window_mm:
                track.barcode_state, track.ead_state = "missing", "not_looked_up"
                track.id_problem = m.Reason("NO_READ", "the barcode reader reported nothing for this item")
            if track.scan_state == "pending" and lead > lane.tunnel_start_mm + lane.read_window_mm:
                track.scan_state = "missing"
                track.problems.append(m.Reason("SCAN_MISSING", "the scanner did not scan this item"))
            if track.decision is None and self._past_deadline(track, t):
                track.problems.append(m.Reason("DECISION_LATE", self._late_detail(track)))
                out.append(m.Alarm("DECISION_LATE", f"track {track.track_id}: {self._late_detail(track)}"))
                self._decide_now(track, t)

    def _past_deadline(self, track: Track, t: float) -> bool:
        """Whether the item's leading edge is at or past its decision deadline (gate_mm - gate_margin_mm).
        The deadline is physical: the distance the belt has run since the last poll counts too."""
        moved = max(0.0, float(self.values.get("belt_speed", 0.0))) * max(0.0, t - self._snapshot_t)
        return track.lead(float(self.values["encoder"])) + moved >= self.lane.gate_mm - self.lane.gate_margin_mm

    def _missing(self, track: Track, t: float, out: list[m.Command]) -> None:
        """The item should have reached the gate eye by now and did not: a jam, or it left the belt."""
        detail = f"track {track.track_id} never reached the gate eye"
        track.problems.append(m.Reason("ITEM_MISSING", "the item did not reach the gate: jammed or fell off"))
        self._decide_now(track, t)
        self._enter_fault("JAM", detail, t, out)
        out.append(self._routed(track, "MISSING"))

    @staticmethod
    def _late_detail(track: Track) -> str:
        if track.scan_state != "done":
            return "no image by the gate deadline"
        if track.inference_state in ("pending", "running"):
            return "inference not finished by the gate deadline"
        return "evidence incomplete at the gate deadline"

    def _decide_ready(self, t: float) -> None:
        for track in self.tracks:
            if track.decision is not None and not (track.problems and track.decision.decision == "CLEAR"):
                continue
            inference_known = track.inference_state in ("done", "failed") or track.scan_state == "missing"
            identity_known = track.barcode_state != "pending" and track.ead_state != "pending"
            if track.problems or (inference_known and identity_known):
                self._decide_now(track, t)

    def _decide_now(self, track: Track, t: float) -> None:
        evidence = Evidence(
            detections=track.detections,
            inference_failure=track.inference_failure,
            id_problem=track.id_problem,
            ead_found=None if track.ead_state in ("not_looked_up", "pending") else track.ead_state == "found",
            lane_problems=tuple(track.problems),
            measured_weight_kg=track.weight_kg,
        )
        if track.ead_record is not None:
            evidence = with_declaration(evidence, track.ead_record, track.ead_findings)
        track.decision = self.decide(evidence)
        track.decided_t = t

    def _drive_gate(self, out: list[m.Command]) -> None:
        head = self.tracks[0] if self.tracks else None
        want = (
            self.state is LaneState.RUNNING
            and head is not None
            and head.decision is not None
            and head.decision.decision == "CLEAR"
            and not self.values.get("gate_eye")  # never switch the gate under an item still in it
        )
        if want != self.gate_clear and self.plc_up:
            self.gate_clear = want
            out.append(m.WriteOutput("gate_clear", want))

    # ---- lane state ---------------------------------------------------------------------------

    def _enter_fault(self, code: str, detail: str, t: float, out: list[m.Command], estop: bool = False) -> None:
        if self.state is LaneState.ESTOP and not estop:
            return  # E-stop dominates; its reset is the way out
        self.state = LaneState.ESTOP if estop else LaneState.FAULT
        self.fault = code
        out.append(m.Alarm(code, detail))
        out.append(m.WriteOutput("belt_run", False))  # best effort even when the link looks down
        for track in self.tracks:
            track.problems.append(m.Reason(code, f"{detail} while the item was on the belt"))

    def _on_operator(self, ev: m.Operator, out: list[m.Command]) -> None:
        if ev.action == "stop":
            if self.state is LaneState.RUNNING:
                self.state = LaneState.STOPPED
            out.append(m.WriteOutput("belt_run", False))
        elif ev.action == "reset":
            blocker = self._blocker(allow_estop_code=self.state is LaneState.ESTOP)
            if self.state in (LaneState.ESTOP, LaneState.FAULT) and blocker:
                out.append(m.Alarm("RESET_REFUSED", f"cannot reset {self.fault}: {blocker}"))
            elif self.state is LaneState.ESTOP:
                out.append(m.WriteOutput("estop_reset", True))
                self.state, self.fault = LaneState.STOPPED, None
            elif self.state is LaneState.FAULT:
                self.state, self.fault = LaneState.STOPPED, None
        elif ev.action == "start":
            blocker = self._blocker()
            if self.state is LaneState.STOPPED and not blocker:
                self.state = LaneState.RUNNING
                out.append(m.WriteOutput("belt_speed_sp", self.lane.belt_speed_mm_s))
                out.append(m.WriteOutput("belt_run", True))
            else:
                out.append(m.Alarm("START_REFUSED", f"cannot start from {self.state.value}"
                                   + (f" ({self.fault})" if self.fault else "") + (f": {blocker}" if blocker else "")))

    def _blocker(self, allow_estop_code: bool = False) -> str:
        """Why the PLC's side does not allow a reset or start now ('' when it does)."""
        if not self.plc_up:
            return "PLC not answering"
        if self.values.get("estop_active"):
            return "E-stop still pressed"
        code = int(self.values.get("fault_code", 0) or 0)
        if code and not (allow_estop_code and code == 2):
            return f"PLC fault code {code}"
        return ""

    # ---- output -------------------------------------------------------------------------------

    def _routed(self, track: Track, routed: str) -> m.ItemRouted:
        assert track.decision is not None
        ead_status = {"found": "found", "missing": "missing"}.get(track.ead_state, "not_looked_up")
        return m.ItemRouted(
            track_id=track.track_id, item_id=track.item_id, barcode=track.barcode, scan_id=track.scan_id,
            image_path=track.image_path, image_sha256=track.image_sha256,
            decision=track.decision.decision, routed=routed,  # type: ignore[arg-type]
            score=track.decision.score, reasons=track.decision.reasons, detections=track.detections,
            ead_status=ead_status, ead_version=track.ead_version,  # type: ignore[arg-type]
            rules_version=track.decision.rules_version, model_hash=track.model_hash, weight_kg=track.weight_kg,
            explanation=track.decision.explanation_json(),
            ead_findings=track.decision.evidence.ead_findings if track.decision.evidence else track.ead_findings,
            image_ready_t=track.image_ready_t, decided_t=track.decided_t,
        )
