"""Per-request behaviour of the PLC driver: grouped reads, read retry, writes sent once, backoff, heartbeat.

A small Modbus TCP proxy between the driver and the simulated PLC sees every request and can
swallow chosen ones, so the tests observe what went over the wire rather than the driver's intent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.health import HealthState
from drivers.links import TcpLink
from drivers.plc import Plc, PlcTimeout
from drivers.plc_io import backoff_delay
from drivers.profile import load_profile
from simulator.belt import Belt
from simulator.plc import SimPlc
from tests.drivers.plc_harness import condition, free_port, run

PROFILE = load_profile("default")
READ_FCS = {1, 2, 3, 4}


class ModbusProxy:
    """Forwards Modbus TCP frames to `upstream`; records each request's function code; drops those
    for which `swallow(fc, index_of_that_fc)` is true (the PLC never sees them, nobody answers)."""

    def __init__(self, upstream: TcpLink, swallow: Callable[[int, int], bool] = lambda fc, n: False) -> None:
        self.upstream, self.swallow = upstream, swallow
        self.requests: list[int] = []
        self.swallowed: list[int] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    @property
    def link(self) -> TcpLink:
        assert self._server is not None
        return TcpLink("127.0.0.1", self._server.sockets[0].getsockname()[1])

    async def __aenter__(self) -> ModbusProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        for w in self._writers:
            w.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection(self.upstream.host, self.upstream.port)
        self._writers += [writer, up_w]
        self._spawn(self._requests(reader, up_w))
        self._spawn(self._replies(up_r, writer))

    async def _requests(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                header = await reader.readexactly(7)
                body = await reader.readexactly(int.from_bytes(header[4:6], "big") - 1)
                fc = body[0]
                index = self.requests.count(fc)
                self.requests.append(fc)
                if self.swallow(fc, index):
                    self.swallowed.append(fc)
                    continue
                up.write(header + body)

    async def _replies(self, up: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await up.read(4096):
                writer.write(data)


def test_a_poll_is_one_request_per_contiguous_group() -> None:
    async def body() -> None:
        async with SimPlc(Belt()) as sim, ModbusProxy(sim.link) as proxy, \
                Plc(PROFILE, proxy.link, heartbeat_interval=None, poll_interval=10.0) as plc:
            await plc.next_snapshot(0)
            # the default map has one run per table: coils, discrete inputs, holding, input registers
            assert proxy.requests == [1, 2, 3, 4]
            await plc.poll_once()
            assert proxy.requests == [1, 2, 3, 4] * 2

    run(body)


def test_a_read_that_times_out_is_retried_within_the_poll() -> None:
    def every_third_input_read(fc: int, n: int) -> bool:
        return fc == 4 and n % 3 == 2

    async def body() -> None:
        async with SimPlc(Belt()) as sim, ModbusProxy(sim.link, every_third_input_read) as proxy, \
                Plc(PROFILE, proxy.link, timeout=0.1, heartbeat_interval=None) as plc:
            states: set[HealthState] = set()
            seq = 0
            for _ in range(12):
                seq = (await asyncio.wait_for(plc.next_snapshot(seq), 2.0)).seq
                states.add(plc.health.state)
            assert len(proxy.swallowed) >= 2 and plc.retried_reads == len(proxy.swallowed)
            assert states == {HealthState.UP}, "a read answered on its retry never degrades the link"
            assert seq >= 12 and not plc.health.errors

    run(body)


def test_a_write_that_times_out_is_sent_once_and_reported() -> None:
    async def body() -> None:
        async with SimPlc(Belt()) as sim, ModbusProxy(sim.link, lambda fc, n: fc == 6 and n == 0) as proxy, \
                Plc(PROFILE, proxy.link, timeout=0.1, heartbeat_interval=None) as plc:
            await plc.next_snapshot(0)
            with pytest.raises(PlcTimeout, match=r"write belt_speed_sp: no reply within 0.1 s"):
                await plc.write("belt_speed_sp", 900)
            assert proxy.requests.count(6) == 1, "the timed-out write was not repeated"
            assert await plc.read("belt_speed_sp") == 0, "the PLC never got it"
            await plc.write("belt_speed_sp", 900)  # the caller may retry: then it lands
            assert proxy.requests.count(6) == 2
            await condition(lambda: sim.belt.speed_setpoint_mm_s == 900, what="the belt's setpoint")

    run(body)


def test_the_heartbeat_keeps_its_own_schedule_whatever_the_poll_rate() -> None:
    async def body() -> None:
        async with SimPlc(Belt()) as sim, \
                Plc(PROFILE, sim.link, poll_interval=30.0, heartbeat_interval=0.02) as plc:
            first = await plc.next_snapshot(0)
            await condition(lambda: int(sim.value("heartbeat")) >= 5, what="5 heartbeats")
            assert plc.latest is first, "no second poll was due, yet the PLC saw the heartbeat advance"

    run(body)


def test_failed_first_connects_are_spaced_by_the_backoff() -> None:
    async def body() -> None:
        loop = asyncio.get_running_loop()
        async with Plc(PROFILE, TcpLink("127.0.0.1", free_port()), backoff=(0.1, 0.4)) as plc:
            seen: list[float] = []
            async with asyncio.timeout(5.0):
                while len(seen) < 4:
                    n = plc.health.errors.get("connect", 0)
                    if n > len(seen):
                        seen.append(loop.time())
                    await asyncio.sleep(0.002)
            gaps = [b - a for a, b in zip(seen, seen[1:])]
            # attempt k waits at least half of min(0.4, 0.1 * 2**(k-1)): 0.05, 0.1, 0.2 s
            for gap, least in zip(gaps, (0.05, 0.1, 0.2)):
                assert gap >= least - 0.01, f"connect retried after {gap:.3f} s, backoff says >= {least}"
            assert plc.health.state == HealthState.DOWN and plc.latest is None

    run(body)


@given(st.integers(1, 64), st.floats(0.001, 5.0), st.floats(0.001, 60.0))
def test_backoff_grows_doubling_up_to_the_cap_with_jitter_in_the_upper_half(attempt: int, base: float, cap: float) -> None:
    full = min(cap, base * 2 ** (attempt - 1))
    low = backoff_delay(attempt, base, cap, uniform=lambda a, b: a)
    high = backoff_delay(attempt, base, cap, uniform=lambda a, b: b)
    assert high == pytest.approx(full) and low == pytest.approx(full / 2)
    assert low <= backoff_delay(attempt, base, cap) <= high
