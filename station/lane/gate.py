"""What the station has asked of the divert gate, and what the poll reads back of it.

The lane core decides *whether* the next item may go to CLEAR; `GateOutput` keeps the one CLEAR it
wrote (for which track, expiring at which raw encoder count), writes it again or cancels it until the
poll reads the wanted value back, and turns what the poll reads into alarms: a CLEAR on the output that
is not the station's own is a GATE_MISMATCH, and a CLEAR not read back in time is a GATE_WRITE_LATE.
Pure: it awaits nothing and reads no clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from station.lane import messages as m
from station.lane.track import Track

REWRITE_S = 0.25  # a gate output not read back after this long is written again (and a CLEAR is late)


@dataclass(frozen=True)
class Arm:
    """The CLEAR the station last wrote to the gate: for which track, expiring at which raw count."""

    track_id: int
    until_raw: int
    t: float


class GateOutput:
    def __init__(self) -> None:
        self.arm: Arm | None = None  # what the core has asked the gate for (None: INSPECT)
        self._cancel_t: float | None = None  # when the core last wrote the gate back to INSPECT
        self._cancel_since: float | None = None  # when it first did, since the output last read INSPECT
        self._mismatch = False  # a GATE_MISMATCH is being reported (once per episode)

    def read_back(self, now: dict[str, bool | int | float], t: float, tracks: list[Track],
                  out: list[m.Command]) -> None:
        """Compare the gate output the poll read with what was asked for (before this poll's edges)."""
        on_gate, arm = bool(now.get("gate_clear")), self.arm
        ours = arm is not None and int(now.get("gate_clear_until_mm", arm.until_raw)) == arm.until_raw
        if on_gate and ours:
            assert arm is not None
            for track in tracks:
                if track.track_id == arm.track_id:
                    track.clear_on_gate = True
            return
        cancelling = self._cancel_since is not None and t - self._cancel_since <= REWRITE_S
        if on_gate and not cancelling and not self._mismatch and not bool(now.get("gate_eye")):
            self._mismatch = True
            what = "an expiry the station did not write" if arm is not None else "no CLEAR the station wrote"
            detail = f"the gate output reads CLEAR with {what}"
            if tracks:
                tracks[0].add_problem("GATE_MISMATCH", detail)
            out.append(m.Alarm("GATE_MISMATCH", detail))
        elif not on_gate:
            self._mismatch, self._cancel_since = False, None

    def drive(self, want: Track | None, until_raw: int, values: dict[str, bool | int | float], t: float,
              out: list[m.Command]) -> None:
        """Ask for CLEAR for `want` (expiring at `until_raw`), or for INSPECT when `want` is None; write
        again what the poll does not read back."""
        on_gate, arm = bool(values.get("gate_clear")), self.arm
        if want is not None:
            if arm is None or arm.track_id != want.track_id or (not on_gate and t - arm.t > REWRITE_S):
                if "gate_clear_until_mm" in values:
                    # first: the CLEAR never lands without it
                    out.append(m.WriteOutput("gate_clear_until_mm", until_raw))
                out.append(m.WriteOutput("gate_clear", True))
                self.arm, self._cancel_t, self._cancel_since = Arm(want.track_id, until_raw, t), None, None
                if want.armed_with is None:
                    want.armed_with, want.armed_decided_t = want.decision, want.decided_t
            return
        if arm is not None or on_gate:
            self.arm = None
            if self._cancel_t is None or t - self._cancel_t > REWRITE_S:
                self._cancel_t = t
                self._cancel_since = self._cancel_since or t
                out.append(m.WriteOutput("gate_clear", False))

    def check_late(self, head: Track | None, t: float, out: list[m.Command]) -> None:
        """A CLEAR the poll has not read back on the gate within REWRITE_S of writing it: the PLC is not
        applying the station's writes in time, so the item it was for goes to INSPECT."""
        arm = self.arm
        if arm is None or head is None or head.track_id != arm.track_id or head.clear_on_gate:
            return
        if t - arm.t > REWRITE_S and head.add_problem("GATE_WRITE_LATE", "its CLEAR was not read back on the gate "
                                                      f"within {REWRITE_S * 1000:.0f} ms"):
            out.append(m.Alarm("GATE_WRITE_LATE", f"track {head.track_id}: gate CLEAR written {(t - arm.t) * 1000:.0f} "
                               "ms ago and not read back: the PLC applies writes late"))

    def passed(self, head: Track | None, t: float, out: list[m.Command]) -> None:
        """An item reached the gate: the PLC consumes the output as it passes. Its CLEAR not yet read
        back is a late write (the item goes to INSPECT, whatever the gate did)."""
        arm, self.arm, self._cancel_t = self.arm, None, None
        if arm is not None and head is not None and head.track_id == arm.track_id and not head.clear_on_gate:
            detail = f"its CLEAR, written {(t - arm.t) * 1000:.0f} ms before, was not read back when it arrived"
            if head.add_problem("GATE_WRITE_LATE", detail):
                out.append(m.Alarm("GATE_WRITE_LATE", f"track {head.track_id}: {detail}"))
