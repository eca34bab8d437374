"""Belt physics of the simulated lane: pure, no I/O, no asyncio, driven by `Belt.step(dt)`.

Positions are millimetres along the belt, 0 at the entry photo-eye. Every item rides the belt,
so all items move by the same distance in a step; events are reported in the physical order in
which they happened inside the step, so a large `dt` never reorders or skips an event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CLEAR = "CLEAR"
INSPECT = "INSPECT"
DEPART_MARGIN_MM = 1.0  # the trailing edge must pass the gate by this much to be in the bin


@dataclass(frozen=True)
class Geometry:
    barcode_mm: float = 250.0
    tunnel_start_mm: float = 500.0
    tunnel_end_mm: float = 1300.0
    gate_mm: float = 2500.0
    feed_mm: float = -400.0
    scale_mm: float = 100.0  # end of the weigh conveyor: an item is weighed as its trailing edge leaves it


@dataclass(eq=False)
class SimItem:
    """A parcel on the belt, equal only to itself. `payload` is opaque: the orchestrator's truth."""

    index: int
    length_mm: float
    lead_mm: float = 0.0
    weight_kg: float = 0.0
    routed: str | None = None  # CLEAR | INSPECT once the lead reached the gate
    payload: object = None

    @property
    def trail_mm(self) -> float:
        return self.lead_mm - self.length_mm


@dataclass(frozen=True)
class Weighed:
    item: SimItem


@dataclass(frozen=True)
class Entered:
    """The leading edge reached the entry photo-eye (0 mm)."""

    item: SimItem


@dataclass(frozen=True)
class ReachedBarcode:
    item: SimItem


@dataclass(frozen=True)
class EnteredTunnel:
    item: SimItem


@dataclass(frozen=True)
class LeftTunnel:
    item: SimItem


@dataclass(frozen=True)
class Routed:
    item: SimItem
    bin: str


@dataclass(frozen=True)
class Departed:
    item: SimItem


BeltEvent = Entered | Weighed | ReachedBarcode | EnteredTunnel | LeftTunnel | Routed | Departed


class Belt:
    """The conveyor, its items, eyes and encoder.

    Guarantees: the belt moves only while `run_command and not estop and fault_code == 0`;
    pressing E-stop (`estop = True`) stops it at once and drops `run_command`; every item that
    is placed is routed exactly once (when its lead crosses the gate, to CLEAR only if
    `gate_clear` is on at that instant) and then departs, in placement order.
    """

    def __init__(
        self, geometry: Geometry = Geometry(), accel_mm_s2: float = 4000.0, min_gap_mm: float = 150.0
    ) -> None:
        self.geometry = geometry
        self.accel_mm_s2 = accel_mm_s2
        self.min_gap_mm = min_gap_mm
        self.run_command = False
        self.speed_setpoint_mm_s = 0.0
        self.gate_clear = False
        self.fault_code = 0
        self._estop = False
        self._speed = 0.0
        self._encoder = 0.0
        self._items: list[SimItem] = []
        self.cleared = 0
        self.inspected = 0

    # ---- state -------------------------------------------------------------------------------
    @property
    def estop(self) -> bool:
        return self._estop

    @estop.setter
    def estop(self, pressed: bool) -> None:
        self._estop = pressed
        if pressed:  # a real E-stop cuts the drive: no ramp-down
            self._speed = 0.0
            self.run_command = False

    @property
    def speed_mm_s(self) -> float:
        return self._speed

    @property
    def running(self) -> bool:
        return self._speed > 0.0

    @property
    def encoder_mm(self) -> float:
        return self._encoder

    @property
    def items(self) -> tuple[SimItem, ...]:
        """Items on the belt, most downstream first."""
        return tuple(self._items)

    @property
    def eyes(self) -> dict[str, bool]:
        g = self.geometry
        return {
            "entry_eye": self._blocked(0.0),
            "tunnel_exit_eye": self._blocked(g.tunnel_end_mm),
            "gate_eye": self._blocked(g.gate_mm),
        }

    def _blocked(self, x: float) -> bool:
        return any(it.trail_mm < x <= it.lead_mm for it in self._items)

    # ---- actions -----------------------------------------------------------------------------
    def place(self, item: SimItem) -> bool:
        """Put `item` with its lead at feed_mm, unless the previous item is still within min_gap."""
        feed = self.geometry.feed_mm
        if self._items and self._items[-1].trail_mm < feed + self.min_gap_mm:
            return False
        item.lead_mm = feed
        item.routed = None
        self._items.append(item)
        return True

    def remove(self, item: SimItem) -> None:
        """Take an item off the belt without routing it (fault injection: a jam, an item falling off)."""
        self._items = [it for it in self._items if it is not item]

    def step(self, dt: float) -> list[BeltEvent]:
        """Advance by `dt` seconds; returns the events of this step in physical order."""
        if dt <= 0.0:
            return []
        if self._estop:
            self.run_command = False
        allowed = self.run_command and not self._estop and self.fault_code == 0
        target = max(0.0, self.speed_setpoint_mm_s) if allowed else 0.0
        v0 = self._speed
        # ramp for as long as it takes to reach the target, then cruise: exact for any dt
        if self.accel_mm_s2 > 0.0:
            ramp_t = min(dt, abs(target - v0) / self.accel_mm_s2)
            v1 = v0 + math.copysign(self.accel_mm_s2 * ramp_t, target - v0)
        else:  # no acceleration limit: speed changes instantly
            ramp_t, v1 = 0.0, target
        self._speed = v1
        distance = (v0 + v1) / 2.0 * ramp_t + v1 * (dt - ramp_t)
        if distance <= 0.0:
            return []
        self._encoder += distance
        return self._advance(distance)

    def _advance(self, d: float) -> list[BeltEvent]:
        g = self.geometry
        timed: list[tuple[float, int, BeltEvent]] = []  # (distance into the step, order, event)
        seq = 0
        for item in self._items:
            lead0, trail0 = item.lead_mm, item.trail_mm
            crossings: list[tuple[float, float, BeltEvent]] = [
                (lead0, 0.0, Entered(item)),
                (trail0, g.scale_mm, Weighed(item)),
                (lead0, g.barcode_mm, ReachedBarcode(item)),
                (lead0, g.tunnel_start_mm, EnteredTunnel(item)),
                (trail0, g.tunnel_end_mm, LeftTunnel(item)),
            ]
            for edge, mark, event in crossings:
                if edge < mark <= edge + d:
                    timed.append((mark - edge, seq, event))
                    seq += 1
            if lead0 < g.gate_mm <= lead0 + d:
                # the gate reads its output once, as the lead arrives
                item.routed = CLEAR if self.gate_clear else INSPECT
                timed.append((g.gate_mm - lead0, seq, Routed(item, item.routed)))
                seq += 1
            out = g.gate_mm + DEPART_MARGIN_MM
            if trail0 < out <= trail0 + d:
                timed.append((out - trail0, seq, Departed(item)))
                seq += 1
            item.lead_mm = lead0 + d
        timed.sort(key=lambda t: (t[0], t[1]))
        events = [t[2] for t in timed]
        for event in events:
            if isinstance(event, Departed):
                self._items = [it for it in self._items if it is not event.item]
                if event.item.routed == CLEAR:
                    self.cleared += 1
                else:
                    self.inspected += 1
        return events
