"""Where the belt is: the PLC's u32 encoder unwrapped into one position, and the stretches of belt the
station did not see pass the entry eye.

The encoder counts millimetres in 32 bits and wraps after about 50 days of belt at 1 m/s. The lane
core tracks items in *station millimetres*: the encoder's first reading, then every later reading's
distance from the one before (modulo 2**32), so positions stay right across the wrap. A reading that
moves backwards, or further than the belt can run between two polls, is a jump (a counter preset, a
PLC restart): the core refuses to track through it, and `rebase` carries on from the new count
without moving the station's position.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.profile import U32_WRAP, signed32

JITTER_MM = 2.0  # an encoder may step back a count or two at standstill; more is a jump


class Encoder:
    """The belt position in station millimetres, from successive raw u32 readings."""

    def __init__(self) -> None:
        self.mm: float | None = None  # None until the first reading
        self.raw: int | None = None

    def step(self, raw: int) -> float:
        """The distance from the last reading to `raw` (negative: backwards), without taking it."""
        return 0.0 if self.raw is None else float(signed32(raw - self.raw))

    def take(self, raw: int) -> None:
        """Move to `raw` by the distance `step` gives (the first reading is taken as it is)."""
        self.mm = float(raw) if self.mm is None else self.mm + self.step(raw)
        self.raw = raw

    def rebase(self, raw: int) -> None:
        """After a jump: `raw` is the count for the position the station already holds."""
        self.raw = raw

    def to_raw(self, mm: float) -> int:
        """The raw count the PLC's encoder will show when the belt is at station position `mm`."""
        assert self.mm is not None and self.raw is not None
        return round(self.raw + (mm - self.mm)) % U32_WRAP


@dataclass(frozen=True)
class BlindZone:
    """Belt that passed the entry eye while the station could not see it: entry positions from `lo_mm`
    to `hi_mm`. Any item on it is unknown, so the gate stays at INSPECT until all of it has passed."""

    lo_mm: float
    hi_mm: float
    why: str

    @property
    def length_mm(self) -> float:
        return self.hi_mm - self.lo_mm
