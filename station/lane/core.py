"""The lane's decisions, as a pure state machine: `LaneCore.handle(event) -> list[command]`.

It follows every item by belt position (station millimetres, `station.lane.position`), binds the
barcode and the scan that belong to it, asks for inference and EAD, decides, and arms the divert gate
for the item that reaches it next. Nothing here awaits, reads a clock or touches I/O.

Guarantees (each is tested, against the simulator's ground truth as well as the core's own state):
- every tracked item that reaches the gate is reported exactly once (`ItemRouted`), in belt order; items
  closer than a poll's travel may show the gate eye fewer or more edges than the entry eye: one that
  arrives with no edge of its own is reported arrived (INSPECT, ITEMS_TOO_CLOSE), not missing, and a
  companion's own edge is not taken for an untracked item;
- the gate is armed CLEAR only for the next item to reach it, once the item before has passed the
  gate by its whole length (as the entry eye measured it), only when the station saw that item
  from the entry eye on (no stretch of belt the station could not see lies ahead of it), the item's
  CLEAR decision was made before its deadline (`gate_mm - gate_margin_mm`) and the lane is RUNNING;
  the arm carries an expiry position (`gate_clear_until_mm`), so a CLEAR that lands late cannot
  route the item behind;
- what the poll reads back of the gate is compared with what the core wants at every poll: a CLEAR
  on the output that the station did not write for the item at the gate is a GATE_MISMATCH (that item
  goes to INSPECT), and an arm not read back by the item's deadline is a GATE_WRITE_LATE;
- positions stay right across the encoder's wrap; a jump of the counter faults the lane;
- E-stop, a PLC fault, a lost PLC link, an encoder jump or an open scanner interlock stop the belt and
  send every item still on it to INSPECT; E-stop needs an operator reset before the belt may start;
  after a link loss (and at start) the belt the station could not see is held at INSPECT until it has
  passed the gate;
- the record of an item says where the diverter really sent it; an item the gate sent to CLEAR
  against the core's wish is a MISROUTED alarm, unless it was the station's own CLEAR for that item,
  armed before a later problem could be recalled (its record then says so).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from enum import StrEnum

from station.config import LaneSection
from station.domain import Decision, Evidence, Reason
from station.ead.s10 import s10_problem
from station.lane import messages as m
from station.lane.gate import GateOutput
from station.lane.position import JITTER_MM, BlindZone, Encoder
from station.lane.track import Track, keep_armed_clear, routed_record
from station.risk import decide, with_declaration

MAX_BELT_MM_S = 3000.0  # no belt runs faster (the speed set-point's limit): a longer step is a jump
MATCH_SLACK_MM = 20.0  # how far past its expected place an item may reach the gate (polls are not one PLC scan)
UNTIL_SLACK_MM = 20.0  # an arm expires this far past where its item's lead reaches the gate at the latest
SPAN_SLACK_MM = 50.0  # a second label or scan this close to an item's extent is inside it (items touching)
BLIND_RUN_S = 1.2  # with the station's heartbeat gone, the PLC's watchdog stops the belt within this
SILENT_AFTER_ITEMS = 3  # this many items in a row passing a reader with no word from it: the reader is silent
READER_CODES = {"scanner": ("SCANNER_DOWN", "SCANNER_SILENT"), "barcode": ("BARCODE_DOWN", "BARCODE_SILENT")}


class LaneState(StrEnum):
    STOPPED = "STOPPED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"  # belt held by the station itself (storage full, a reader lost) until the cause clears
    FAULT = "FAULT"
    ESTOP = "ESTOP"
    MAINTENANCE = "MAINTENANCE"  # a technician's: belt stopped by the station, every item INSPECT


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
        self.encoder = Encoder()
        self.blind: list[BlindZone] = []  # belt not seen at the entry eye, not yet past the gate
        self.unplaced: list[Track] = []  # items read while the station was blind, not yet recorded
        self.store_full = False
        self.holds: dict[str, str] = {}  # why the station holds the belt (alarm code -> detail): PAUSED while any
        self.readers_down: dict[str, str] = {}  # reader -> why it is not usable now
        self._missed = {"scanner": 0, "barcode": 0}  # items in a row that passed the reader with no word from it
        self._reset_estop = False  # an E-stop reset was written and the lane has not started since
        self.gate = GateOutput()  # what the station asked of the divert gate, and its read-back
        self._blind_from: float | None = None  # the PLC link was lost at this position
        self._at_gate: Track | None = None  # passed the gate eye; where it went is read from the next poll
        self._gate_busy_to_mm = -math.inf  # the last item to reach the gate has passed it by this position
        # The last item to reach the gate eye, while every poll since has read the eye blocked (None once one
        # reads it clear): an item close behind it may arrive with no edge of its own (`_arrived_without_edge`).
        self._in_gate: Track | None = None
        # Companions recorded with the last item routed at the gate eye, where it went: one may yet reach the
        # eye on its own, its gap to that item unseen at the entry eye but seen there, until the item's extent
        # has passed the gate (`_companions_until_mm`). Where it went is checked at the next poll.
        self._companions: list[Track] = []
        self._companions_routed = "INSPECT"
        self._companions_until_mm = -math.inf
        self._companion_at_gate: Track | None = None
        self._snapshot_t = 0.0  # when self.values were polled
        self._moved_mm = 0.0  # belt run between the last two polls
        self._next_id = 1

    @property
    def position_mm(self) -> float | None:
        return self.encoder.mm

    # ---- entry point --------------------------------------------------------------------------

    def handle(self, event: m.Event) -> list[m.Command]:
        out: list[m.Command] = []
        if not isinstance(event, m.Snapshot | m.PlcLink):
            self._notice_stale(event.t)
        match event:
            case m.Snapshot():
                self._on_snapshot(event, out)
            case m.PlcLink(up=False, detail=detail):
                if self.plc_up or self._blind_from is None:
                    self._enter_fault("PLC_LINK_LOST", detail or "PLC not answering", event.t, out)
                    # We cannot trust our writes to land: let the PLC's own watchdog stop the belt.
                    out.append(m.SetHeartbeat(False))
                self._go_blind("the PLC link is down")
                self.plc_up = False
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
            case m.CustomsInstructed():
                self._on_customs(event)
            case m.Operator():
                self._on_operator(event, out)
            case m.ModelChanged(model_hash=model_hash):
                self.manual_only = model_hash is None  # scans already being analysed finish on the old model
            case m.StoreFull():
                self._on_store(event, out)
            case m.ReaderLink():
                self._on_reader_link(event, out)
            case m.AlarmCleared(code=code):
                if code in self.holds and not self.why_held(code):
                    self._release(code, out)
        self._check_positions(event.t, out)
        self._decide_ready(event.t)
        self._drive_gate(event.t, out)
        return out

    # ---- PLC snapshots ------------------------------------------------------------------------

    def _notice_stale(self, t: float) -> None:
        """No poll for longer than the belt takes to run `read_window_mm`: the station is blind, whether
        or not the runtime has declared the link lost yet (it waits a second for that)."""
        if self.plc_up and self.position_mm is not None and self._blind_from is None:
            if t - self._snapshot_t > self.lane.read_window_mm / self.lane.belt_speed_mm_s:
                self._go_blind(f"no PLC poll for {(t - self._snapshot_t) * 1000:.0f} ms")

    def _go_blind(self, why: str) -> None:
        """From the last position polled on, belt passes the entry eye unseen: hold it at INSPECT."""
        if self._blind_from is None and self.encoder.mm is not None:
            self._blind_from = self.encoder.mm
            self.blind.append(BlindZone(self._blind_from, math.inf, why))

    def _on_snapshot(self, snap: m.Snapshot, out: list[m.Command]) -> None:
        before, now = self.values, dict(snap.values)
        first = self.encoder.mm is None
        previous, step = self.encoder.mm, self.encoder.step(int(now["encoder"]))
        dt = max(0.0, snap.t - self._snapshot_t)
        limit = MAX_BELT_MM_S * dt + self.lane.read_window_mm
        jumped = not first and (step < -JITTER_MM or step > limit)
        if jumped:
            self.encoder.rebase(int(now["encoder"]))
        else:
            self.encoder.take(int(now["encoder"]))
        pos = self.position_mm
        assert pos is not None
        self._moved_mm = 0.0 if first or jumped else step
        if self.state is not LaneState.MAINTENANCE:  # in maintenance the outputs are the technician's
            self.gate.read_back(now, snap.t, self.tracks, out)
        self.values, self._snapshot_t, self.plc_up = now, snap.t, True
        if self._at_gate is not None:
            self._confirm_route(self._at_gate, unseen=self._blind_from is not None or jumped, out=out)
        if self._companion_at_gate is not None and self._blind_from is None and not jumped:
            self._check_companion(self._companion_at_gate, out)
        self._companion_at_gate = None
        if first:
            self._unseen(pos - self.lane.gate_mm - self.lane.max_item_mm, pos,
                         "the station started with what is on the belt unknown", now, out)
            before = now
        elif jumped:
            self._enter_fault("ENCODER_JUMP", f"the encoder jumped {step:+.0f} mm between two polls (raw "
                              f"{now['encoder']}): belt positions cannot be trusted", snap.t, out)
            # Refuse to track through it: the position carries on from where it was polled last, so each item
            # is as far on as the belt can have run since (its entry as much earlier), or where it was. Kept
            # aside (INSPECT), to be named by what reaches the gate.
            run_mm = max(float(before.get("belt_speed", 0.0)), self.lane.belt_speed_mm_s) * dt
            rw = self.lane.read_window_mm
            self.unplaced.extend(self.tracks)
            self.tracks.clear()
            for track in self.unplaced:
                track.entry_mm -= run_mm + rw
                track.entry_err_mm += run_mm + 2 * rw
            self.blind = [z for z in self.blind if z.hi_mm != math.inf]
            self._unseen(pos - self.lane.gate_mm - self.lane.max_item_mm, pos,
                         "the encoder jumped: nothing on the belt is where the station thought", now, out)
            if self._blind_from is not None:  # the jump was found as the link came back
                self._blind_from = None
                out.append(m.SetHeartbeat(True))
            before, self._in_gate = now, None
        elif self._blind_from is not None or step > self.lane.read_window_mm:
            # The station could not see the belt (the link was lost, or polls stalled): what reached the gate
            # went where it did not see, and what passed the entry eye is unknown.
            lo = previous if self._blind_from is None else self._blind_from
            assert lo is not None
            if step > self.lane.read_window_mm and self.state in (LaneState.RUNNING, LaneState.PAUSED):
                self._enter_fault("PLC_POLL_TOO_SLOW", f"the belt moved {step:.0f} mm between two PLC polls; "
                                  f"tracking needs less than {self.lane.read_window_mm:.0f} mm", snap.t, out)
            self.blind = [z for z in self.blind if z.hi_mm != math.inf]  # now we know where the gap ended
            self._after_blackout(snap.t, pos, out)
            self._unseen(lo, pos, "it passed the entry eye while the station could not see the PLC", now, out)
            if self._blind_from is not None:
                self._blind_from = None
                out.append(m.SetHeartbeat(True))  # the belt stays stopped (the PLC dropped belt_run) until a start
            before, self._in_gate = now, None  # what happened while we could not see is not a set of edges

        def rose(name: str) -> bool:
            return bool(now.get(name)) and not bool(before.get(name, False))

        def fell(name: str) -> bool:
            return bool(before.get(name)) and not bool(now.get(name))

        if rose("estop_active"):
            self._enter_fault("ESTOP", "emergency stop pressed", snap.t, out, estop=True)
        elif now.get("fault_code") and not before.get("fault_code") and self.state is not LaneState.ESTOP:
            self._enter_fault("PLC_FAULT", f"PLC fault code {now['fault_code']}", snap.t, out)
        if fell("entry_eye") and self.tracks and self.tracks[-1].length_mm is None:
            last = self.tracks[-1]
            last.length_mm = last.lead(pos)
        if rose("entry_eye"):
            # The edge happened somewhere since the last poll; assume the earliest moment, so the item's
            # position is never underestimated and its gate deadline never comes later than it really does.
            assert previous is not None
            self._new_track(previous, pos - previous, out)
        if rose("gate_eye"):
            self._route(snap.t, pos, out)
        elif now.get("gate_eye"):
            self._arrived_without_edge(snap.t, pos, out)
        else:
            self._in_gate = None
        if before and "weight_seq" in now and now["weight_seq"] != before.get("weight_seq"):
            self._on_weighed(float(now["weight_g"]) / 1000.0, pos, out)

    def _new_track(self, entry_mm: float, err_mm: float, out: list[m.Command]) -> Track:
        track = Track(self._next_id, entry_mm, err_mm)
        self._next_id += 1
        if self.state in (LaneState.FAULT, LaneState.ESTOP):
            track.problems.append(Reason(self.fault or self.state.value, "the lane was in fault when the item entered"))
        elif self.state is LaneState.MAINTENANCE:
            track.problems.append(Reason("MAINTENANCE", "the lane was in maintenance when the item entered"))
        prev = self.tracks[-1] if self.tracks else None
        if (prev is not None and prev.length_mm is not None
                and not any(r.code == "ENTERED_UNSEEN" for r in prev.problems)):
            gap = entry_mm - (prev.entry_mm + prev.length_mm)  # at most the real gap (a guessed one says nothing)
            if gap < self.lane.min_gap_mm:
                detail = f"{max(gap, 0):.0f} mm from the item before it; the gate needs {self.lane.min_gap_mm:.0f} mm"
                for near in (prev, track):
                    near.add_problem("ITEMS_TOO_CLOSE", detail)
                out.append(m.Alarm("ITEMS_TOO_CLOSE", f"tracks {prev.track_id} and {track.track_id}: {detail}"))
        self.tracks.append(track)
        return track

    def _unseen(self, lo: float, hi: float, why: str, now: dict[str, bool | int | float],
                out: list[m.Command]) -> None:
        """Belt from `lo` to `hi` passed the entry eye unseen: hold the gate for it, and account for the
        item under the eye now (it entered unseen, or its end did)."""
        self.blind.append(BlindZone(lo, hi, why))
        last = self.tracks[-1] if self.tracks else None
        # Still open: under the eye when the station went blind, or first seen at a reader while it was.
        open_last = last is not None and last.length_mm is None and last.lead(hi) <= self.lane.max_item_mm
        if now.get("entry_eye"):
            if open_last:
                assert last is not None
                last.add_problem("ENTERED_UNSEEN", f"under the entry eye when {why}")
            else:
                track = self._new_track(lo, hi - lo, out)
                track.add_problem("ENTERED_UNSEEN", why)
        elif open_last:
            assert last is not None
            last.length_mm = last.lead(hi)  # its end passed unseen: the longest it can be
            last.add_problem("ENTERED_UNSEEN", f"its end passed the entry eye unseen: {why}")

    def _on_weighed(self, kg: float, pos: float, out: list[m.Command]) -> None:
        """The checkweigher latched a weight as an item's trailing edge left it: that item's."""
        def off_scale(tr: Track) -> float:
            return abs(tr.lead(pos) - (tr.length_mm or 0.0) - self.lane.scale_mm)

        near = [tr for tr in self.tracks if tr.weight_kg is None and tr.length_mm is not None
                and off_scale(tr) <= self.lane.read_window_mm]
        track = min(near, key=off_scale, default=None)
        if track is None:
            out.append(m.Alarm("UNMATCHED_WEIGHT", f"the scale weighed {kg:.3f} kg with no tracked item leaving it"))
            return
        track.weight_kg = kg

    def _after_blackout(self, t: float, pos: float, out: list[m.Command]) -> None:
        """Items that crossed the gate while the station could not see went somewhere it did not see."""
        while self.tracks and self.tracks[0].lead(pos) >= self.lane.gate_mm:
            self._unconfirmed(self.tracks.pop(0), "it passed the gate while the station could not see the PLC", t, out)

    def _unconfirmed(self, track: Track, why: str, t: float, out: list[m.Command]) -> None:
        """Record an item whose bin the station did not see: routed UNCONFIRMED, INSPECT unless the gate
        may have carried the station's own CLEAR for it."""
        track.problems.append(Reason("ROUTING_UNCONFIRMED", why))
        self._decide_now(track, t)
        keep_armed_clear(track)
        out.append(m.Alarm("ROUTING_UNCONFIRMED", f"track {track.track_id}: {why}"))
        self._emit(track, "UNCONFIRMED", t, out)

    def _route(self, t: float, pos: float, out: list[m.Command]) -> None:
        """The gate eye saw an item arrive: the gate has routed it by the output it had at that moment."""
        head = self._arriving(pos, t, out)
        self.gate.passed(head, t, out)
        companion = None if head is not None else self._companion_arriving(pos)
        if companion is not None:  # recorded already; inside the extent of the item before, the gate held for it
            self._in_gate = companion
            if "gate_position_clear" in self.values:
                self._companion_at_gate = companion
            return
        if head is None:
            head = self._unplaced_arriving(pos)
        if head is None:
            # Something reached the gate that we never saw enter (or tracking slipped): record it.
            head = Track(-self._next_id, pos - self.lane.gate_mm)
            self._next_id += 1
            unseen = next((z for z in self.blind if z.lo_mm <= head.entry_mm <= z.hi_mm + MATCH_SLACK_MM), None)
            why = f"an item reached the gate that was not tracked{f': {unseen.why}' if unseen else ''}"
            head.problems.append(Reason("UNTRACKED_ITEM", why))
            out.append(m.Alarm("UNTRACKED_ITEM", why))
        # Until its tail has passed, the gate is not switched for the next item: what the entry eye saw as
        # one item may reach the gate eye as several (a gap shorter than a poll), and a CLEAR armed in such
        # a gap would go to the one behind. An item of unknown length holds the gate for the longest one.
        self._reached_gate(head, t, pos, head.length_mm if head.length_mm is not None else self.lane.max_item_mm, out)

    def _reached_gate(self, head: Track, t: float, pos: float, extent_mm: float, out: list[m.Command]) -> None:
        """`head` has reached the gate: hold the gate for its extent (`extent_mm`) and record it with where
        the diverter sent it."""
        if head.decision is None or head.problems:
            self._decide_now(head, t)
        self._gate_busy_to_mm = max(self._gate_busy_to_mm, pos + extent_mm + MATCH_SLACK_MM)
        self._in_gate, self._companions = head, []
        if "gate_position_clear" in self.values:
            # The diverter reports where the item went, but a poll of several requests is not one PLC scan:
            # the gate eye may be read after the scan that routed the item and the diverter before it. The
            # next poll starts after this one, so all of it is later than the routing: read it there.
            self._at_gate = head
        else:
            self._finish_route(head, "CLEAR" if head.clear_on_gate else "INSPECT", t, out)

    def _arriving(self, pos: float, t: float, out: list[m.Command]) -> Track | None:
        """The track whose leading edge has just reached the gate eye, or None for an untracked item.
        A head that should have arrived before this one did not: it is missing."""
        gate = self.lane.gate_mm

        def window(tr: Track) -> tuple[float, float]:
            return gate - MATCH_SLACK_MM, gate + self._moved_mm + tr.entry_err_mm + MATCH_SLACK_MM

        while self.tracks:
            head = self.tracks[0]
            low, high = window(head)
            lead = head.lead(pos)
            if low <= lead <= high:
                return self.tracks.pop(0)
            if lead < low:
                return None
            follower = self.tracks[1] if len(self.tracks) > 1 else None
            if follower is not None and window(follower)[0] <= follower.lead(pos) <= window(follower)[1]:
                self._missing(self.tracks.pop(0), t, out)
                continue
            # Near where it should be, but not within what polling explains: it is this item, probably.
            head.add_problem("TRACKING_SLIP", f"reached the gate {lead - gate:+.0f} mm from where it was expected")
            out.append(m.Alarm("TRACKING_SLIP", f"track {head.track_id}: {lead - gate:+.0f} mm at the gate"))
            return self.tracks.pop(0) if lead <= gate + self.lane.read_window_mm else None
        return None

    def _arrived_without_edge(self, t: float, pos: float, out: list[m.Command]) -> None:
        """The gate eye has read blocked at every poll since the last item reached it, and the next track's
        lead has passed the gate by now even if it entered as late as it can have: it came with no gap the eye
        could see (shorter than the belt runs between two polls), so it has no edge of its own. The item
        before it has passed the gate by then (its length, as the entry eye measured it, is the longest it
        can be), so what blocks the eye is this one. The gate could not route the two apart: INSPECT."""
        last = self._in_gate
        if last is None or not self.tracks or self._at_gate is not None:
            return
        head = self.tracks[0]
        if head.lead(pos) - head.entry_err_mm < self.lane.gate_mm + MATCH_SLACK_MM:
            return
        if last.length_mm is None and last.inside_of is None and pos < self._gate_busy_to_mm - MATCH_SLACK_MM:
            return  # an item of unknown length (untracked) may be what still blocks the eye
        self.tracks.pop(0)
        self.gate.passed(head, t, out)
        detail = "reached the gate with no gap the gate eye could see after the item before it"
        if head.add_problem("ITEMS_TOO_CLOSE", detail):
            out.append(m.Alarm("ITEMS_TOO_CLOSE", f"track {head.track_id}: {detail}"))
        self._reached_gate(head, t, pos, head.length_mm if head.length_mm is not None else self.lane.max_item_mm, out)

    def _companion_arriving(self, pos: float) -> Track | None:
        """A companion of the last item routed, reaching the gate eye on its own inside that item's extent:
        the gap between the two, unseen at the entry eye, was seen here. Not an untracked item."""
        return self._companions.pop(0) if self._companions and pos <= self._companions_until_mm else None

    def _check_companion(self, companion: Track, out: list[m.Command]) -> None:
        """Where the diverter sent a companion that reached the gate eye on its own. Its record, written with
        the item it touches, says where that item went: the gate is held at INSPECT over the item's whole
        extent, so only a CLEAR the station did not write (a GATE_MISMATCH) can send it elsewhere."""
        if self.values.get("gate_position_clear") and self._companions_routed != "CLEAR":
            out.append(m.Alarm("MISROUTED", f"track {companion.track_id} ({companion.scan_id or companion.barcode}), "
                               f"recorded INSPECT with track {companion.inside_of}: the gate sent it to CLEAR"))

    def _unplaced_arriving(self, pos: float) -> Track | None:
        """An item read while the station was blind, whose guessed place fits the untracked item now at the
        gate: the reads were this item's (its record keeps their ids; it goes to INSPECT, entered unseen)."""
        entry, slack = pos - self.lane.gate_mm, MATCH_SLACK_MM + self._moved_mm
        fits = [u for u in self.unplaced if u.entry_mm - slack <= entry <= u.entry_mm + u.entry_err_mm + slack]
        if not fits:
            return None
        self.unplaced.remove(fits[0])
        return fits[0]

    def _confirm_route(self, head: Track, unseen: bool, out: list[m.Command]) -> None:
        self._at_gate = None
        if unseen:
            self._unconfirmed(head, "the PLC link was lost before the diverter reported", self._snapshot_t, out)
        else:
            self._finish_route(head, "CLEAR" if self.values.get("gate_position_clear") else "INSPECT",
                               self._snapshot_t, out)

    def _finish_route(self, head: Track, routed: str, t: float, out: list[m.Command]) -> None:
        assert head.decision is not None
        if routed == "INSPECT" and head.decision.decision == "CLEAR":
            # Fail safe, but the record must say where the item really went and why.
            head.problems.append(Reason("GATE_NOT_SET", "the gate output was not CLEAR when the item reached it"))
            self._decide_now(head, t)
            out.append(m.Alarm("GATE_NOT_SET", f"track {head.track_id}: decided CLEAR, gate sent it to INSPECT"))
        elif routed == "CLEAR" and head.decision.decision == "INSPECT":
            if keep_armed_clear(head):
                out.append(m.Alarm("CLEAR_NOT_RECALLED", f"track {head.track_id}: its CLEAR was on the gate before "
                                   + ", ".join(r.code for r in head.problems) + "; too late to take it back"))
            else:
                out.append(m.Alarm("MISROUTED", f"track {head.track_id}: decided INSPECT, gate sent it to CLEAR"))
        self._emit(head, routed, t, out, at_gate=True)

    # ---- bindings -----------------------------------------------------------------------------

    def _here(self, t: float, *, at_most: bool = False) -> float:
        """Where the belt is at `t` (a serial event's time). Polled, as a rule; while the PLC link is down,
        run on at the last speed polled (`at_most`: at the set-point, if the belt was still speeding up),
        until the PLC's watchdog will have stopped the belt."""
        pos = self.position_mm or 0.0
        if self._blind_from is None:
            return pos
        speed = max(0.0, float(self.values.get("belt_speed", 0.0)))
        if at_most:
            speed = max(speed, self.lane.belt_speed_mm_s)
        return pos + speed * min(max(0.0, t - self._snapshot_t), BLIND_RUN_S)

    def _nearest(self, position_mm: float, t: float, pending: Callable[[Track], bool]) -> Track | None:
        pos = self._here(t)
        near = [tr for tr in self.tracks if pending(tr) and abs(tr.lead(pos) - position_mm) <= self.lane.read_window_mm]
        return min(near, key=lambda tr: abs(tr.lead(pos) - position_mm), default=None)

    def _spanning(self, position_mm: float, t: float) -> Track | None:
        """The track whose extent covers `position_mm` (its length is open while it is under the entry eye)."""
        pos = self._here(t)
        for track in self.tracks:
            lead = track.lead(pos)
            trail = lead - track.length_mm if track.length_mm is not None else 0.0
            if trail - SPAN_SLACK_MM <= position_mm <= lead + SPAN_SLACK_MM:
                return track
        return None

    def _second_item(self, position_mm: float, t: float, what: str, out: list[m.Command], *,
                     barcode: str | None = None, scan_id: str | None = None) -> bool:
        """A second label or scan inside one tracked item: two items touching, seen as one. INSPECT it, and
        keep what belongs to the other item as a companion, so that it is recorded too."""
        track = self._spanning(position_mm, t)
        if track is None:
            return False
        detail = f"a second {what} within one item: items touching"
        track.add_problem("MULTIPLE_ITEMS", detail)
        out.append(m.Alarm("MULTIPLE_ITEMS", f"track {track.track_id}: second {what}"))
        last = track.companions[-1] if track.companions else None
        if last is None or (scan_id is not None and last.scan_id is not None) or (barcode and last.barcode):
            last = Track(-self._next_id, track.entry_mm, track.entry_err_mm, inside_of=track.track_id)
            self._next_id += 1
            last.problems.append(Reason("MULTIPLE_ITEMS", detail))
            track.companions.append(last)
        if barcode is not None:
            last.barcode, last.barcode_state, last.item_id = barcode, "read", barcode
        if scan_id is not None:
            last.scan_id, last.scan_state = scan_id, "started"
        return True

    def _unseen_here(self, station_mm: float, t: float, what: str, out: list[m.Command]) -> Track | None:
        """A read at `station_mm` that fits no track, of an item that entered unseen. Read while the
        station can see the belt, it is tracked from here on; read while it cannot (the PLC not polled),
        its position is a guess, so it is kept aside (`unplaced`) and recorded UNCONFIRMED once it must
        have passed the gate, held at INSPECT with the unseen belt. Either way, with its ids."""
        if self.position_mm is None:
            return None
        blind, rw = self._blind_from is not None, self.lane.read_window_mm
        # Where the item entered: between the belt standing since the last poll and running on at speed.
        entry_lo, entry_hi = self.position_mm - station_mm, self._here(t, at_most=True) - station_mm
        zone = next((z for z in self.blind if z.lo_mm - rw <= entry_hi and entry_lo <= z.hi_mm + rw), None)
        if zone is None:
            return None
        pending: Callable[[Track], bool] = (lambda u: u.barcode_state == "pending") if what == "barcode reader" \
            else (lambda u: u.scan_state == "pending")
        near = next((u for u in self.unplaced if pending(u) and u.entry_mm - rw <= entry_hi
                     and entry_lo <= u.entry_mm + u.entry_err_mm + rw), None)
        if near is not None and not blind:  # read again now that the station sees: placed from here on
            self.unplaced.remove(near)
            near.entry_mm, near.entry_err_mm = entry_lo, rw
            self.tracks.append(near)
            self.tracks.sort(key=lambda tr: tr.entry_mm)
        if near is not None:
            return near
        track = Track(self._next_id, entry_lo, entry_err_mm=entry_hi - entry_lo + rw)
        self._next_id += 1
        track.add_problem("ENTERED_UNSEEN", f"first seen at the {what}: {zone.why}")
        if blind:
            self.unplaced.append(track)
        else:
            self.tracks.append(track)
            self.tracks.sort(key=lambda tr: tr.entry_mm)
        out.append(m.Alarm("ENTERED_UNSEEN", f"track {track.track_id}: first seen at the {what}"))
        return track

    def _record_unplaced(self, t: float, out: list[m.Command]) -> None:
        """Items read while the station was blind, once they must have passed the gate (held at INSPECT)."""
        pos = self.position_mm
        if pos is None or self._blind_from is not None:
            return
        for track in [u for u in self.unplaced if u.lead(pos) > self.lane.gate_mm + u.entry_err_mm]:
            self.unplaced.remove(track)
            self._unconfirmed(track, "where it was on the belt was not known (it was read while the station "
                              "could not see the PLC, or the encoder jumped); the gate was held at INSPECT", t, out)

    def _bind(self, station_mm: float, t: float, pending: Callable[[Track], bool], reader: str, what: str,
              unmatched: m.Alarm, out: list[m.Command], *, barcode: str | None = None,
              scan_id: str | None = None) -> Track | None:
        """The track a read at `station_mm` belongs to: the nearest one waiting for it, else one that
        entered unseen. None for a second item's read inside a track (kept as its companion) and for
        nobody's (`unmatched` is raised)."""
        track = self._nearest(station_mm, t, pending) or self._unseen_here(station_mm, t, reader, out)
        if track is None and (self._blind_from is not None or not self._second_item(
                station_mm, t, what, out, barcode=barcode, scan_id=scan_id)):
            out.append(unmatched)
        return track

    def _on_barcode(self, ev: m.BarcodeScanned, out: list[m.Command]) -> None:
        self._missed["barcode"] = 0  # a read or a no-read: the reader is alive
        track = self._bind(self.lane.barcode_mm, ev.t, lambda tr: tr.barcode_state == "pending", "barcode reader",
                           "barcode read",
                           m.Alarm("UNMATCHED_BARCODE", f"read {ev.code!r} with no item under the reader"),
                           out, barcode=ev.code)
        if track is None:
            return
        if ev.code is None:
            track.barcode_state, track.ead_state = "noread", "not_looked_up"
            track.id_problem = Reason("NO_READ", "the barcode reader could not read the label")
            return
        track.barcode, track.barcode_state = ev.code, "read"
        problem = s10_problem(ev.code)
        if problem is not None:
            track.ead_state = "not_looked_up"
            track.id_problem = Reason("S10_INVALID", problem)
            return
        track.item_id = ev.code
        out.append(m.LookUpEad(track.track_id, ev.code))

    def _on_scan_started(self, ev: m.ScanStarted, out: list[m.Command]) -> None:
        self._missed["scanner"] = 0
        track = self._bind(self.lane.tunnel_start_mm, ev.t, lambda tr: tr.scan_state == "pending", "scanner", "scan",
                           m.Alarm("UNMATCHED_SCAN", f"scan {ev.scan_id} started with no item at the tunnel"),
                           out, scan_id=ev.scan_id)
        if track is None:
            return
        track.scan_id, track.scan_state = ev.scan_id, "started"

    def _on_scan_done(self, ev: m.ScanDone, out: list[m.Command]) -> None:
        track = next((tr for tr in self.tracks if tr.scan_id == ev.scan_id), None)
        aside = [c for tr in self.tracks for c in tr.companions] + self.unplaced
        kept = next((c for c in aside if c.scan_id == ev.scan_id), None)
        if kept is not None:  # a companion, or read while blind: INSPECT whatever its image shows, kept as evidence
            kept.scan_state, kept.image_path, kept.image_sha256 = "done", ev.path, ev.sha256
            return
        if track is None:
            out.append(m.Alarm("UNMATCHED_SCAN", f"scan {ev.scan_id} finished for no tracked item"))
            return
        track.scan_state, track.image_path, track.image_sha256 = "done", ev.path, ev.sha256
        track.image_ready_t = ev.t
        if self.manual_only:
            track.inference_state = "failed"
            track.inference_failure = Reason("MANUAL_ONLY", "no usable detection model when the scan arrived")
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
            if ev.customs is not None:
                track.add_problem(ev.customs.code, ev.customs.detail)

    def _on_ead_arrived(self, ev: m.EadArrived) -> None:
        """A declaration arrived (or was amended) after its item's look-up. An item still short of its
        gate deadline is decided again with it; one past the deadline keeps its routing, and the
        runtime revises the stored item once it has passed the gate."""
        if self.position_mm is None:
            return
        for track in self.tracks:
            if track.item_id != ev.record.item_id or track.ead_state not in ("found", "missing"):
                continue
            if track.ead_version is not None and track.ead_version >= ev.record.version:
                continue
            if self._past_deadline(track, ev.t) or track.armed_with is not None:
                continue  # its decision is on the gate already
            track.ead_state, track.ead_version = "found", ev.record.version
            track.ead_record, track.ead_findings = ev.record, ev.findings
            if track.decision is not None:
                track.decision = None  # decided again below, before the deadline

    def _on_customs(self, ev: m.CustomsInstructed) -> None:
        """Customs asked for an item: a problem of its track, so it is decided again (INSPECT) and its
        CLEAR, if armed, is taken back, as for any problem that arises on the way. One whose CLEAR the
        gate carried all the same is recorded as that CLEAR (`keep_armed_clear`), and the recorder
        revises it once stored, as it does an item that was past the gate when the instruction came."""
        for track in self.tracks:
            for one in (track, *track.companions):
                if one.item_id == ev.item_id and one.add_problem(ev.reason.code, ev.reason.detail) \
                        and one.decision is not None:
                    self._decide_now(one, ev.t)  # at once: INSPECT with the reason, whatever it was

    # ---- positions, deadlines, decisions ------------------------------------------------------

    def _check_positions(self, t: float, out: list[m.Command]) -> None:
        pos, lane = self.position_mm, self.lane
        if pos is None:
            return
        self.blind = [z for z in self.blind if pos <= z.hi_mm + lane.gate_mm + MATCH_SLACK_MM]
        self._record_unplaced(t, out)
        while (self.tracks
               and self.tracks[0].lead(pos) > lane.gate_mm + lane.read_window_mm + self.tracks[0].entry_err_mm):
            self._missing(self.tracks.pop(0), t, out)
        for track in self.tracks:
            lead = track.lead(pos)
            under_entry = track is self.tracks[-1] and bool(self.values.get("entry_eye"))
            long_mm = track.length_mm if track.length_mm is not None else (lead if under_entry else 0.0)
            if long_mm > lane.max_item_mm and track.add_problem(
                    "ITEM_TOO_LONG", f"{long_mm:.0f} mm under the entry eye, more than {lane.max_item_mm:.0f} mm: "
                                     "items may be touching"):
                out.append(m.Alarm("ITEM_TOO_LONG", f"track {track.track_id}: {long_mm:.0f} mm"))
            # An item the station followed cleanly on a running belt that a reader said nothing about counts
            # towards that reader being silent; one whose position is in doubt (a fault, a blind zone) does not.
            followed = self.state is LaneState.RUNNING and self.plc_up and not track.problems
            if track.barcode_state == "pending" and lead > lane.barcode_mm + lane.read_window_mm:
                track.barcode_state, track.ead_state = "missing", "not_looked_up"
                track.id_problem = Reason("NO_READ", "the barcode reader reported nothing for this item")
                if followed:
                    self._passed_unread("barcode", out)
            if track.scan_state == "pending" and lead > lane.tunnel_start_mm + lane.read_window_mm:
                track.scan_state = "missing"
                track.problems.append(Reason("SCAN_MISSING", "the scanner did not scan this item"))
                if followed:
                    self._passed_unread("scanner", out)
            if track.decision is None and self._past_deadline(track, t):
                track.problems.append(Reason("DECISION_LATE", self._late_detail(track)))
                out.append(m.Alarm("DECISION_LATE", f"track {track.track_id}: {self._late_detail(track)}"))
                self._decide_now(track, t)
        self.gate.check_late(self.tracks[0] if self.tracks else None, t, out)

    def _past_deadline(self, track: Track, t: float) -> bool:
        """Whether the item's leading edge is at or past its decision deadline (gate_mm - gate_margin_mm).
        The deadline is physical: the distance the belt has run since the last poll counts too."""
        pos = self.position_mm
        assert pos is not None
        moved = max(0.0, float(self.values.get("belt_speed", 0.0))) * max(0.0, t - self._snapshot_t)
        return track.lead(pos) + moved >= self.lane.gate_mm - self.lane.gate_margin_mm

    def _missing(self, track: Track, t: float, out: list[m.Command]) -> None:
        """The item should have reached the gate eye by now and did not: a jam, or it left the belt."""
        detail = f"track {track.track_id} never reached the gate eye"
        unseen = any(r.code == "ENTERED_UNSEEN" for r in track.problems)
        track.problems.append(Reason("ITEM_MISSING", "the item did not reach the gate: jammed or fell off"
                                       if not unseen else "not where its guessed position put it at the gate"))
        self._decide_now(track, t)
        if unseen:  # its position was a guess (it entered while the station was blind): no sign of a jam
            out.append(m.Alarm("ITEM_MISSING", f"{detail} (it entered unseen; it may have arrived untracked)"))
        else:
            self._enter_fault("JAM", detail, t, out)
        self._emit(track, "MISSING", t, out)

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

    # ---- the gate -----------------------------------------------------------------------------

    def _may_clear(self, head: Track) -> bool:
        """Whether the gate may carry CLEAR for `head`, the next item to reach it. (A CLEAR decision is
        one made before the item's deadline: one made later comes with DECISION_LATE, and INSPECT.)"""
        return (self.state in (LaneState.RUNNING, LaneState.PAUSED)
                and head.decision is not None and head.decision.decision == "CLEAR" and not head.problems
                and not any(z.lo_mm < head.entry_mm for z in self.blind)  # an unseen item may be ahead of it
                and not self.values.get("gate_eye")  # never switch the gate under an item still in it
                and (self.position_mm or 0.0) >= self._gate_busy_to_mm)

    def _drive_gate(self, t: float, out: list[m.Command]) -> None:
        if not self.plc_up or self.position_mm is None or self.state is LaneState.MAINTENANCE:
            return
        head = self.tracks[0] if self.tracks else None
        want = head if head is not None and self._may_clear(head) else None
        # The latest place its lead can reach the gate, so the arm expires before the next item arrives.
        until = 0 if want is None else self.encoder.to_raw(
            want.entry_mm + want.entry_err_mm + self.lane.gate_mm + UNTIL_SLACK_MM)
        self.gate.drive(want, until, self.values, t, out)

    # ---- lane state ---------------------------------------------------------------------------

    def _enter_fault(self, code: str, detail: str, t: float, out: list[m.Command], estop: bool = False) -> None:
        if self.state is LaneState.ESTOP and not estop:
            return  # E-stop dominates; its reset is the way out
        self.state = LaneState.ESTOP if estop else LaneState.FAULT
        self.fault = code
        out.append(m.Alarm(code, detail))
        out.append(m.WriteOutput("belt_run", False))  # best effort even when the link looks down
        for track in self.tracks:
            track.problems.append(Reason(code, f"{detail} while the item was on the belt"))

    def _on_store(self, ev: m.StoreFull, out: list[m.Command]) -> None:
        was_full, self.store_full = self.store_full, ev.full
        if ev.full and not was_full:
            self._hold("DISK_FULL", f"{ev.detail}; the belt is paused until space returns", out)
        elif was_full and not ev.full:
            out.append(m.Alarm("DISK_SPACE_BACK", ev.detail or "the store takes records again"))
            self._release("DISK_FULL", out)

    # ---- the belt held by the station (PAUSED) ------------------------------------------------

    def _on_reader_link(self, ev: m.ReaderLink, out: list[m.Command]) -> None:
        if ev.up:
            self.readers_down.pop(ev.reader, None)  # its alarm stays until the operator clears it
            return
        if ev.reader not in self.readers_down:
            self.readers_down[ev.reader] = ev.detail
            self._hold(READER_CODES[ev.reader][0], f"{ev.detail}: no item can be {_READ[ev.reader]}; the belt is "
                       "paused until the operator clears this alarm", out)

    def _passed_unread(self, reader: str, out: list[m.Command]) -> None:
        """One more item passed `reader` with no word from it; a few in a row and it is silent."""
        self._missed[reader] += 1
        if self._missed[reader] == SILENT_AFTER_ITEMS:
            self._hold(READER_CODES[reader][1], f"{SILENT_AFTER_ITEMS} items in a row passed the {reader} with no "
                       f"word from it: nothing is being {_READ[reader]}; the belt is paused until the operator "
                       "clears this alarm", out)

    def _hold(self, code: str, detail: str, out: list[m.Command]) -> None:
        """The station holds the belt for `code` (an alarm raised now) until it is released."""
        self.holds[code] = detail
        out.append(m.Alarm(code, detail))
        if self.state is LaneState.RUNNING:
            self.state, self.fault = LaneState.PAUSED, code
            out.append(m.WriteOutput("belt_run", False))

    def _release(self, code: str, out: list[m.Command]) -> None:
        """`code` no longer holds the belt: with nothing else holding it, a paused lane runs again."""
        self.holds.pop(code, None)
        if self.state is LaneState.PAUSED:
            if self.holds:
                self.fault = next(iter(self.holds))
            else:
                self.state, self.fault = LaneState.STOPPED, None
                self._start(out)

    def why_held(self, code: str) -> str:
        """Why the alarm `code` cannot be cleared now ('' when it can): its condition still holds."""
        for reader, codes in READER_CODES.items():
            if code == codes[0] and reader in self.readers_down:
                return f"the {reader} is still not usable: {self.readers_down[reader]}"
        if code == "DISK_FULL" and self.store_full:
            return "the store is still full"
        if code == self.fault and self.state in (LaneState.FAULT, LaneState.ESTOP):
            return "the lane is in fault for it: reset the lane (its reset clears it)"
        return ""

    def _on_operator(self, ev: m.Operator, out: list[m.Command]) -> None:
        if ev.action == "stop":
            if self.state in (LaneState.RUNNING, LaneState.PAUSED):
                self.state, self.fault = LaneState.STOPPED, None
            out.append(m.WriteOutput("belt_run", False))
        elif ev.action == "maintenance":
            if self.state is LaneState.ESTOP:
                out.append(m.Alarm("START_REFUSED", "cannot enter maintenance during an E-stop: reset it first"))
                return
            if self.state is not LaneState.MAINTENANCE:
                self.state, self.fault = LaneState.MAINTENANCE, None
                out.append(m.WriteOutput("belt_run", False))
                self.gate.drive(None, 0, self.values, ev.t, out)  # a CLEAR not yet used is taken back first
                for track in self.tracks:
                    track.add_problem("MAINTENANCE", "the lane went into maintenance while the item was on the belt")
        elif ev.action == "reset" and self.state is LaneState.MAINTENANCE:
            self.state = LaneState.STOPPED  # the gate goes back to the station (INSPECT), the belt stays stopped
            out.append(m.WriteOutput("belt_run", False))
        elif ev.action == "reset":
            blocker = self._blocker(allow_estop_code=self.state is LaneState.ESTOP)
            if self.state in (LaneState.ESTOP, LaneState.FAULT) and blocker:
                out.append(m.Alarm("RESET_REFUSED", f"cannot reset {self.fault}: {blocker}"))
                return
            if self.state is LaneState.ESTOP:
                out.append(m.WriteOutput("estop_reset", True))
            if self.state in (LaneState.ESTOP, LaneState.FAULT):
                self._reset_estop = self.state is LaneState.ESTOP  # the PLC shows fault 2 until it polls the pulse
                self.state, self.fault = LaneState.STOPPED, None
                if any(math.isfinite(z.length_mm) and z.length_mm > 0 for z in self.blind):
                    unseen = sum(z.length_mm for z in self.blind if math.isfinite(z.length_mm))
                    out.append(m.Alarm("UNSEEN_BELT", f"{unseen:.0f} mm of belt passed "
                                       f"the entry eye unseen ({self.blind[-1].why}): "
                                       "every item on it goes to INSPECT"))
        elif ev.action == "start":
            self._start(out)

    def _start(self, out: list[m.Command]) -> None:
        # Just after an E-stop reset, the PLC's fault 2 is the pulse not yet polled: it is written before
        # the start, so the PLC clears the fault first.
        blocker = self._blocker(allow_estop_code=self._reset_estop) or (
            f"held for {', '.join(self.holds)}" if self.holds else "")
        if self.state is LaneState.STOPPED and not blocker:
            self.state, self._reset_estop = LaneState.RUNNING, False
            out.append(m.WriteOutput("belt_speed_sp", self.lane.belt_speed_mm_s))
            out.append(m.WriteOutput("belt_run", True))
        else:
            out.append(m.Alarm("START_REFUSED", f"cannot start from {self.state.value}"
                               + (f" ({self.fault})" if self.fault else "") + (f": {blocker}" if blocker else "")))

    def why_not_running(self) -> str | None:
        """Why the belt is not running (None when it is): the fault, what holds it, what refuses its start."""
        if self.state is LaneState.RUNNING:
            return None
        if self.fault:
            return self.fault
        if self.holds:
            return next(iter(self.holds))
        return self._blocker() or None

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

    def _emit(self, track: Track, routed: str, t: float, out: list[m.Command], at_gate: bool = False) -> None:
        """The record of `track`, then its companions' (items touching it, behind it: they went where it went,
        the gate held for its whole extent). Of an item the gate eye saw arrive (`at_gate`), a companion may
        yet reach the eye on its own (`_companion_arriving`)."""
        out.append(routed_record(track, routed))
        for companion in track.companions:
            self._decide_now(companion, t)
            out.append(routed_record(companion, routed))
        if at_gate:
            self._companions, self._companions_routed = list(track.companions), routed
            self._companions_until_mm = self._gate_busy_to_mm


_READ = {"scanner": "scanned", "barcode": "identified"}
