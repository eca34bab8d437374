"""The lane's whole state as one frozen value: `LaneStatus`.

The runtime builds a new one at every change and publishes it on a `StatusBoard`; every reader (the
CLI over the control socket, the console, the MQTT status topic, metrics) reads the board's current
snapshot and never reaches into the runtime, the core or a driver. A snapshot is consistent: it was
built in one go on the event loop, between two events.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass

from drivers.health import DeviceHealth
from station.alarms import ActiveAlarm

DEVICES = ("plc", "scanner", "barcode", "scale", "detector", "mqtt", "ead")


@dataclass(frozen=True)
class DeviceStatus:
    device: str
    state: str  # connecting | up | degraded | down
    detail: str
    last_success: float | None  # time.time()
    errors: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, health: DeviceHealth, name: str | None = None) -> DeviceStatus:
        return cls(name or health.device, health.state.value, health.detail, health.last_success,
                   tuple(sorted(health.errors.items())))


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    hash: str  # the pin every item records


@dataclass(frozen=True)
class OnBelt:
    """An item the station is following now, nearest the gate first."""

    track_id: int
    item_id: str | None
    lead_mm: float | None  # how far its leading edge is from the entry eye
    decision: str | None  # CLEAR | INSPECT | None (not decided yet)
    armed: bool  # the gate carries its CLEAR
    problems: tuple[str, ...]  # reason codes that will send it to INSPECT
    decided_at: float | None = None  # time.time() of its decision


@dataclass(frozen=True)
class Counters:
    """Items this run has stored, and why the inspected ones were inspected."""

    items: int = 0
    cleared: int = 0
    inspected: int = 0
    by_reason: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Outbox:
    depth: int  # messages waiting for the broker
    oldest_at: float | None  # time.time() the oldest was queued
    published: int  # by this run

    def oldest_age_s(self, now: float) -> float | None:
        return None if self.oldest_at is None else round(max(0.0, now - self.oldest_at), 1)


@dataclass(frozen=True)
class LaneStatus:
    seq: int  # rises with every snapshot published
    at: float  # time.time() it was built
    site: str
    lane: str
    state: str  # STOPPED | RUNNING | PAUSED | FAULT | ESTOP | MAINTENANCE
    reason: str | None  # the fault, or what holds the belt
    manual_only: bool
    model: ModelInfo | None
    devices: tuple[DeviceStatus, ...]
    outbox: Outbox
    counters: Counters
    on_belt: tuple[OnBelt, ...]
    alarms: tuple[ActiveAlarm, ...]
    unseen_belt_mm: float  # belt that passed the entry eye unseen and is still ahead of the gate
    store_pending: int  # writes queued for the store

    def device(self, name: str) -> DeviceStatus | None:
        return next((d for d in self.devices if d.device == name), None)

    def as_dict(self) -> dict[str, object]:
        """As JSON wants it: errors and counters as objects, devices keyed by name."""
        data = asdict(self)
        data["devices"] = {d.device: {**asdict(d), "errors": dict(d.errors)} for d in self.devices}
        for device in data["devices"].values():
            del device["device"]
        data["counters"]["by_reason"] = dict(self.counters.by_reason)
        data["outbox"]["oldest_age_s"] = self.outbox.oldest_age_s(self.at)
        data["alarms"] = [a.as_dict() for a in self.alarms]
        return data

    def same_as(self, other: LaneStatus | None) -> bool:
        """Whether nothing but the sequence number and the build time differs."""
        return other is not None and _content(self) == _content(other)


def _content(status: LaneStatus) -> tuple[object, ...]:
    return tuple(getattr(status, name) for name in LaneStatus.__dataclass_fields__ if name not in ("seq", "at"))


class StatusBoard:
    """Where the runtime publishes snapshots and readers pick them up (or wait for a newer one)."""

    def __init__(self) -> None:
        self.current: LaneStatus | None = None
        self._changed = asyncio.Event()

    def publish(self, status: LaneStatus) -> bool:
        """Publish `status` if it says something new (returns whether it did)."""
        if status.same_as(self.current):
            return False
        self.current = status
        self._changed.set()
        self._changed = asyncio.Event()
        return True

    async def newer_than(self, seq: int) -> LaneStatus:
        """The first snapshot with a sequence number above `seq` (at once if there is one)."""
        while self.current is None or self.current.seq <= seq:
            await self._changed.wait()
        return self.current
