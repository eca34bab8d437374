"""The station's PLC client: one poller owns the Modbus link (TCP or RTU) and publishes I/O snapshots.

`async with Plc(profile, link) as plc:` never fails because the PLC is absent: a background task
connects (jittered exponential backoff, including the first connect, which pymodbus does not
retry), polls one request per contiguous register group every `poll_interval`, and writes an
incrementing heartbeat on its own schedule. Everything else reads `plc.latest` /
`await plc.next_snapshot(seq)` and `plc.health`; only `write`, `read` and `poll_once` touch the
link directly. Requests go through `drivers.plc_io.PlcIo`: a per-request timeout, reads retried
once within the poll, writes never retried.

The same driver serves `TcpLink` and `RtuLink`: on a serial line a vanished PLC is only silence,
so "link down" is a run of `MAX_TIMEOUTS_BEFORE_DOWN` failed polls on either transport.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType

from drivers.health import DeviceHealth, HealthState
from drivers.links import Link
from drivers.plc_io import PlcError, PlcIo, PlcLinkError, PlcTimeout, PlcWriteError, backoff_delay
from drivers.profile import EncodeError, Profile, Register, Value, decode, encode

__all__ = [
    "MAX_TIMEOUTS_BEFORE_DOWN",
    "FaultCode",
    "IoSnapshot",
    "Plc",
    "PlcError",
    "PlcLinkError",
    "PlcTimeout",
    "PlcWriteError",
]

log = logging.getLogger(__name__)

MAX_TIMEOUTS_BEFORE_DOWN = 3  # a lone slow poll is DEGRADED; a run of them means the link is gone


class FaultCode(IntEnum):
    """Values of the `fault_code` register, shared with the simulated PLC."""

    NONE = 0
    HEARTBEAT_STALE = 1
    ESTOP = 2


@dataclass(frozen=True)
class IoSnapshot:
    """All readable registers from one poll. `t` is time.monotonic() when the poll finished."""

    seq: int
    t: float
    values: Mapping[str, Value]


class Plc:
    """Async context manager owning the link to one PLC described by `profile`.

    `link`: a `TcpLink` or an `RtuLink`. `poll_interval`: seconds between poll starts (missed
    polls are skipped, never bunched). `timeout`: seconds per request, connect included.
    `heartbeat_interval`: seconds between heartbeat writes (None: none). `backoff`: (base, cap)
    seconds of the jittered exponential reconnect delay. `read_retries`: times a read that timed
    out is sent again within the same poll (writes are never resent).
    """

    def __init__(
        self,
        profile: Profile,
        link: Link,
        *,
        poll_interval: float = 0.02,
        timeout: float = 0.5,
        heartbeat_interval: float | None = 0.2,
        backoff: tuple[float, float] = (0.1, 2.0),
        read_retries: int = 1,
        on_poll: Callable[[float], None] | None = None,
    ) -> None:
        self.profile, self.link = profile, link
        # called on the loop with the seconds each answered poll took (every group read: the round trip)
        self.on_poll = on_poll
        self.poll_interval, self.timeout = poll_interval, timeout
        self.heartbeat_interval = heartbeat_interval
        self.backoff, self.read_retries = backoff, read_retries
        self.latest: IoSnapshot | None = None
        self.health = DeviceHealth("plc")
        self.heartbeat_enabled = heartbeat_interval is not None and profile.has("heartbeat")
        self._retried_before = 0  # retried reads of connections already closed
        self._io: PlcIo | None = None
        self._new_snapshot = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._polled = False  # this connection has produced a snapshot
        self._groups = [
            (g, [(r, r.address - g.start) for r in profile.registers
                 if r.table == g.table and g.start <= r.address < g.start + g.count])
            for g in profile.groups()
        ]

    @property
    def where(self) -> str:
        """The PLC as log lines and errors name it: `PLC host:port` or `PLC /dev/ttyX@19200E81`."""
        return f"PLC {self.link}"

    @property
    def connected(self) -> bool:
        return self._io is not None and self._io.connected

    @property
    def retried_reads(self) -> int:
        """Reads, over all connections, that timed out once and were sent again; only grows."""
        return self._retried_before + (self._io.retried_reads if self._io is not None else 0)

    # ---- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> Plc:
        self._runner = asyncio.create_task(self._run(), name=f"plc link {self.link}")
        self._runner.add_done_callback(_log_crash)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            try:
                await runner
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise  # we are being cancelled ourselves: let it through

    async def _run(self) -> None:
        attempt = 0
        while True:
            io = PlcIo(self.link, self.profile.unit_id, timeout=self.timeout,
                       read_retries=self.read_retries, where=self.where)
            try:
                if not await io.connect():
                    self._set_health(self.health.failed("connect", f"cannot connect to {self.where}"))
                    attempt += 1
                    await asyncio.sleep(self._delay(attempt))
                    continue
                self._io, self._polled = io, False
                log.info("%s connected", self.where)
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._poll_loop(io))
                        if self.heartbeat_interval is not None and self.profile.has("heartbeat"):
                            tg.create_task(self._heartbeat_loop(io, self.heartbeat_interval))
                except* PlcError as group:  # link lost, or the PLC refuses our polls
                    err = group.exceptions[0]
                    kind = "timeout" if isinstance(err, PlcTimeout) else "link"
                    self._set_health(self.health.failed(kind, str(err)))
                    log.warning("%s link lost: %s", self.where, err)
                # back off further only if this connection never produced a snapshot
                attempt = 1 if self._polled else attempt + 1
                await asyncio.sleep(self._delay(attempt))
            finally:
                self._io = None
                self._retried_before += io.retried_reads
                io.close()

    def _delay(self, attempt: int) -> float:
        return backoff_delay(attempt, *self.backoff)

    def _set_health(self, health: DeviceHealth) -> None:
        if health.state != self.health.state:
            log.info("%s health %s -> %s %s", self.where, self.health.state.value, health.state.value, health.detail)
        self.health = health

    # ---- polling -----------------------------------------------------------------------------
    async def _poll_loop(self, io: PlcIo) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        timeouts = 0
        while True:
            started = loop.time()
            try:
                values = await self._poll_once(io)
            except PlcTimeout as err:
                timeouts += 1
                if timeouts >= MAX_TIMEOUTS_BEFORE_DOWN or not io.connected:
                    raise
                self._set_health(self.health.failed("timeout", str(err), HealthState.DEGRADED))
            else:
                timeouts, self._polled = 0, True
                if self.on_poll is not None:
                    self.on_poll(loop.time() - started)
                self._publish(values)
                self._set_health(self.health.ok())
            due += self.poll_interval
            now = loop.time()
            if due < now:  # we fell behind: skip the missed polls rather than burst
                due = now
            await asyncio.sleep(due - now)

    async def _poll_once(self, io: PlcIo) -> dict[str, Value]:
        values: dict[str, Value] = {}
        for group, regs in self._groups:
            raw = await io.read(group.table, group.start, group.count, f"poll {group.table}")
            for reg, offset in regs:
                values[reg.name] = decode(reg, raw[offset:offset + reg.words])
        return values

    async def poll_once(self) -> dict[str, Value]:
        """One full poll now, exactly as the poller does it, without publishing a snapshot.

        For diagnostics and benchmarks; raises PlcLinkError when not connected.
        """
        return await self._poll_once(self._live_io("poll"))

    def _publish(self, values: dict[str, Value]) -> None:
        seq = 1 if self.latest is None else self.latest.seq + 1
        self.latest = IoSnapshot(seq=seq, t=time.monotonic(), values=MappingProxyType(values))
        event, self._new_snapshot = self._new_snapshot, asyncio.Event()
        event.set()

    async def next_snapshot(self, after_seq: int) -> IoSnapshot:
        """The first snapshot with seq > after_seq; waits as long as it takes (wrap in a timeout)."""
        while True:
            latest, event = self.latest, self._new_snapshot
            if latest is not None and latest.seq > after_seq:
                return latest
            await event.wait()

    async def _heartbeat_loop(self, io: PlcIo, interval: float) -> None:
        """Beats every `interval` whatever the poll rate; a failed beat is not retried (the next one is due)."""
        reg = self.profile.by_name("heartbeat")
        value = 0
        while True:
            await asyncio.sleep(interval)
            if not self.heartbeat_enabled:
                continue
            value = (value + 1) & 0xFFFF
            try:
                await io.write(reg, [value])
            except (PlcTimeout, PlcWriteError) as err:  # the poller decides whether the link is gone
                log.warning("%s heartbeat: %s", self.where, err)

    # ---- direct access -----------------------------------------------------------------------
    async def write(self, name: str, value: Value) -> None:
        """Write one register in engineering units, once, then read it back.

        Raises PlcWriteError (unknown/read-only register, outside min/max, exception reply,
        readback mismatch) or PlcLinkError (not connected, broken, no reply in time). A write
        is never repeated automatically: after a PlcTimeout the caller decides. Registers
        marked `pulse` are not read back: the PLC resets them itself.
        """
        reg = self._register(name, PlcWriteError)
        if not reg.writable:
            raise PlcWriteError(f"{self.where}: register {name!r} is read-only")
        if reg.type != "bool":
            if reg.min is not None and value < reg.min:
                raise PlcWriteError(f"{self.where}: {name}={value!r} is below its min {reg.min:g} {reg.unit}".rstrip())
            if reg.max is not None and value > reg.max:
                raise PlcWriteError(f"{self.where}: {name}={value!r} is above its max {reg.max:g} {reg.unit}".rstrip())
        try:
            raw = encode(reg, value)
        except EncodeError as err:
            raise PlcWriteError(f"{self.where}: {err}") from err
        io = self._live_io(f"write {name}")
        await io.write(reg, raw)
        if reg.pulse:
            return
        back = await self._read_register(io, reg)
        expected = decode(reg, raw if isinstance(raw, list) else [raw])
        if back != expected:
            raise PlcWriteError(f"{self.where}: wrote {name}={expected!r} but read back {back!r}")

    async def read(self, name: str) -> Value:
        """Read one register now (diagnostics); the poller's snapshot is the normal way."""
        reg = self._register(name, PlcError)
        return await self._read_register(self._live_io(f"read {name}"), reg)

    def _register(self, name: str, error: type[PlcError]) -> Register:
        try:
            return self.profile.by_name(name)
        except KeyError as err:
            raise error(f"{self.where}: {err.args[0]}") from err

    def _live_io(self, what: str) -> PlcIo:
        io = self._io
        if io is None or not io.connected:
            raise PlcLinkError(f"{self.where} is not connected: cannot {what}")
        return io

    async def _read_register(self, io: PlcIo, reg: Register) -> Value:
        return decode(reg, await io.read(reg.table, reg.address, reg.words, f"read {reg.name}"))


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s crashed", task.get_name(), exc_info=task.exception())
