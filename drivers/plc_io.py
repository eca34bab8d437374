"""The PLC driver's request layer: one pymodbus client on a TCP or RTU link, one request at a time.

`PlcIo` turns a link value (`TcpLink` / `RtuLink`) into a pymodbus async client and gives the
device layer (`drivers.plc.Plc`) four guarantees per request: it ends within `timeout` seconds
(the client's own timeout is only a backstop), its error is one of this driver's exceptions
naming the PLC and the request, a read that times out is sent again `read_retries` times, and
a write is sent exactly once (a write that timed out may or may not have happened: the caller
decides, never this layer). A reply whose function code does not match the request (a late
answer to an earlier request on a serial line, where replies carry no transaction id) is
refused rather than decoded.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient, ModbusBaseClient
from pymodbus.exceptions import ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from drivers.aio import reraise_lost_cancel
from drivers.links import Link, RtuLink, TcpLink
from drivers.profile import Register

log = logging.getLogger(__name__)

# table -> (client method, function code of its reply)
_READS = {
    "coil": ("read_coils", 1),
    "discrete": ("read_discrete_inputs", 2),
    "holding": ("read_holding_registers", 3),
    "input": ("read_input_registers", 4),
}
_BIT_TABLES = ("coil", "discrete")


class PlcError(Exception):
    """Base of every error the PLC driver raises."""


class PlcLinkError(PlcError):
    """The PLC is not connected, the connection broke, or it did not answer."""


class PlcTimeout(PlcLinkError):
    """No reply within the per-request timeout (the connection may still be open)."""


class PlcWriteError(PlcError):
    """A write was refused: read-only register, outside limits, exception reply, or readback mismatch."""


def backoff_delay(
    attempt: int, base: float, cap: float, uniform: Callable[[float, float], float] = random.uniform
) -> float:
    """Jittered exponential backoff: in [d/2, d] with d = min(cap, base * 2**(attempt-1)).

    The jitter keeps many stations that lost the same PLC (or switch) from reconnecting in step.
    """
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return uniform(delay / 2, delay)


def make_client(link: Link, timeout: float) -> ModbusBaseClient:
    """A pymodbus async client for `link` that neither retries nor reconnects by itself.

    The driver owns retries and reconnection, so pymodbus must not race it; its own timeout is
    twice ours so that ours always fires first and names the request.
    """
    if isinstance(link, TcpLink):
        return AsyncModbusTcpClient(link.host, port=link.port, name="plc", timeout=2 * timeout,
                                    retries=0, reconnect_delay=0)
    if isinstance(link, RtuLink):
        return AsyncModbusSerialClient(
            link.port, framer=FramerType.RTU, baudrate=link.baudrate, parity=link.parity,
            stopbits=link.stopbits, bytesize=link.bytesize, name="plc", timeout=2 * timeout,
            retries=0, reconnect_delay=0,
        )
    raise TypeError(f"not a PLC link: {link!r}")


class PlcIo:
    """One client on one link; not reusable after `close()` (make a new one to reconnect)."""

    def __init__(self, link: Link, unit_id: int, *, timeout: float, read_retries: int, where: str) -> None:
        self.link, self.unit_id = link, unit_id
        self.timeout, self.read_retries, self.where = timeout, read_retries, where
        self.retried_reads = 0  # reads that needed a second try; only grows
        self._client = make_client(link, timeout)
        self._readers = {t: (getattr(self._client, m), fc) for t, (m, fc) in _READS.items()}

    @property
    def connected(self) -> bool:
        return self._client.connected

    async def connect(self) -> bool:
        """Open the link within `timeout`; False (never an exception) when the PLC is not there."""
        try:
            async with asyncio.timeout(self.timeout):
                ok = await self._client.connect()
        except TimeoutError:
            ok = False
        if not ok:
            self._client.close()
        return ok

    def close(self) -> None:
        self._client.close()

    async def read(self, table: str, start: int, count: int, what: str) -> list[int] | list[bool]:
        """`count` values of `table` from `start`: bools for bit tables, 16-bit words otherwise."""
        reader, fc = self._readers[table]
        for attempt in range(self.read_retries + 1):
            try:
                rsp = await self._request(what, reader, start, count=count, device_id=self.unit_id)
                break
            except PlcTimeout:
                if attempt >= self.read_retries or not self._client.connected:
                    raise
                self.retried_reads += 1
                log.debug("%s: %s timed out, retrying", self.where, what)
        if rsp.isError():
            raise PlcError(f"{self.where}: {what} ({table} {start}+{count}): exception reply {_code(rsp)}")
        _check_reply(rsp, fc, self.where, what)
        if table in _BIT_TABLES:
            bits = list(rsp.bits)[:count]
            if len(bits) < count:
                raise PlcLinkError(f"{self.where}: {what}: short reply ({len(bits)} of {count} bits)")
            return bits
        words = list(rsp.registers)
        if len(words) != count:
            raise PlcLinkError(f"{self.where}: {what}: short reply ({len(words)} of {count} registers)")
        return words

    async def write(self, reg: Register, raw: list[int] | bool) -> None:
        """Send one write, once. PlcWriteError on an exception reply, PlcLinkError/PlcTimeout otherwise."""
        c, what = self._client, f"write {reg.name}"
        if isinstance(raw, bool):
            rsp, fc = await self._request(what, c.write_coil, reg.address, raw, device_id=self.unit_id), 5
        elif len(raw) == 1:
            rsp, fc = await self._request(what, c.write_register, reg.address, raw[0], device_id=self.unit_id), 6
        else:
            rsp, fc = await self._request(what, c.write_registers, reg.address, raw, device_id=self.unit_id), 16
        if rsp.isError():
            raise PlcWriteError(f"{self.where}: PLC refused write {reg.name}: exception reply {_code(rsp)}")
        _check_reply(rsp, fc, self.where, f"write {reg.name}")

    async def _request(
        self, what: str, call: Callable[..., Awaitable[ModbusPDU]], *args: object, **kwargs: object
    ) -> ModbusPDU:
        """`call(*args, **kwargs)` under the timeout; pymodbus may raise from the call itself (not connected)."""
        try:
            async with asyncio.timeout(self.timeout):
                rsp = await call(*args, **kwargs)
                reraise_lost_cancel()  # pymodbus awaits with 3.11's wait_for, which can drop our cancel
                return rsp
        except TimeoutError as err:
            raise PlcTimeout(f"{self.where}: {what}: no reply within {self.timeout:g} s") from err
        except ModbusException as err:  # not connected, connection dropped, garbled reply
            raise PlcLinkError(f"{self.where}: {what}: {err}") from err


def _check_reply(rsp: ModbusPDU, fc: int, where: str, what: str) -> None:
    if rsp.function_code != fc:
        raise PlcLinkError(f"{where}: {what}: reply has function code {rsp.function_code}, expected {fc}")


def _code(rsp: ModbusPDU) -> str:
    return f"code {getattr(rsp, 'exception_code', '?')}"
