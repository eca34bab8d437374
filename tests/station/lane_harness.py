"""A lane in virtual time: the simulator's pure belt physics wired to the pure lane core.

No sockets and no clock: PLC polls, serial events and inference results are scheduled events on a
virtual timeline, so the lane logic can be run through thousands of situations in a property test.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field

from simulator.belt import Belt, Geometry, Routed, ReachedBarcode, EnteredTunnel, LeftTunnel, SimItem
from station.config import LaneSection
from station.lane import messages as m
from station.lane.core import LaneCore


RESOLUTION_MM = 5.0


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

    def __post_init__(self) -> None:
        g = Geometry(self.lane.barcode_mm, self.lane.tunnel_start_mm, self.lane.tunnel_end_mm, self.lane.gate_mm,
                     scale_mm=self.lane.scale_mm)
        self.belt = Belt(g)
        self.core = LaneCore(self.lane)
        self.t = 0.0
        self.routed: list[m.ItemRouted] = []
        self.alarms: list[m.Alarm] = []
        self.outcomes: dict[int, Outcome] = {}
        self.inference_requests: dict[int, int] = {}  # track id -> belt index
        self._queue: list[tuple[float, int, object]] = []
        self._order = itertools.count()
        self._scan_of: dict[str, int] = {}
        self.gate_position_clear = False
        self._polled_position_clear = False  # what the previous poll saw, for torn_feedback

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
            self.at(self.t + self.write_latency_s, cmd)
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
        if isinstance(what, m.WriteOutput):
            if what.name == "gate_clear":
                self.belt.gate_clear = bool(what.value)
            elif what.name == "belt_run":
                self.belt.run_command = bool(what.value) and not self.belt.estop and self.belt.fault_code == 0
            elif what.name == "belt_speed_sp":
                self.belt.speed_setpoint_mm_s = float(what.value)
            elif what.name == "estop_reset" and not self.belt.estop:
                self.belt.fault_code = 0
        elif isinstance(what, tuple) and what[0] == "inference":
            _, track_id, parcel = what
            if parcel.inference_fails:
                self.feed(m.InferenceFailed(self.t, track_id, m.Reason("IMAGE_ERROR", "corrupt")))
            else:
                dets = (m.Detected("gun", 0.9, (1, 1, 5, 5), True),) if parcel.threat else ()
                self.feed(m.InferenceDone(self.t, track_id, dets))
        elif isinstance(what, m.Event.__args__):  # type: ignore[attr-defined]
            self.feed(what)
        elif callable(what):
            what()

    def _on_belt_event(self, ev: object) -> None:
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
            self.belt.gate_clear = False  # the PLC's gate output is one-shot
            self.gate_position_clear = ev.bin == "CLEAR"  # and its diverter reports where the item went

    # ---- running ------------------------------------------------------------------------------

    def snapshot(self) -> m.Snapshot:
        b = self.belt
        return m.Snapshot(self.t, {
            "encoder": int(b.encoder_mm), **b.eyes, "estop_active": b.estop, "fault_code": b.fault_code,
            "gate_clear": b.gate_clear, "belt_running": b.running, "belt_run": b.run_command, "belt_speed": int(b.speed_mm_s),
            "gate_position_clear": self._polled_position_clear if self.torn_feedback else self.gate_position_clear,
        })

    def start(self) -> None:
        self.feed(self.snapshot())
        self.feed(m.Operator(self.t, "start"))

    def add_parcels(self, parcels: list[Parcel], gaps_mm: list[float]) -> None:
        """Place parcels as the belt makes room: each waits for the previous one plus its gap."""
        self._to_place = list(zip(parcels, gaps_mm))
        self._placed = 0

    def run_until(self, t_end: float) -> None:
        next_poll = self.t
        # The station sees whole-mm encoder counts and extrapolates between polls; a few mm is its resolution.
        deadline_mm = self.lane.gate_mm - self.lane.gate_margin_mm + RESOLUTION_MM
        while self.t < t_end:
            while self._queue and self._queue[0][0] <= self.t:
                _, _, what = heapq.heappop(self._queue)
                self._apply(what)
            if self.t >= next_poll:
                self.feed(self.snapshot())
                self._polled_position_clear = self.gate_position_clear
                next_poll += self.poll_s
            self._place_next()
            for ev in self.belt.step(self.physics_dt):
                self._on_belt_event(ev)
            for item in self.belt.items:
                outcome = self.outcomes[item.index]
                if outcome.deadline_t is None and item.lead_mm >= deadline_mm:
                    outcome.deadline_t = self.t + self.physics_dt  # the step that crossed it ends then
            self.t += self.physics_dt

    def _place_next(self) -> None:
        if self._placed >= len(self._to_place) or not self.belt.running:
            return
        parcel, gap = self._to_place[self._placed]
        items = self.belt.items
        if items and items[-1].trail_mm < self.belt.geometry.feed_mm + gap:
            return
        item = SimItem(index=self._placed, length_mm=parcel.length_mm)
        if self.belt.place(item):
            self.outcomes[self._placed] = Outcome(parcel)
            self._placed += 1

    def press_estop(self) -> None:
        self.belt.estop = True
        self.belt.fault_code = 2
        for item in self.belt.items:
            if item.routed is None and item.lead_mm > 0:  # tracked (past the entry eye), not yet through the gate
                self.outcomes[item.index].on_belt_at_estop = True

    def release_estop(self) -> None:
        self.belt.estop = False
