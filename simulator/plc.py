"""The simulated lane PLC: a real pymodbus Modbus server (TCP, or RTU on a pty) around the belt physics.

The PLC's own copy of its four tables (the "image") is the truth; each physics tick pulls the
station's commands from the server's datastore, runs the PLC program (interlocks, heartbeat
watchdog, E-stop latch), steps the belt and pushes the outputs back. Pull, program and push run
without yielding to the event loop, so a client request never sees a half-updated tick. Because
the image lives here, `drop_link()` / `restore_link()` can take the server away and bring a new
one up on the same port without losing a bit of state.

RTU mode (`rtu=True`) serves the same tables with pymodbus's serial server on one end of a
`PtyBridge`; the station (or mbpoll) opens the other end, `sim.rtu_path` (`sim.link` is the
matching `RtuLink`). The simulated line runs 8N1: a pty has no parity bit, and some kernels
refuse to set one on a pty, so clients must open it with parity "N". Known gap: pymodbus 3.16's
simulator answers a request for another unit id with exception 4 where a real RTU slave on a
shared line stays silent.

Link faults (`set_silent`, `set_exception`, `set_delay`) change only how the Modbus side answers:
each connection's pymodbus request handler is a subclass that consults them per request, so the
PLC program, the belt and its watchdog run on untouched, over TCP and RTU alike.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.links import Link, RtuLink, TcpLink
from drivers.plc import FaultCode
from drivers.profile import Profile, Value, decode, encode, load_profile
from simulator.belt import CLEAR, Belt, BeltEvent, Routed, Weighed
from simulator.ptybridge import PtyBridge

log = logging.getLogger(__name__)

REQUIRED = (
    "belt_run", "gate_clear", "estop_reset", "entry_eye", "tunnel_exit_eye", "gate_eye",
    "estop_active", "belt_running", "belt_speed_sp", "heartbeat", "encoder", "belt_speed",
    "fault_code", "cleared_count", "inspected_count",
)
# function codes the datastore maps to each table (a write code also works on read-only tables)
_READ_FC = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
_WRITE_FC = {"coil": 15, "discrete": 2, "holding": 16, "input": 4}


@dataclass(frozen=True)
class LinkFaults:
    """How the simulated PLC's Modbus side misbehaves (the defaults: not at all).

    `silent`: requests are read and dropped, unapplied and unanswered (connections stay open).
    `exception_code`: when not 0, every request is refused with this Modbus exception, unapplied.
    `delay_s`: every reply leaves this many seconds late; the request takes effect on arrival.
    Silence wins over an exception; the delay applies to whatever reply is sent.
    """

    silent: bool = False
    exception_code: int = 0
    delay_s: float = 0.0


class _FaultyRequestHandler(ServerRequestHandler):
    """pymodbus's per-connection request handler, with the PLC's current `LinkFaults` applied per request."""

    def __init__(self, owner: ModbusTcpServer | ModbusSerialServer, faults: Callable[[], LinkFaults]) -> None:
        super().__init__(owner, owner.trace_packet, owner.trace_pdu, owner.trace_connect)
        self._faults = faults
        self._late: set[asyncio.TimerHandle] = set()  # delayed replies not sent yet

    async def handle_request(self) -> None:
        # pymodbus hands over the request in last_pdu (the connection's latest): use it before any await.
        request, faults = self.last_pdu, self._faults()
        if request is None or not (faults.silent or faults.exception_code):
            await super().handle_request()
        elif faults.silent:
            log.debug("simulated PLC (silent): dropped %s", request)
        else:
            reply = ExceptionResponse(request.function_code, faults.exception_code,
                                      device_id=request.dev_id, transaction=request.transaction_id)
            self.server_send(reply, self.last_addr)

    def server_send(self, pdu: ModbusPDU | None, addr: tuple[str, int] | None) -> None:
        delay = self._faults().delay_s
        if pdu is None or delay <= 0:
            super().server_send(pdu, addr)
            return

        def send_late() -> None:
            self._late.discard(handle)
            ServerRequestHandler.server_send(self, pdu, addr)

        handle = self.loop.call_later(delay, send_late)
        self._late.add(handle)

    def callback_disconnected(self, exc: Exception | None) -> None:
        for handle in self._late:  # nobody is left to read them
            handle.cancel()
        self._late.clear()
        super().callback_disconnected(exc)


class _FaultyServing:
    """Mixin for the pymodbus servers: each new connection gets a `_FaultyRequestHandler`."""

    link_faults: Callable[[], LinkFaults]

    def callback_new_connection(self) -> ServerRequestHandler:
        return _FaultyRequestHandler(self, self.link_faults)  # type: ignore[arg-type]


class _TcpServer(_FaultyServing, ModbusTcpServer):
    pass


class _SerialServer(_FaultyServing, ModbusSerialServer):
    pass


class SimPlc:
    """Async context manager: a Modbus PLC driving `belt`, serving the tables of `profile`.

    Over TCP on `host:port` (0 picks a free port), or with `rtu=True` over Modbus RTU on the pty
    `rtu_path` at `baudrate`, 8N1, unit id `profile.unit_id`.

    PLC program guarantees: belt_run is forced to 0 while fault_code != 0 or E-stop is pressed;
    a running belt whose heartbeat has not changed for `heartbeat_timeout` s (counted from the
    later of the last change and the start command) stops with fault 1 until the heartbeat
    changes; E-stop latches fault 2 until released *and* acknowledged with an estop_reset pulse.
    """

    def __init__(
        self,
        belt: Belt,
        host: str = "127.0.0.1",
        port: int = 0,
        physics_dt: float = 0.005,
        heartbeat_timeout: float = 1.0,
        on_events: Callable[[list[BeltEvent]], None] | None = None,
        profile: Profile | str = "default",
        rtu: bool = False,
        baudrate: int = 19200,
    ) -> None:
        self.belt = belt
        self.host = host
        self._port = port
        self._gate_position_clear = False  # diverter feedback: where the gate sent the last item
        self._weight_g, self._weigh_count = 0, 0  # the checkweigher's last weight and how many it weighed
        self.physics_dt = physics_dt
        self.heartbeat_timeout = heartbeat_timeout
        self.on_events = on_events
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        missing = [n for n in REQUIRED if not self.profile.has(n)]
        if missing:
            raise ValueError(f"profile {self.profile.name!r} lacks registers the PLC program needs: {missing}")
        self._image: dict[str, list[int] | list[bool]] = {
            "coil": [False] * max(1, self.profile.table_size("coil")),
            "discrete": [False] * max(1, self.profile.table_size("discrete")),
            "holding": [0] * max(1, self.profile.table_size("holding")),
            "input": [0] * max(1, self.profile.table_size("input")),
        }
        self.fault_code = FaultCode.NONE
        self.rtu, self.baudrate = rtu, baudrate
        self._bridge: PtyBridge | None = None
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._physics: asyncio.Task[None] | None = None
        self._last_heartbeat: int | None = None
        self._heartbeat_at = 0.0
        self._run_since = 0.0
        self._link_faults = LinkFaults()

    @property
    def port(self) -> int:
        """The bound TCP port (known once started)."""
        return self._port

    @property
    def rtu_path(self) -> str:
        """The tty the station opens in RTU mode (known once started)."""
        if self._bridge is None:
            raise RuntimeError("the simulated PLC serves RTU only with rtu=True, once started")
        return self._bridge.path_b

    @property
    def link(self) -> Link:
        """How a client reaches this PLC: a `TcpLink`, or in RTU mode an `RtuLink` (8N1)."""
        if self.rtu:
            return RtuLink(self.rtu_path, baudrate=self.baudrate, parity="N", stopbits=1, bytesize=8)
        return TcpLink(self.host, self._port)

    @property
    def link_up(self) -> bool:
        return self._server is not None

    @property
    def link_faults(self) -> LinkFaults:
        """The link faults now in force; they outlast `drop_link()` / `restore_link()`."""
        return self._link_faults

    # ---- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> SimPlc:
        loop = asyncio.get_running_loop()
        self._heartbeat_at = self._run_since = loop.time()
        self._refresh_outputs()
        if self.rtu:
            self._bridge = await PtyBridge().__aenter__()
        try:
            await self.restore_link()
        except BaseException:
            self._close_bridge()
            raise
        self._physics = asyncio.create_task(self._physics_loop(), name="simplc physics")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        task, self._physics = self._physics, None
        try:
            if task is not None:
                task.cancel()
                try:
                    await task  # re-raises a crash of the physics task (e.g. in on_events)
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise
        finally:
            try:
                await self.drop_link()
            finally:
                self._close_bridge()

    def _close_bridge(self) -> None:
        bridge, self._bridge = self._bridge, None
        if bridge is not None:
            bridge.close()

    async def drop_link(self) -> None:
        """Stop serving Modbus (connections are closed); the belt and PLC program keep running."""
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()
            log.info("simulated PLC stopped serving on %s", self._where())

    async def restore_link(self) -> None:
        """Serve Modbus again (on the same port or pty once one was bound), from the current image."""
        if self._server is not None:
            return
        device = SimDevice(
            id=self.profile.unit_id,
            simdata=(
                [SimData(0, values=list(self._image["coil"]), datatype=DataType.BITS)],
                [SimData(0, values=list(self._image["discrete"]), datatype=DataType.BITS)],
                [SimData(0, values=list(self._image["holding"]), datatype=DataType.REGISTERS)],
                [SimData(0, values=list(self._image["input"]), datatype=DataType.REGISTERS)],
            ),
        )
        server: _TcpServer | _SerialServer
        if self._bridge is not None:
            server = _SerialServer(device, framer=FramerType.RTU, port=self._bridge.path_a,
                                   baudrate=self.baudrate, parity="N", stopbits=1, bytesize=8)
        else:
            server = _TcpServer(device, address=(self.host, self._port))
        server.link_faults = lambda: self._link_faults
        try:
            await server.serve_forever(background=True)
        except RuntimeError as err:  # pymodbus reports a failed bind or open this way
            raise OSError(f"simulated PLC cannot serve on {self._where()}") from err
        if self._bridge is None:
            self._port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._server = server
        log.info("simulated PLC serving on %s", self._where())

    def _where(self) -> str:
        return f"RTU {self._bridge.path_b}" if self._bridge is not None else f"{self.host}:{self._port}"

    # ---- fault injection ---------------------------------------------------------------------
    def press_estop(self) -> None:
        self.belt.estop = True  # the belt stops at once
        self.fault_code = FaultCode.ESTOP
        self.belt.fault_code = self.fault_code
        self._set("belt_run", False)
        self._refresh_outputs()

    def release_estop(self) -> None:
        """Release the button; fault 2 stays latched until the station pulses estop_reset."""
        self.belt.estop = False
        self._refresh_outputs()

    def set_silent(self, silent: bool) -> None:
        """Stop answering (True) or answer again (False); connections stay open either way.

        While silent, every request (writes and heartbeats too) is read and dropped: nothing is
        applied, so the heartbeat watchdog stops a running belt after `heartbeat_timeout`.
        """
        self._set_link_faults(replace(self._link_faults, silent=silent))

    def set_exception(self, code: int) -> None:
        """Refuse every request with Modbus exception `code` (1-255, e.g. 4 = server device failure),
        applying none of them; 0 answers normally again."""
        if not 0 <= code <= 255:
            raise ValueError(f"simulated PLC: exception code {code} is not a byte (0 = off)")
        self._set_link_faults(replace(self._link_faults, exception_code=code))

    def set_delay(self, seconds: float) -> None:
        """Send every reply `seconds` late (0 = at once); requests still take effect when they arrive."""
        if seconds < 0:
            raise ValueError(f"simulated PLC: reply delay {seconds} s is negative")
        self._set_link_faults(replace(self._link_faults, delay_s=seconds))

    def _set_link_faults(self, faults: LinkFaults) -> None:
        self._link_faults = faults
        log.info("simulated PLC link faults on %s: %s", self._where(), faults)

    # ---- the scan cycle ----------------------------------------------------------------------
    async def _physics_loop(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.physics_dt)
            now = loop.time()
            events = await self.scan(now, now - last)
            last = now
            if events and self.on_events is not None:
                try:
                    self.on_events(events)
                except Exception:
                    log.exception("simulated PLC: on_events callback failed")
                    raise

    async def scan(self, now: float, dt: float) -> list[BeltEvent]:
        """One PLC scan at loop time `now`: inputs, program, belt step of `dt` s, outputs."""
        server, unit = self._server, self.profile.unit_id
        if server is not None:
            for table in ("coil", "holding"):
                size = len(self._image[table])
                self._image[table] = list(await server.async_getValues(unit, _READ_FC[table], 0, size))
        self._program(now)
        events = self.belt.step(dt)
        for ev in events:
            if isinstance(ev, Routed):
                # gate_clear is one-shot: the gate consumes it for the item now passing, so a stale CLEAR can
                # never route the next item (e.g. one that arrives while the station's link is down).
                self._set("gate_clear", False)
                self.belt.gate_clear = False
                self._gate_position_clear = ev.bin == CLEAR
            elif isinstance(ev, Weighed) and self.profile.has("weight_g"):
                self._weight_g, self._weigh_count = round(ev.item.weight_kg * 1000), self._weigh_count + 1
        self._refresh_outputs()
        if server is not None:
            for table, values in self._image.items():
                await server.async_setValues(unit, _WRITE_FC[table], 0, list(values))
        return events

    def _program(self, now: float) -> None:
        belt = self.belt
        if self._get("estop_reset"):
            self._set("estop_reset", False)  # a pulse: the PLC acknowledges by clearing it
            if not belt.estop and self.fault_code == FaultCode.ESTOP:
                self.fault_code = FaultCode.NONE
                log.info("simulated PLC: E-stop reset")
        heartbeat = int(self._get("heartbeat"))
        if heartbeat != self._last_heartbeat:
            self._last_heartbeat, self._heartbeat_at = heartbeat, now
            if self.fault_code == FaultCode.HEARTBEAT_STALE:
                self.fault_code = FaultCode.NONE
        if belt.estop or self.fault_code != FaultCode.NONE:
            self._set("belt_run", False)
        run = bool(self._get("belt_run"))
        if run and not belt.run_command:
            self._run_since = now
        if run and now - max(self._heartbeat_at, self._run_since) > self.heartbeat_timeout:
            log.warning("simulated PLC: heartbeat stale for %.2f s, stopping the belt", now - self._heartbeat_at)
            self.fault_code = FaultCode.HEARTBEAT_STALE
            self._set("belt_run", False)
            run = False
        belt.run_command = run
        belt.fault_code = int(self.fault_code)
        sp = self.profile.by_name("belt_speed_sp")
        speed = float(self._get("belt_speed_sp"))
        belt.speed_setpoint_mm_s = min(speed, sp.max) if sp.max is not None else speed
        belt.gate_clear = bool(self._get("gate_clear"))

    def _refresh_outputs(self) -> None:
        belt = self.belt
        for name, blocked in belt.eyes.items():
            self._set(name, blocked)
        self._set("estop_active", belt.estop)
        if self.profile.has("gate_position_clear"):
            self._set("gate_position_clear", self._gate_position_clear)
        self._set("belt_running", belt.running)
        self._set("encoder", int(belt.encoder_mm) % 2**32)
        self._set("belt_speed", min(0xFFFF, round(belt.speed_mm_s)))
        self._set("fault_code", int(self.fault_code))
        self._set("cleared_count", belt.cleared % 2**32)
        self._set("inspected_count", belt.inspected % 2**32)
        if self.profile.has("weight_g"):  # a lane with a checkweigher
            self._set("weight_g", self._weight_g)
            self._set("weight_seq", self._weigh_count % 2**16)

    def value(self, name: str) -> Value:
        """A register as the PLC program last saw it (after the latest scan), in engineering units."""
        return self._get(name)

    def _get(self, name: str) -> Value:
        reg = self.profile.by_name(name)
        return decode(reg, list(self._image[reg.table][reg.address:reg.address + reg.words]))

    def _set(self, name: str, value: Value) -> None:
        reg = self.profile.by_name(name)
        raw = encode(reg, value)
        table = self._image[reg.table]
        if isinstance(raw, bool):
            table[reg.address] = raw
        else:
            table[reg.address:reg.address + reg.words] = raw
