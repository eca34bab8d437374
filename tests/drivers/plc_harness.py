"""Helpers shared by the PLC driver tests: run an async body leak-checked, wait on snapshots and health."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Mapping

from drivers.health import HealthState
from drivers.plc import IoSnapshot, Plc
from drivers.profile import Value


def run(test: Callable[[], Awaitable[None]], limit: float = 15.0) -> None:
    """Run an async test body and fail it if it leaves tasks behind."""

    async def main() -> None:
        async with asyncio.timeout(limit):
            await test()
        await asyncio.sleep(0.05)  # let closed transports deliver connection_lost
        leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert not leftover, f"leaked tasks: {leftover}"

    asyncio.run(main())


async def until(plc: Plc, pred: Callable[[Mapping[str, Value]], bool], timeout: float = 3.0) -> IoSnapshot:
    """The first snapshot whose values satisfy `pred`."""
    seq = 0
    async with asyncio.timeout(timeout):
        while True:
            snap = await plc.next_snapshot(seq)
            if pred(snap.values):
                return snap
            seq = snap.seq


async def until_health(plc: Plc, state: HealthState, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while plc.health.state != state:
            await asyncio.sleep(0.01)


async def condition(pred: Callable[[], bool], timeout: float = 3.0, what: str = "condition") -> None:
    """Wait until `pred()` holds, polling every 5 ms; TimeoutError naming `what` otherwise."""
    try:
        async with asyncio.timeout(timeout):
            while not pred():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise TimeoutError(f"{what} not reached within {timeout} s") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
