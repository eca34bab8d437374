"""The simulated PLC's program, pure: its register image, its scan and the belt it drives.

`SimPlc` wraps it in a real Modbus server (TCP or RTU); the lane core's virtual-time tests drive it
directly. One program for both, so the tests check the station against the same PLC behaviour that
the end-to-end runs meet:

- `belt_run` is forced to 0 while `fault_code` != 0 or E-stop is pressed;
- a running belt whose heartbeat has not changed for `heartbeat_timeout` s (counted from the later
  of the last change and the start command) stops with fault 1 until the heartbeat changes;
- E-stop latches fault 2 until released *and* acknowledged with an `estop_reset` pulse;
- `gate_clear` is one-shot: the gate consumes it for the item whose leading edge arrives, so a
  CLEAR can never route a second item. Where the profile has `gate_clear_until_mm`, a CLEAR also
  expires once the encoder passes that position (compared modulo 2**32): a CLEAR written for one
  item that lands late cannot route the item behind it;
- the encoder is a u32 of millimetres and wraps; `shift_encoder` moves what it reads (a counter
  preset, a PLC restart) without moving the belt.
"""

from __future__ import annotations

import logging

from drivers.plc import FaultCode
from drivers.profile import U32_WRAP, Profile, Value, decode, encode, signed32
from simulator.belt import CLEAR, Belt, BeltEvent, Routed, Weighed

log = logging.getLogger(__name__)

REQUIRED = (
    "belt_run", "gate_clear", "estop_reset", "entry_eye", "tunnel_exit_eye", "gate_eye",
    "estop_active", "belt_running", "belt_speed_sp", "heartbeat", "encoder", "belt_speed",
    "fault_code", "cleared_count", "inspected_count",
)


class PlcProgram:
    """The PLC's tables (`image`, raw words and bits as Modbus sees them) and one `scan` of its program."""

    def __init__(self, belt: Belt, profile: Profile, heartbeat_timeout: float = 1.0, now: float = 0.0) -> None:
        missing = [n for n in REQUIRED if not profile.has(n)]
        if missing:
            raise ValueError(f"profile {profile.name!r} lacks registers the PLC program needs: {missing}")
        self.belt, self.profile = belt, profile
        self.heartbeat_timeout = heartbeat_timeout
        self.image: dict[str, list[int] | list[bool]] = {
            "coil": [False] * max(1, profile.table_size("coil")),
            "discrete": [False] * max(1, profile.table_size("discrete")),
            "holding": [0] * max(1, profile.table_size("holding")),
            "input": [0] * max(1, profile.table_size("input")),
        }
        self.fault_code = FaultCode.NONE
        self.encoder_offset = 0  # added to the belt's travel in what the encoder reads
        self.expired_clears = 0  # CLEARs that expired unused (landed too late for their item)
        self._gate_position_clear = False  # diverter feedback: where the gate sent the last item
        self._weight_g, self._weigh_count = 0, 0
        self._last_heartbeat: int | None = None
        self._heartbeat_at = self._run_since = now
        self.refresh_outputs()

    # ---- what the outside world does to the PLC --------------------------------------------------

    def press_estop(self) -> None:
        self.belt.estop = True  # the belt stops at once
        self.fault_code = FaultCode.ESTOP
        self.belt.fault_code = self.fault_code
        self.set("belt_run", False)
        self.refresh_outputs()

    def release_estop(self) -> None:
        """Release the button; fault 2 stays latched until the station pulses estop_reset."""
        self.belt.estop = False
        self.refresh_outputs()

    def shift_encoder(self, mm: int) -> None:
        """Make the encoder read `mm` more (or less) than the belt's travel from now on."""
        self.encoder_offset += mm
        self.refresh_outputs()

    @property
    def encoder(self) -> int:
        return (int(self.belt.encoder_mm) + self.encoder_offset) % U32_WRAP

    # ---- the scan cycle -----------------------------------------------------------------------------

    def scan(self, now: float, dt: float) -> list[BeltEvent]:
        """One PLC scan at time `now`: program on the image's inputs, a belt step of `dt` s, outputs."""
        self._program(now)
        events = self.belt.step(dt)
        for ev in events:
            if isinstance(ev, Routed):
                self.set("gate_clear", False)  # consumed by the item now passing
                self.belt.gate_clear = False
                self._gate_position_clear = ev.bin == CLEAR
            elif isinstance(ev, Weighed) and self.profile.has("weight_g"):
                self._weight_g, self._weigh_count = round(ev.item.weight_kg * 1000), self._weigh_count + 1
        self.refresh_outputs()
        return events

    def _program(self, now: float) -> None:
        belt = self.belt
        if self.get("estop_reset"):
            self.set("estop_reset", False)  # a pulse: the PLC acknowledges by clearing it
            if not belt.estop and self.fault_code == FaultCode.ESTOP:
                self.fault_code = FaultCode.NONE
                log.info("simulated PLC: E-stop reset")
        heartbeat = int(self.get("heartbeat"))
        if heartbeat != self._last_heartbeat:
            self._last_heartbeat, self._heartbeat_at = heartbeat, now
            if self.fault_code == FaultCode.HEARTBEAT_STALE:
                self.fault_code = FaultCode.NONE
        if belt.estop or self.fault_code != FaultCode.NONE:
            self.set("belt_run", False)
        run = bool(self.get("belt_run"))
        if run and not belt.run_command:
            self._run_since = now
        if run and now - max(self._heartbeat_at, self._run_since) > self.heartbeat_timeout:
            log.warning("simulated PLC: heartbeat stale for %.2f s, stopping the belt", now - self._heartbeat_at)
            self.fault_code = FaultCode.HEARTBEAT_STALE
            self.set("belt_run", False)
            run = False
        belt.run_command = run
        belt.fault_code = int(self.fault_code)
        sp = self.profile.by_name("belt_speed_sp")
        speed = float(self.get("belt_speed_sp"))
        belt.speed_setpoint_mm_s = min(speed, sp.max) if sp.max is not None else speed
        if self.get("gate_clear") and self._clear_expired():
            self.set("gate_clear", False)
            self.expired_clears += 1
        belt.gate_clear = bool(self.get("gate_clear"))

    def _clear_expired(self) -> bool:
        if not self.profile.has("gate_clear_until_mm"):
            return False
        return signed32(int(self.get("gate_clear_until_mm")) - self.encoder) < 0

    def refresh_outputs(self) -> None:
        belt = self.belt
        for name, blocked in belt.eyes.items():
            self.set(name, blocked)
        self.set("estop_active", belt.estop)
        if self.profile.has("gate_position_clear"):
            self.set("gate_position_clear", self._gate_position_clear)
        self.set("belt_running", belt.running)
        self.set("encoder", self.encoder)
        self.set("belt_speed", min(0xFFFF, round(belt.speed_mm_s)))
        self.set("fault_code", int(self.fault_code))
        self.set("cleared_count", belt.cleared % U32_WRAP)
        self.set("inspected_count", belt.inspected % U32_WRAP)
        if self.profile.has("weight_g"):  # a lane with a checkweigher
            self.set("weight_g", self._weight_g)
            self.set("weight_seq", self._weigh_count % 2**16)

    # ---- registers by name ------------------------------------------------------------------------

    def get(self, name: str) -> Value:
        reg = self.profile.by_name(name)
        return decode(reg, list(self.image[reg.table][reg.address:reg.address + reg.words]))

    def set(self, name: str, value: Value) -> None:
        reg = self.profile.by_name(name)
        raw = encode(reg, value)
        table = self.image[reg.table]
        if isinstance(raw, bool):
            table[reg.address] = raw
        else:
            table[reg.address:reg.address + reg.words] = raw

    def readable(self) -> dict[str, Value]:
        """Every register decoded, as one station poll reads them (no tearing: one scan's image)."""
        return {reg.name: self.get(reg.name) for reg in self.profile.registers}
