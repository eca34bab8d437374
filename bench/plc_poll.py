"""Benchmark: a full PLC poll cycle through the station's driver versus bare pymodbus, same run.

One cycle reads every register group of the profile. The driver side is `Plc.poll_once()`, the very
code the poller runs (`_poll_once`: one request per contiguous group through `PlcIo`, with its
per-request timeout scope, reply checks and decode into named values). The bare side issues the
same requests with a plain pymodbus client and keeps the raw replies. Both talk to one simulated
PLC (physics running), in alternating rounds so that they share the machine's noise. The budget
is driver/bare <= 1.3 at the median.

    .venv/bin/python -m bench.plc_poll [--cycles 500] [--rounds 50] [--profile default]

Prints a readable table, then one JSON line (the last line of output).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

from pymodbus.client import AsyncModbusTcpClient, ModbusBaseClient

from drivers.links import TcpLink
from drivers.plc import Plc
from drivers.profile import Profile, load_profile
from simulator.belt import Belt
from simulator.plc import SimPlc

TARGET_RATIO = 1.3
_READS = {"coil": "read_coils", "discrete": "read_discrete_inputs",
          "holding": "read_holding_registers", "input": "read_input_registers"}


def bare_cycle(client: ModbusBaseClient, profile: Profile) -> Callable[[], Awaitable[None]]:
    calls = [(getattr(client, _READS[g.table]), g.start, g.count) for g in profile.groups()]
    unit = profile.unit_id

    async def cycle() -> None:
        for read, start, count in calls:
            rsp = await read(start, count=count, device_id=unit)
            if rsp.isError():
                raise RuntimeError(f"bare read {start}+{count} failed: {rsp}")

    return cycle


async def timed(cycle: Callable[[], Awaitable[object]], n: int, out: list[float]) -> None:
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        await cycle()
        out.append(clock() - t0)


def summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1e3 for s in samples)
    return {
        "p50": round(statistics.median(ms), 4),
        "p99": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 4),
        "mean": round(statistics.fmean(ms), 4),
        "min": round(ms[0], 4),
    }


async def bench(cycles: int, rounds: int, profile_name: str, warmup: int) -> dict[str, object]:
    profile = load_profile(profile_name)
    driver_t: list[float] = []
    bare_t: list[float] = []
    async with SimPlc(Belt(), profile=profile) as sim:
        link = sim.link
        assert isinstance(link, TcpLink)
        # the background poller polls once, then sleeps for the whole run: poll_once() is all we time
        async with Plc(profile, link, poll_interval=3600.0, heartbeat_interval=None) as plc:
            await asyncio.wait_for(plc.next_snapshot(0), 5.0)
            client = AsyncModbusTcpClient(link.host, port=link.port, timeout=1.0, retries=0, reconnect_delay=0)
            try:
                if not await client.connect():
                    raise RuntimeError(f"bare client cannot connect to {link}")
                bare = bare_cycle(client, profile)
                await timed(plc.poll_once, warmup, [])
                await timed(bare, warmup, [])
                per_round = max(1, cycles // rounds)
                for r in range(rounds):
                    pair = [(plc.poll_once, driver_t), (bare, bare_t)]
                    for cycle, out in pair if r % 2 == 0 else reversed(pair):
                        await timed(cycle, per_round, out)
            finally:
                client.close()
    driver, bare_s = summary(driver_t), summary(bare_t)
    return {
        "bench": "plc_poll", "link": "tcp", "profile": profile.name, "groups": len(profile.groups()),
        "cycles": len(driver_t), "rounds": rounds, "python": sys.version.split()[0],
        "driver_ms": driver, "bare_ms": bare_s,
        "ratio_p50": round(driver["p50"] / bare_s["p50"], 3),
        "ratio_p99": round(driver["p99"] / bare_s["p99"], 3),
        "target_ratio_p50": TARGET_RATIO,
        "ok": driver["p50"] / bare_s["p50"] <= TARGET_RATIO,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=500, help="measured poll cycles per side")
    ap.add_argument("--rounds", type=int, default=50, help="alternating rounds the cycles are split into")
    ap.add_argument("--warmup", type=int, default=20, help="unmeasured cycles per side first")
    ap.add_argument("--profile", default="default", help="profile name or path")
    args = ap.parse_args(argv)
    result = asyncio.run(bench(args.cycles, args.rounds, args.profile, args.warmup))
    d, b = result["driver_ms"], result["bare_ms"]
    assert isinstance(d, dict) and isinstance(b, dict)
    print(f"PLC poll cycle, profile {result['profile']} ({result['groups']} requests), {result['link']}, "
          f"{result['cycles']} cycles per side in {result['rounds']} alternating rounds")
    print(f"{'':>16} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'min ms':>9}")
    for name, s in (("station driver", d), ("bare pymodbus", b)):
        print(f"{name:>16} {s['p50']:9.3f} {s['p99']:9.3f} {s['mean']:9.3f} {s['min']:9.3f}")
    print(f"{'ratio':>16} {result['ratio_p50']:9.3f} {result['ratio_p99']:9.3f}"
          f"   (target p50 <= {TARGET_RATIO}: {'ok' if result['ok'] else 'OVER'})")
    print(json.dumps(result, separators=(",", ":")))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
