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
from drivers.profile import Profile, Value, load_profile
from simulator.belt import Belt, BeltEvent
from simulator.plc_program import PlcProgram
from simulator.ptybridge import PtyBridge

log = logging.getLogger(__name__)

# function codes the datastore maps to each table (a write code also works on read-only tables)
_READ_FC = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
_WRITE_FC = {"coil": 15, "discrete": 2, "holding": 16, "input": 4}


@dataclass(frozen=True)
class LinkFaults:
    """How the simulated PLC's Modbus side misbehaves (the defaults: not at all).

    `silent`: requests are read and dropped, unapplied and unanswered (connections stay open).
    `exception_code`: when not 0, every request is refused with this Modbus exception, unapplied.
    `delay_s`: every reply leaves this many seconds late; the request takes effect on arrival.
    `write_lag_s`: every write is answered at once but takes effect this many seconds later, in the
    order written (a buffering gateway, a busy fieldbus): only reading back shows when it landed.
    Silence wins over an exception; the delay applies to whatever reply is sent.
    """

    silent: bool = False
    exception_code: int = 0
    delay_s: float = 0.0
    write_lag_s: float = 0.0


_WRITE_CODES = {5: 1, 15: 1, 6: 3, 16: 3}  # write function code -> the read code of its table


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
            if request is not None and faults.write_lag_s > 0 and request.function_code in _WRITE_CODES:
                await self._apply_late(request, faults.write_lag_s)
            else:
                await super().handle_request()
        elif faults.silent:
            log.debug("simulated PLC (silent): dropped %s", request)
        else:
            reply = ExceptionResponse(request.function_code, faults.exception_code,
                                      device_id=request.dev_id, transaction=request.transaction_id)
            self.server_send(reply, self.last_addr)

    async def _apply_late(self, request: ModbusPDU, lag_s: float) -> None:
        """Answer the write now, as pymodbus would, but keep the old values until `lag_s` has passed."""
        server, unit, read_fc = self.server, request.dev_id, _WRITE_CODES[request.function_code]
        address = request.address
        count = len(request.bits) if read_fc == 1 else len(request.registers)
        before = list(await server.async_getValues(unit, read_fc, address, count))
        await super().handle_request()  # the reply, from the datastore updated as usual...
        after = list(await server.async_getValues(unit, read_fc, address, count))
        await server.async_setValues(unit, request.function_code, address, before)  # ...then put back

        def land() -> None:
            self._late.discard(handle)
            asyncio.ensure_future(server.async_setValues(unit, request.function_code, address, after))

        handle = self.loop.call_later(lag_s, land)
        self._late.add(handle)

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
    `rtu_path` at `baudrate`, 8N1, unit id `profile.unit_id`. The PLC program is
    `simulator.plc_program.PlcProgram` (`self.program`); its guarantees are listed there.
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
        self.physics_dt = physics_dt
        self.on_events = on_events
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        self.program = PlcProgram(belt, self.profile, heartbeat_timeout)
        self._image = self.program.image
        self.rtu, self.baudrate = rtu, baudrate
        self._bridge: PtyBridge | None = None
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._physics: asyncio.Task[None] | None = None
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
        self.program = PlcProgram(self.belt, self.profile, self.program.heartbeat_timeout,
                                  now=asyncio.get_running_loop().time())
        self._image = self.program.image
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
        self.program.press_estop()

    def release_estop(self) -> None:
        """Release the button; fault 2 stays latched until the station pulses estop_reset."""
        self.program.release_estop()

    def shift_encoder(self, mm: int) -> None:
        """The encoder reads `mm` more from now on (a counter preset, or a PLC restart when negative)."""
        self.program.shift_encoder(mm)

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

    def set_write_lag(self, seconds: float) -> None:
        """Apply every write `seconds` after it arrives (replies stay prompt); 0 = at once."""
        if seconds < 0:
            raise ValueError(f"simulated PLC: write lag {seconds} s is negative")
        self._set_link_faults(replace(self._link_faults, write_lag_s=seconds))

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
        """One PLC scan at loop time `now`: the station's writes in, the program, the outputs out."""
        server, unit = self._server, self.profile.unit_id
        if server is not None:
            for table in ("coil", "holding"):
                size = len(self._image[table])
                self._image[table][:] = list(await server.async_getValues(unit, _READ_FC[table], 0, size))
        events = self.program.scan(now, dt)
        if server is not None:
            for table, values in self._image.items():
                await server.async_setValues(unit, _WRITE_FC[table], 0, list(values))
        return events

    @property
    def fault_code(self) -> int:
        return int(self.program.fault_code)

    def value(self, name: str) -> Value:
        """A register as the PLC program last saw it (after the latest scan), in engineering units."""
        return self.program.get(name)
