"""The station's PLC client: one poller owns the Modbus TCP link and publishes I/O snapshots.

`async with Plc(profile, host, port) as plc:` never fails because the PLC is absent: a background
task connects (jittered exponential backoff, including the first connect, which pymodbus does not
retry), polls one request per contiguous register group every `poll_interval`, and writes an
incrementing heartbeat. Everything else reads `plc.latest` / `await plc.next_snapshot(seq)` and
`plc.health`; only `write` and `read` touch the link directly, under a per-request timeout.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from functools import partial
from types import MappingProxyType

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from drivers.health import DeviceHealth, HealthState
from drivers.profile import EncodeError, Profile, Register, Value, decode, encode

log = logging.getLogger(__name__)

MAX_TIMEOUTS_BEFORE_DOWN = 3  # a lone slow reply is DEGRADED; a run of them means the link is gone


class FaultCode(IntEnum):
    """Values of the `fault_code` input register, shared with the simulated PLC."""

    NONE = 0
    HEARTBEAT_STALE = 1
    ESTOP = 2


@dataclass(frozen=True)
class IoSnapshot:
    """All readable registers from one poll. `t` is time.monotonic() when the poll finished."""

    seq: int
    t: float
    values: Mapping[str, Value]


class PlcError(Exception):
    """Base of every error this driver raises."""


class PlcLinkError(PlcError):
    """The PLC is not connected, the connection broke, or it did not answer."""


class PlcTimeout(PlcLinkError):
    """No reply within the per-request timeout (the connection may still be open)."""


class PlcWriteError(PlcError):
    """A write was refused: read-only register, outside limits, exception reply, or readback mismatch."""


class Plc:
    """Async context manager owning the link to one PLC described by `profile`."""

    def __init__(
        self,
        profile: Profile,
        host: str,
        port: int,
        *,
        poll_interval: float = 0.02,
        timeout: float = 0.5,
        heartbeat_interval: float | None = 0.2,
        backoff: tuple[float, float] = (0.1, 2.0),
    ) -> None:
        self.profile = profile
        self.host, self.port = host, port
        self.poll_interval, self.timeout = poll_interval, timeout
        self.heartbeat_interval = heartbeat_interval
        self.backoff = backoff
        self.latest: IoSnapshot | None = None
        self.health = DeviceHealth("plc")
        self.heartbeat_enabled = heartbeat_interval is not None and profile.has("heartbeat")
        self._client: AsyncModbusTcpClient | None = None
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
        return f"PLC {self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    # ---- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> Plc:
        self._runner = asyncio.create_task(self._run(), name=f"plc link {self.host}:{self.port}")
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
            client = AsyncModbusTcpClient(
                self.host, port=self.port, name="plc", timeout=2 * self.timeout,
                retries=0, reconnect_delay=0,  # we own reconnection; pymodbus must not race us
            )
            try:
                if not await self._connect(client):
                    attempt += 1
                    await asyncio.sleep(self._delay(attempt))
                    continue
                self._client, self._polled = client, False
                log.info("%s connected", self.where)
                try:
                    async with asyncio.TaskGroup() as tg:
                        tg.create_task(self._poll_loop(client))
                        if self.heartbeat_interval is not None and self.profile.has("heartbeat"):
                            tg.create_task(self._heartbeat_loop(client, self.heartbeat_interval))
                except* PlcError as group:  # link lost, or the PLC refuses our polls
                    err = group.exceptions[0]
                    kind = "timeout" if isinstance(err, PlcTimeout) else "link"
                    self._set_health(self.health.failed(kind, str(err)))
                    log.warning("%s link lost: %s", self.where, err)
                # back off further only if this connection never produced a snapshot
                attempt = 1 if self._polled else attempt + 1
                await asyncio.sleep(self._delay(attempt))
            finally:
                self._client = None
                client.close()

    async def _connect(self, client: AsyncModbusTcpClient) -> bool:
        try:
            async with asyncio.timeout(self.timeout):
                ok = await client.connect()
        except TimeoutError:
            ok = False
        if not ok:
            client.close()
            self._set_health(self.health.failed("connect", f"cannot connect to {self.where}"))
        return ok

    def _delay(self, attempt: int) -> float:
        """Jittered exponential backoff: somewhere in the upper half of base * 2**(attempt-1)."""
        base, cap = self.backoff
        delay = min(cap, base * 2 ** max(0, attempt - 1))
        return random.uniform(delay / 2, delay)

    def _set_health(self, health: DeviceHealth) -> None:
        if health.state != self.health.state:
            log.info("%s health %s -> %s %s", self.where, self.health.state.value, health.state.value, health.detail)
        self.health = health

    # ---- polling -----------------------------------------------------------------------------
    async def _poll_loop(self, client: AsyncModbusTcpClient) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        timeouts = 0
        while True:
            try:
                values = await self._poll_once(client)
            except PlcTimeout as err:
                timeouts += 1
                if timeouts >= MAX_TIMEOUTS_BEFORE_DOWN or not client.connected:
                    raise
                self._set_health(self.health.failed("timeout", str(err), HealthState.DEGRADED))
            else:
                timeouts, self._polled = 0, True
                self._publish(values)
                self._set_health(self.health.ok())
            due += self.poll_interval
            now = loop.time()
            if due < now:  # we fell behind: skip the missed polls rather than burst
                due = now
            await asyncio.sleep(due - now)

    async def _poll_once(self, client: AsyncModbusTcpClient) -> dict[str, Value]:
        values: dict[str, Value] = {}
        for group, regs in self._groups:
            raw = await self._read_raw(client, group.table, group.start, group.count, f"poll {group.table}")
            for reg, offset in regs:
                values[reg.name] = decode(reg, raw[offset:offset + reg.words])
        return values

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

    async def _heartbeat_loop(self, client: AsyncModbusTcpClient, interval: float) -> None:
        reg = self.profile.by_name("heartbeat")
        value = 0
        while True:
            await asyncio.sleep(interval)
            if not self.heartbeat_enabled:
                continue
            value = (value + 1) & 0xFFFF
            try:
                await self._write_raw(client, reg, [value])
            except (PlcTimeout, PlcWriteError) as err:  # the poller decides whether the link is gone
                log.warning("%s heartbeat: %s", self.where, err)

    # ---- direct access -----------------------------------------------------------------------
    async def write(self, name: str, value: Value) -> None:
        """Write one register in engineering units, then read it back.

        Raises PlcWriteError (unknown/read-only register, outside min/max, exception reply,
        readback mismatch) or PlcLinkError (not connected, broken, no reply in time).
        Registers marked `pulse` are not read back: the PLC resets them itself.
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
        client = self._live_client(f"write {name}")
        await self._write_raw(client, reg, raw)
        if reg.pulse:
            return
        back = await self._read_register(client, reg)
        expected = decode(reg, raw if isinstance(raw, list) else [raw])
        if back != expected:
            raise PlcWriteError(f"{self.where}: wrote {name}={expected!r} but read back {back!r}")

    async def read(self, name: str) -> Value:
        """Read one register now (diagnostics); the poller's snapshot is the normal way."""
        reg = self._register(name, PlcError)
        return await self._read_register(self._live_client(f"read {name}"), reg)

    def _register(self, name: str, error: type[PlcError]) -> Register:
        try:
            return self.profile.by_name(name)
        except KeyError as err:
            raise error(f"{self.where}: {err.args[0]}") from err

    def _live_client(self, what: str) -> AsyncModbusTcpClient:
        client = self._client
        if client is None or not client.connected:
            raise PlcLinkError(f"{self.where} is not connected: cannot {what}")
        return client

    async def _write_raw(self, client: AsyncModbusTcpClient, reg: Register, raw: list[int] | bool) -> None:
        unit = self.profile.unit_id
        call: Callable[[], Awaitable[ModbusPDU]]
        if isinstance(raw, bool):
            call = partial(client.write_coil, reg.address, raw, device_id=unit)
        elif len(raw) == 1:
            call = partial(client.write_register, reg.address, raw[0], device_id=unit)
        else:
            call = partial(client.write_registers, reg.address, raw, device_id=unit)
        rsp = await self._request(f"write {reg.name}", call)
        if rsp.isError():
            raise PlcWriteError(f"{self.where}: PLC refused write {reg.name}: exception reply {_code(rsp)}")

    async def _read_register(self, client: AsyncModbusTcpClient, reg: Register) -> Value:
        return decode(reg, await self._read_raw(client, reg.table, reg.address, reg.words, f"read {reg.name}"))

    async def _read_raw(
        self, client: AsyncModbusTcpClient, table: str, start: int, count: int, what: str
    ) -> list[int] | list[bool]:
        reader = _READERS[table]
        rsp = await self._request(what, partial(reader, client, start, count=count, device_id=self.profile.unit_id))
        if rsp.isError():
            raise PlcError(f"{self.where}: {what} ({table} {start}+{count}): exception reply {_code(rsp)}")
        return list(rsp.bits)[:count] if table in ("coil", "discrete") else list(rsp.registers)

    async def _request(self, what: str, call: Callable[[], Awaitable[ModbusPDU]]) -> ModbusPDU:
        try:
            async with asyncio.timeout(self.timeout):
                return await call()
        except TimeoutError as err:
            raise PlcTimeout(f"{self.where}: {what}: no reply within {self.timeout:g} s") from err
        except ModbusException as err:  # not connected, connection dropped, garbled reply
            raise PlcLinkError(f"{self.where}: {what}: {err}") from err


_READERS: dict[str, Callable[..., Awaitable[ModbusPDU]]] = {
    "coil": AsyncModbusTcpClient.read_coils,
    "discrete": AsyncModbusTcpClient.read_discrete_inputs,
    "holding": AsyncModbusTcpClient.read_holding_registers,
    "input": AsyncModbusTcpClient.read_input_registers,
}


def _code(rsp: ModbusPDU) -> str:
    return f"code {getattr(rsp, 'exception_code', '?')}"


def _log_crash(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s crashed", task.get_name(), exc_info=task.exception())
