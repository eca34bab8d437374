"""Conformance with an independent Modbus master: Debian's `mbpoll` (libmodbus) against the simulated PLC.

If pymodbus on both ends agreed on something wrong (addressing, word order, CRC, unit id), the
driver tests would not notice; mbpoll would. Each case reads what the belt shows and writes what the
station writes, over TCP and over RTU through the pty, and checks that the belt saw the writes and
that mbpoll printed the belt's values. mbpoll's references are 1-based: reference = address + 1.
"""

from __future__ import annotations

import asyncio
import re
import shutil

import pytest

from drivers.links import RtuLink
from drivers.profile import encode, load_profile
from simulator.belt import Belt, SimItem
from simulator.plc import SimPlc
from tests.drivers.plc_harness import condition, run

MBPOLL = shutil.which("mbpoll")
TYPES = {"coil": "0", "discrete": "1", "input": "3", "holding": "4"}


@pytest.fixture(autouse=True)
def _need_mbpoll() -> None:
    if MBPOLL is None:
        pytest.skip("mbpoll not installed: apt-get install mbpoll")


async def mbpoll(sim: SimPlc, table: str, address: int, *, count: int = 1, kind: str = "",
                 write: list[int] | None = None, big_endian: bool = False) -> dict[int, int]:
    """Run mbpoll once against `sim`; {reference: value} it printed (empty for a write)."""
    assert MBPOLL is not None
    link = sim.link
    if isinstance(link, RtuLink):
        line, target = ["-m", "rtu", "-b", str(link.baudrate), "-P", "none", "-d", "8", "-s", "1"], link.port
    else:
        line, target = ["-m", "tcp", "-p", str(link.port)], link.host
    args = [*line, "-a", str(sim.profile.unit_id), "-t", TYPES[table] + (f":{kind}" if kind else ""),
            "-r", str(address + 1), *(["-c", str(count), "-1"] if write is None else []),
            *(["-B"] if big_endian else []), target]
    args += [str(v) for v in write or []]
    proc = await asyncio.create_subprocess_exec(MBPOLL, *args, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 10.0)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"mbpoll {' '.join(args)} failed:\n{text}"
    if write is not None:
        assert f"Written {len(write)} references" in text, text
        return {}
    return {int(ref): int(value) for ref, value in re.findall(r"^\[(\d+)\]:\s+(-?\d+)\s*$", text, re.M)}


def moved_belt() -> tuple[Belt, int]:
    """A stopped belt whose encoder is past 65535 mm (so both words of the u32 matter), an item on the entry eye."""
    belt = Belt()
    belt.run_command, belt.speed_setpoint_mm_s = True, 3000.0
    belt.step(30.0)
    belt.run_command = False
    belt.step(2.0)  # ramps down to a stop
    assert not belt.running and belt.encoder_mm > 65536
    item = SimItem(1, 300.0)
    assert belt.place(item)
    item.lead_mm = 100.0
    return belt, int(belt.encoder_mm)


CASES = [("tcp", "default"), ("rtu", "default"), ("tcp", "compact"), ("rtu", "compact")]


@pytest.mark.parametrize(("link", "profile_name"), CASES, ids=[f"{a}-{b}" for a, b in CASES])
def test_mbpoll_reads_the_belt_and_its_writes_reach_the_belt(link: str, profile_name: str) -> None:
    profile = load_profile(profile_name)
    reg = profile.by_name

    async def body() -> None:
        belt, encoder = moved_belt()
        async with SimPlc(belt, profile=profile, rtu=link == "rtu") as sim:
            enc = reg("encoder")
            big = enc.word_order == "big"
            got = await mbpoll(sim, "input", enc.address, kind="int", big_endian=big)
            assert got == {enc.address + 1: encoder}, "mbpoll's 32-bit reading equals the belt's encoder"
            words = await mbpoll(sim, "input", enc.address, count=2)
            hi, lo = encoder >> 16, encoder & 0xFFFF
            assert list(words.values()) == ([hi, lo] if big else [lo, hi])

            eyes = {n: reg(n) for n in ("entry_eye", "tunnel_exit_eye", "gate_eye", "estop_active", "belt_running")}
            for name, r in eyes.items():
                got = await mbpoll(sim, "discrete", r.address)
                assert got == {r.address + 1: int(name == "entry_eye")}, name

            sp, gate = reg("belt_speed_sp"), reg("gate_clear")
            assert await mbpoll(sim, "coil", gate.address) == {gate.address + 1: 0}
            await mbpoll(sim, "holding", sp.address, write=[1200])
            # A CLEAR carries its expiry (the belt position past which the PLC drops it): written first.
            until = reg("gate_clear_until_mm")
            await mbpoll(sim, "holding", until.address, write=list(encode(until, encoder + 10_000)))
            await mbpoll(sim, "coil", gate.address, write=[1])
            await condition(lambda: belt.speed_setpoint_mm_s == 1200 and belt.gate_clear,
                            what="the belt's setpoint and gate set by mbpoll")
            assert await mbpoll(sim, "holding", sp.address) == {sp.address + 1: 1200}
            assert await mbpoll(sim, "coil", gate.address) == {gate.address + 1: 1}
            fault = reg("fault_code")
            assert await mbpoll(sim, fault.table, fault.address) == {fault.address + 1: 0}

    run(body, limit=30.0)
