"""Device health as every driver reports it: a small value the rest of the station reads."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from enum import StrEnum


class HealthState(StrEnum):
    CONNECTING = "connecting"
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"


@dataclass(frozen=True)
class DeviceHealth:
    """A snapshot of one device's health. `errors` counts by kind and only grows."""

    device: str
    state: HealthState = HealthState.CONNECTING
    last_success: float | None = None  # time.time() of the last good exchange
    detail: str = ""
    errors: dict[str, int] = field(default_factory=dict)

    def ok(self, detail: str = "") -> DeviceHealth:
        return replace(self, state=HealthState.UP, last_success=time.time(), detail=detail)

    def failed(self, kind: str, detail: str, state: HealthState = HealthState.DOWN) -> DeviceHealth:
        errors = dict(self.errors)
        errors[kind] = errors.get(kind, 0) + 1
        return replace(self, state=state, detail=detail, errors=errors)

    def as_dict(self) -> dict[str, object]:
        return {
            "device": self.device,
            "state": self.state.value,
            "last_success": self.last_success,
            "detail": self.detail,
            "errors": dict(self.errors),
        }
