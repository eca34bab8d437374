"""The pty null-modem cable: bytes cross both ways unchanged, through real pyserial ports in raw mode."""

from __future__ import annotations

import asyncio
import os

import serial

from simulator.ptybridge import PtyBridge
from tests.drivers.plc_harness import condition, run

EVERY_BYTE = bytes(range(256)) * 4  # includes \r, \n, ^C, ^D, XON/XOFF, DEL: a cooked tty would eat some


async def read_exactly(port: serial.Serial, n: int, timeout: float = 3.0) -> bytes:
    got = bytearray()
    async with asyncio.timeout(timeout):
        while len(got) < n:
            chunk = port.read(n - len(got))  # non-blocking (timeout=0)
            if chunk:
                got += chunk
            else:
                await asyncio.sleep(0.002)
    return bytes(got)


def test_bytes_cross_both_ways_unchanged() -> None:
    async def body() -> None:
        async with PtyBridge() as bridge:
            assert bridge.path_a != bridge.path_b and os.path.exists(bridge.path_a)
            with serial.Serial(bridge.path_a, 19200, timeout=0) as a, serial.Serial(bridge.path_b, 19200, timeout=0) as b:
                a.write(EVERY_BYTE)
                assert await read_exactly(b, len(EVERY_BYTE)) == EVERY_BYTE
                b.write(b"\x01\x03\x00\x00\x00\x02\xc4\x0b")  # an RTU request, CRC and all
                assert await read_exactly(a, 8) == b"\x01\x03\x00\x00\x00\x02\xc4\x0b"
            assert bridge.dropped_bytes == 0

    run(body)


def test_an_end_can_close_and_reopen_its_port() -> None:
    async def body() -> None:
        async with PtyBridge() as bridge:
            with serial.Serial(bridge.path_a, timeout=0) as a:
                with serial.Serial(bridge.path_b, timeout=0) as b:
                    a.write(b"one")
                    assert await read_exactly(b, 3) == b"one"
                with serial.Serial(bridge.path_b, timeout=0) as b:  # replugged: the line still works
                    a.write(b"two")
                    assert await read_exactly(b, 3) == b"two"

    run(body)


def test_a_line_nobody_reads_drops_and_counts_instead_of_blocking() -> None:
    async def body() -> None:
        async with PtyBridge(max_pending=1024) as bridge:
            with serial.Serial(bridge.path_a, timeout=0, write_timeout=0) as a:
                sent = 0
                chunk = b"x" * 4096
                async with asyncio.timeout(5.0):
                    while bridge.dropped_bytes == 0:  # nobody has path_b open, nobody reads it
                        try:
                            sent += a.write(chunk) or 0
                        except serial.SerialTimeoutException:
                            pass
                        await asyncio.sleep(0.001)
                assert 0 < bridge.dropped_bytes <= sent

    run(body)


def test_closing_the_bridge_frees_its_ttys() -> None:
    async def body() -> None:
        async with PtyBridge() as bridge:
            path = bridge.path_b
            port = serial.Serial(path, timeout=0)
        try:
            await condition(lambda: _hung_up(port), what="hang-up seen by the open port")
        finally:
            port.close()

    run(body)


def _hung_up(port: serial.Serial) -> bool:
    try:
        port.read(1)
    except serial.SerialException:
        return True
    return False
