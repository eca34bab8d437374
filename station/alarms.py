"""Alarms with a lifecycle: raised, acknowledged (by whom), cleared (by whom).

Every raise is one row of the store's `alarms` table (the history); while rows of a code are not
cleared, that code is one *active* alarm, with how often it was raised and its latest detail. The
operator acknowledges an active alarm (seen, being dealt with) and clears it (dealt with); the station
clears an alarm itself only where the condition that raised it has ended by itself (DISK_FULL and
DISK_LOW once space is back), or where the operator's reset of the lane is its clear (a lane fault). A clear is
refused while the condition still holds: a scanner still unplugged, a lane still in fault.

Notices (a start or reset refused, a model loaded) are kept in the history born cleared: they
report, and ask nothing of anyone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

from station.contract import iso_time

NOTICES = frozenset({"START_REFUSED", "RESET_REFUSED", "DISK_SPACE_BACK", "MODEL_LOADED", "MODEL_ROLLBACK",
                     "CLEAR_REFUSED"})
ROUTINE = frozenset({"MODEL_LOADED", "MODEL_ROLLBACK", "DISK_SPACE_BACK"})  # notices logged at INFO, not WARNING
STATION = "station"  # who clears what the station clears by itself


@dataclass(frozen=True)
class ActiveAlarm:
    code: str
    detail: str  # the latest raise's
    first_at: float  # time.time()
    last_at: float
    count: int
    acked_by: str | None = None
    acked_at: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {"code": self.code, "detail": self.detail, "first_at": self.first_at, "last_at": self.last_at,
                "count": self.count, "acked_by": self.acked_by, "acked_at": self.acked_at}


class AlarmBook:
    """The active alarms, in the order they were first raised. Pure: the store keeps the rows."""

    def __init__(self, active: Iterable[ActiveAlarm] = ()) -> None:
        self._active = {alarm.code: alarm for alarm in active}

    @property
    def active(self) -> tuple[ActiveAlarm, ...]:
        return tuple(self._active.values())

    def get(self, code: str) -> ActiveAlarm | None:
        return self._active.get(code)

    def raised(self, code: str, detail: str, at: float) -> None:
        if code in NOTICES:
            return
        alarm = self._active.get(code)
        if alarm is None:
            self._active[code] = ActiveAlarm(code, detail, at, at, 1)
        else:  # raised again before anyone cleared it: still unacknowledged news
            self._active[code] = replace(alarm, detail=detail, last_at=at, count=alarm.count + 1,
                                         acked_by=None, acked_at=None)

    def acked(self, code: str, by: str, at: float) -> bool:
        alarm = self._active.get(code)
        if alarm is None:
            return False
        self._active[code] = replace(alarm, acked_by=by, acked_at=at)
        return True

    def cleared(self, code: str) -> bool:
        return self._active.pop(code, None) is not None


def alarm_payload(site: str, lane: str, event: str, code: str, detail: str, at: float, by: str | None,
                  notice: bool = False) -> dict[str, object]:
    """The `alarms` message of one raise, acknowledgement or clear (`event`: raised / acknowledged / cleared)."""
    return {
        "msg_id": f"{site}/{lane}/alarm/{code}/{event}/{at:.6f}",
        "schema": "screening/v1/alarm",
        "site": site,
        "lane": lane,
        "event": event,
        "code": code,
        "detail": detail,
        "notice": notice,  # a report that asks nothing of anyone, stored cleared
        "at": iso_time(at),
        "by": by,
    }
