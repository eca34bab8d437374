"""A lane in virtual time: the simulator's pure belt and PLC program wired to the pure lane core.

No sockets and no clock: PLC polls, writes, heartbeats, serial events and inference results are
scheduled events on a virtual timeline, so the lane logic can be run through thousands of situations in
a property test. The PLC is `simulator.plc_program.PlcProgram`, the program the end-to-end runs meet
(one-shot gate with expiry, heartbeat watchdog, E-stop latch, u32 encoder); the link between it and
the core can lag writes and go silent, as `station.lane.runtime` and `drivers.plc` see it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.profile import load_profile
from simulator.belt import Belt, EnteredTunnel, Geometry, LeftTunnel, ReachedBarcode, Routed, SimItem
from simulator.plc_program import PlcProgram
from station.config import LaneSection
from station.domain import Detected, Reason
from station.lane import messages as m
from station.lane.core import LaneCore

RESOLUTION_MM = 5.0
HEARTBEAT_S = 0.2  # the driver's heartbeat interval
STALE_S = 1.0  # the runtime declares the link lost after this long without a snapshot


@dataclass
class Parcel:
    """One item's truth and how the (virtual) devices treat it."""

    length_mm: float
    barcode: str | None
    threat: bool = False
    inference_s: float = 0.03  # from image ready to inference result
    inference_fails: bool = False
    has_ead: bool = True


@dataclass
class Outcome:
    parcel: Parcel
    bin: str | None = None
    deadline_t: float | None = None  # when its lead crossed gate_mm - gate_margin_mm
    on_belt_at_estop: bool = False
    unseen_entry: bool = False  # its lead passed the entry eye while the station could not see it
    unread: bool = False  # it passed the barcode reader or the scanner while that reader was unplugged or mute


@dataclass
class VirtualLane:
    lane: LaneSection = field(default_factory=LaneSection)
    poll_s: float = 0.02
    write_latency_s: float = 0.004
    barcode_latency_s: float = 0.01
    image_latency_s: float = 0.04
    physics_dt: float = 0.004
    # A poll of several Modbus requests is not one PLC scan: the diverter's report may be read before the
    # scan that routed the item whose gate-eye edge the same poll shows. True: it always lags one poll.
    torn_feedback: bool = False
    profile: str = "default"

    def __post_init__(self) -> None:
        g = Geometry(self.lane.barcode_mm, self.lane.tunnel_start_mm, self.lane.tunnel_end_mm, self.lane.gate_mm,
                     scale_mm=self.lane.scale_mm)
        self.belt = Belt(g)
        self.plc = PlcProgram(self.belt, load_profile(self.profile))
        self.core = LaneCore(self.lane)
        self.t = 0.0
        self.routed: list[m.ItemRouted] = []
        self.alarms: list[m.Alarm] = []
        self.outcomes: dict[int, Outcome] = {}
        self.link_up = True
        self._queue: list[tuple[float, int, object]] = []
        self._order = itertools.count()
        self._scan_of: dict[str, int] = {}
        self._heartbeat_on = True
        self._heartbeat = 0
        self._next_heartbeat = HEARTBEAT_S
        self._last_snapshot_t = 0.0
        self._lost_reported = False
        self._polled_position_clear = False  # what the previous poll saw, for torn_feedback
        self._last_write_t = 0.0  # writes land in the order they were sent
        self._to_place: list[tuple[Parcel, float]] = []
        self._placed = 0
        self.mute: set[str] = set()  # readers (scanner, barcode) that say nothing: unplugged, or silent
        # Ground truth of what the polls showed: eye -> indices of the items whose gap to the item ahead was
        # seen there (a poll read the eye clear between the two). A gap shorter than the belt runs in a poll
        # may fall between two polls at one eye and not at the other.
        self.gaps_seen: dict[str, set[int]] = {"entry_eye": set(), "gate_eye": set()}

    # ---- scheduling ---------------------------------------------------------------------------

    def at(self, t: float, what: object) -> None:
        heapq.heappush(self._queue, (t, next(self._order), what))

    def feed(self, core_event: m.Event) -> None:
        pending = [core_event]
        while pending:
            for cmd in self.core.handle(pending.pop(0)):
                pending.extend(self._execute(cmd))

    def _execute(self, cmd: m.Command) -> list[m.Event]:
        if isinstance(cmd, m.WriteOutput):
            if not self.link_up:
                return [m.PlcLink(self.t, False, f"write {cmd.name} failed")] if self.core.plc_up else []
            self._last_write_t = max(self._last_write_t, self.t + self.write_latency_s)
            self.at(self._last_write_t, ("write", cmd.name, cmd.value))
        elif isinstance(cmd, m.SetHeartbeat):
            self._heartbeat_on = cmd.on
        elif isinstance(cmd, m.RunInference):
            index = self._scan_of[cmd.path]
            parcel = self.outcomes[index].parcel
            self.at(self.t + parcel.inference_s, ("inference", cmd.track_id, parcel))
        elif isinstance(cmd, m.LookUpEad):
            index = next(i for i, o in self.outcomes.items() if o.parcel.barcode == cmd.item_id)
            return [m.EadResolved(self.t, cmd.track_id, self.outcomes[index].parcel.has_ead, 1)]
        elif isinstance(cmd, m.Alarm):
            self.alarms.append(cmd)
        elif isinstance(cmd, m.ItemRouted):
            self.routed.append(cmd)
        return []

    def _apply(self, what: object) -> None:
        if isinstance(what, tuple) and what[0] == "write":
            _, name, value = what
            self.plc.set(name, value)  # a write lands in the PLC's image; its next scan acts on it
        elif isinstance(what, tuple) and what[0] == "inference":
            _, track_id, parcel = what
            if parcel.inference_fails:
                self.feed(m.InferenceFailed(self.t, track_id, Reason("IMAGE_ERROR", "corrupt")))
            else:
                dets = (Detected("gun", 0.9, (1, 1, 5, 5), True),) if parcel.threat else ()
                self.feed(m.InferenceDone(self.t, track_id, dets))
        elif isinstance(what, m.Event.__args__):  # type: ignore[attr-defined]
            self.feed(what)
        elif callable(what):
            what()

    def _on_belt_event(self, ev: object) -> None:
        reader = "barcode" if isinstance(ev, ReachedBarcode) else "scanner" if isinstance(
            ev, (EnteredTunnel, LeftTunnel)) else None
        if reader in self.mute:
            self.outcomes[ev.item.index].unread = True  # type: ignore[attr-defined]
            return
        if isinstance(ev, ReachedBarcode):
            self.at(self.t + self.barcode_latency_s,
                    m.BarcodeScanned(self.t + self.barcode_latency_s, self.outcomes[ev.item.index].parcel.barcode))
        elif isinstance(ev, EnteredTunnel):
            self.at(self.t + 0.002, m.ScanStarted(self.t + 0.002, f"scan-{ev.item.index}"))
        elif isinstance(ev, LeftTunnel):
            path = f"/spool/scan-{ev.item.index}.xde"
            self._scan_of[path] = ev.item.index
            ready = self.t + self.image_latency_s
            self.at(ready, m.ScanDone(ready, f"scan-{ev.item.index}", path, "0" * 64))
        elif isinstance(ev, Routed):
            self.outcomes[ev.item.index].bin = ev.bin

    # ---- the link ------------------------------------------------------------------------------

    def snapshot(self) -> m.Snapshot:
        values = self.plc.readable()
        if self.torn_feedback:
            values["gate_position_clear"] = self._polled_position_clear
        return m.Snapshot(self.t, values)

    def _poll(self) -> None:
        if self.link_up:
            snap = self.snapshot()
            self._polled_position_clear = bool(self.plc.get("gate_position_clear"))
            self._last_snapshot_t, self._lost_reported = self.t, False
            self._note_gaps(snap)
            self.feed(snap)
        elif not self._lost_reported and self.t - self._last_snapshot_t >= STALE_S:
            self._lost_reported = True
            self.feed(m.PlcLink(self.t, False, f"no PLC poll answered for {STALE_S:g} s"))

    def _note_gaps(self, snap: m.Snapshot) -> None:
        for eye, at_mm in (("entry_eye", 0.0), ("gate_eye", self.lane.gate_mm)):
            coming = [it.index for it in self.belt.items if it.lead_mm < at_mm]  # most downstream first
            if not snap.values.get(eye) and coming:
                self.gaps_seen[eye].add(coming[0])

    def _beat(self) -> None:
        if self.t >= self._next_heartbeat:
            self._next_heartbeat += HEARTBEAT_S
            if self._heartbeat_on and self.link_up:
                self._heartbeat = (self._heartbeat + 1) & 0xFFFF
                self._last_write_t = max(self._last_write_t, self.t + self.write_latency_s)
                self.at(self._last_write_t, ("write", "heartbeat", self._heartbeat))

    def lose_link(self, seconds: float) -> None:
        """The PLC stops answering for `seconds` (polls and writes are lost; the belt runs on)."""
        self.link_up = False
        self.at(self.t + seconds, self._restore_link)

    def _restore_link(self) -> None:
        self.link_up = True

    # ---- running ------------------------------------------------------------------------------

    def start(self) -> None:
        self.feed(self.snapshot())
        self.feed(m.Operator(self.t, "start"))

    def add_parcels(self, parcels: list[Parcel], gaps_mm: list[float]) -> None:
        """Place parcels as the belt makes room: each waits for the previous one plus its gap."""
        self._to_place.extend(zip(parcels, gaps_mm))

    def run_until(self, t_end: float, done: Callable[[], bool] | None = None) -> None:
        """Run the lane to `t_end`, or until `done()` holds at a poll."""
        next_poll = self.t
        # The station sees whole-mm encoder counts and extrapolates between polls; a few mm is its resolution.
        deadline_mm = self.lane.gate_mm - self.lane.gate_margin_mm + RESOLUTION_MM
        while self.t < t_end:
            while self._queue and self._queue[0][0] <= self.t:
                _, _, what = heapq.heappop(self._queue)
                self._apply(what)
            if self.t >= next_poll:
                self._poll()
                next_poll += self.poll_s
                if done is not None and done():
                    return
            self._beat()
            self._place_next()
            leads = {item.index: item.lead_mm for item in self.belt.items}
            for ev in self.plc.scan(self.t, self.physics_dt):
                self._on_belt_event(ev)
            for item in self.belt.items:
                outcome = self.outcomes[item.index]
                if outcome.deadline_t is None and item.lead_mm >= deadline_mm:
                    outcome.deadline_t = self.t + self.physics_dt  # the step that crossed it ends then
                if not self.link_up and leads.get(item.index, 0.0) <= 0.0 < item.lead_mm:
                    outcome.unseen_entry = True  # its lead passed the entry eye while the station was blind
            self.t += self.physics_dt

    def _place_next(self) -> None:
        if self._placed >= len(self._to_place) or not self.belt.running:
            return
        parcel, gap = self._to_place[self._placed]
        items = self.belt.items
        if items and items[-1].trail_mm < self.belt.geometry.feed_mm + gap:
            return
        item = SimItem(index=self._placed, length_mm=parcel.length_mm)
        gap_before, self.belt.min_gap_mm = self.belt.min_gap_mm, min(self.belt.min_gap_mm, gap)
        try:
            placed = self.belt.place(item)
        finally:
            self.belt.min_gap_mm = gap_before
        if placed:
            self.outcomes[self._placed] = Outcome(parcel)
            self._placed += 1

    def unplug(self, reader: str, *, tell: bool = True) -> None:
        """The reader goes quiet; `tell`: its driver reports the port gone (a silent reader says nothing)."""
        self.mute.add(reader)
        if tell:
            self.feed(m.ReaderLink(self.t, reader, False, f"{reader} unplugged"))  # type: ignore[arg-type]

    def replug(self, reader: str) -> None:
        self.mute.discard(reader)
        self.feed(m.ReaderLink(self.t, reader, True, f"{reader} back"))  # type: ignore[arg-type]

    def clear_alarms(self) -> None:
        """The operator clears every alarm that holds the belt and may be cleared now."""
        for code in list(self.core.holds):
            if not self.core.why_held(code):
                self.feed(m.AlarmCleared(self.t, code))

    def press_estop(self) -> None:
        self.plc.press_estop()
        for item in self.belt.items:
            if item.routed is None and item.lead_mm > 0:  # tracked (past the entry eye), not yet through the gate
                self.outcomes[item.index].on_belt_at_estop = True

    def release_estop(self) -> None:
        self.plc.release_estop()
