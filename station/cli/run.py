"""`station run` and `station sim`: the lane, on its hardware or on the simulated lane, and the simulated
hardware alone.

A run ends on Ctrl-C or SIGTERM with its summary (a second signal ends it at once); with `--items N` on
the simulated lane, once N items are routed and stored, or once its belt has stood for LATCHED_S (an E-stop
nobody resets, a fault, a refused start), with that fault in the summary and exit code 1. On a terminal a
progress line shows the items so far, the rate and how many went to INSPECT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from station.cli.common import FAILED, INTERRUPTED, OK, USAGE, config_args, load, positive_int

if TYPE_CHECKING:
    from simulator.faults import Fault
    from station.daemon import Lane, RunResult

log = logging.getLogger(__name__)

LATCHED_S = 10.0  # a bounded run whose belt stands this long (E-stop, fault, refused start) ends, saying so
PROGRESS_S = 1.0


def add_run_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the lane")
    config_args(run)
    run.add_argument("--simulate", action="store_true", help="run on the built-in simulated lane")
    run.add_argument("--items", type=positive_int, help="with --simulate: stop after N items and print a summary")
    run.add_argument("--plc-port", type=int, default=0, help="with --simulate: the simulated PLC's port (0 = any free)")
    run.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    run.add_argument("--fault", action="append", default=[], metavar="NAME[=N]",
                     help="with --simulate: inject a fault at start (repeatable; `station sim --list-faults`)")
    run.set_defaults(handler=_run)

    sim = sub.add_parser("sim", help="run the simulated lane alone, for a station (or mbpoll) to connect to")
    config_args(sim)
    sim.add_argument("--plc-port", type=int, default=5020, help="Modbus TCP port of the simulated PLC")
    sim.add_argument("--items", type=positive_int, help="stop feeding after N items")
    sim.add_argument("--fault", action="append", default=[], metavar="NAME[=N]",
                     help="inject a fault at start (repeatable); more can be typed on standard input as "
                          "'fault NAME[=N]'")
    sim.add_argument("--list-faults", action="store_true", help="list the faults that can be injected, and exit")
    sim.add_argument("--first-item", type=int, default=0, metavar="N",
                     help="the item stream's first index (a restarted simulator feeds new items, not the same again)")
    sim.add_argument("--truth", type=Path, metavar="FILE",
                     help="append the ground truth to FILE as JSON lines: each item placed, and the bin it fell into")
    sim.set_defaults(handler=_sim)


# ---- station run ---------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    config = load(args)  # before the heavy imports: a bad file is reported at once
    if args.items is not None and not args.simulate:
        print("error: --items needs --simulate", file=sys.stderr)
        return USAGE
    if args.fault and not args.simulate:
        print("error: --fault needs --simulate (faults are injected into the simulated lane)", file=sys.stderr)
        return USAGE
    faults = _faults(args.fault)
    if faults is None:
        return USAGE

    from station.console.server import ConsoleError
    from station.lock import DataDirLocked
    from station.preflight import check

    refusing = [p for p in check(config, simulate=args.simulate) if p.refuses_start]
    if refusing:
        source = str(args.config) if args.config else None
        text = args.config.read_text(encoding="utf-8") if args.config else ""
        print("configuration error:\n" + "\n".join(p.text(source, text) for p in refusing), file=sys.stderr)
        return USAGE
    ending = Ending()
    try:
        result = asyncio.run(_run_lane(args, config, faults, ending))
    except (DataDirLocked, ConsoleError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USAGE
    if result is None:
        return INTERRUPTED  # a second signal: no summary
    summary = _summary(args, result, ending)
    print(json.dumps(summary) if args.json else "\n".join(summary_lines(summary)), flush=True)
    if ending.signal == signal.SIGINT:
        return INTERRUPTED
    unsafe = args.simulate and not summary["lost"] == summary["misrouted"] == summary["of_which_unsafe"] == 0
    return FAILED if unsafe or ending.latched else OK


class Ending:
    """Why a run ended: a signal (Ctrl-C, SIGTERM), its items done, or a latched fault. A second signal
    cancels the run outright."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.signal: int | None = None
        self.latched: str | None = None  # the fault the lane sat in
        self.why = "stopped"

    def install(self, task: asyncio.Task[Any]) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig, task)

    def _on_signal(self, sig: int, task: asyncio.Task[Any]) -> None:
        if self.event.is_set():
            task.cancel()
            return
        self.signal, self.why = sig, f"interrupted ({signal.Signals(sig).name})"
        self.event.set()


async def _run_lane(args: argparse.Namespace, config: Any, faults: Sequence[Fault], ending: Ending) -> RunResult | None:
    from station.daemon import run_station

    task = asyncio.current_task()
    assert task is not None
    ending.install(task)

    async def control(lane: Lane) -> None:
        ends: list[asyncio.Future[Any]] = [asyncio.ensure_future(ending.event.wait())]
        if args.items is not None:
            from station.cli.simulated import stop_after

            ends += [asyncio.ensure_future(_done(stop_after(lane, args.items), ending, "all items routed")),
                     asyncio.ensure_future(_latched(lane, ending))]
        if lane.console_url:
            print(f"operator console: {lane.console_url}  (accounts: station user add NAME --role operator)",
                  file=sys.stderr, flush=True)
        progress = asyncio.ensure_future(_progress(lane)) if sys.stderr.isatty() else None
        try:
            await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for job in [*ends, *([progress] if progress else [])]:
                job.cancel()
            await asyncio.gather(*ends, *([progress] if progress else []), return_exceptions=True)
            if progress is not None:
                sys.stderr.write("\n")
        status = lane.runtime.board.current
        if status is None or status.state in ("RUNNING", "PAUSED"):  # a signal: the belt stops before we go
            from station.lane import messages as m

            lane.runtime.dispatch(m.Operator(time.monotonic(), "stop"))

    try:
        if args.simulate:
            from station.cli.simulated import run_simulated

            return await run_simulated(config, control=control, items=args.items, plc_port=args.plc_port,
                                       faults=faults)
        return await run_station(config, control=control)
    except asyncio.CancelledError:
        if ending.event.is_set():
            return None
        raise


async def _done(job: Any, ending: Ending, why: str) -> None:
    await job
    ending.why = why


async def _latched(lane: Lane, ending: Ending) -> None:
    """Return once the belt has stood for LATCHED_S: in ESTOP or FAULT, held, or its start refused (an
    operator may reset or clear it meanwhile)."""
    board, since, warned = lane.runtime.board, None, False
    while True:
        status = board.current
        latched = status is not None and status.state != "RUNNING"
        if not latched:
            since = None
        elif since is None:
            since, warned = time.monotonic(), False
        elif not warned and time.monotonic() - since >= 2.0:
            warned = True
            log.warning("the lane is in %s (%s): `station lane reset` within %.0f s, or the run ends here",
                        status.state, status.reason, LATCHED_S)  # type: ignore[union-attr]
        elif time.monotonic() - since >= LATCHED_S:
            ending.latched = f"{status.state} ({status.reason})"  # type: ignore[union-attr]
            ending.why = f"the belt stood {LATCHED_S:.0f} s: {ending.latched}"
            return
        await asyncio.sleep(0.2)


async def _progress(lane: Lane) -> None:
    """One line on the terminal, rewritten every second: items so far, their rate, how many inspected."""
    started = time.monotonic()
    while True:
        await asyncio.sleep(PROGRESS_S)
        status = lane.runtime.board.current
        if status is None:
            continue
        c, elapsed = status.counters, time.monotonic() - started
        reason = f" ({status.reason})" if status.reason else ""
        sys.stderr.write(f"\r\x1b[K{c.items} items  {c.items / elapsed:.1f}/s  {c.inspected} inspected  "
                         f"lane {status.state}{reason}")
        sys.stderr.flush()


def _summary(args: argparse.Namespace, result: RunResult, ending: Ending) -> dict[str, Any]:
    from station.store import Store
    from station.summary import summarise

    status = result.status
    if args.simulate:
        with Store(result.store_path) as store:
            summary: dict[str, Any] = summarise(store, result.sim_outcomes, since=result.started_at)
    else:
        counters = status.counters if status else None
        summary = {"items": counters.items if counters else 0, "cleared": counters.cleared if counters else 0,
                   "inspected": counters.inspected if counters else 0}
    summary["outbox"] = {"published": result.published, "waiting": result.outbox_left}
    summary["ready_s"] = None if result.ready_s is None else round(result.ready_s, 2)  # start to first PLC poll
    summary["loop_stall_ms"] = round(result.longest_stall_s * 1000, 1)  # the event loop's longest stall
    summary["alarms"] = result.alarms
    summary["lane"] = {"state": status.state if status else None, "reason": status.reason if status else None}
    summary["ended"] = ending.why
    return summary


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as a person reads it: one key per line, nested values spelled out."""
    def text(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, dict):
            return ", ".join(f"{k} {text(v)}" for k, v in value.items() if v is not None) or "none"
        return str(value)

    width = max(len(k) for k in summary)
    return [f"{key.replace('_', ' '):<{width}}  {text(value)}" for key, value in summary.items()]


# ---- station sim ---------------------------------------------------------------------------------


def _sim(args: argparse.Namespace) -> int:
    from simulator.faults import FAULTS, Fault, FaultError
    from simulator.lane import SimLane
    from station.cli.simulated import central_feed

    if args.list_faults:
        for name, what in FAULTS.items():
            print(f"{name:<16} {what}")
        return OK
    config = load(args)
    faults = _faults(args.fault)
    if faults is None:
        return USAGE

    async def serve() -> None:
        feed = await central_feed(config)
        async with SimLane(config.simulator, config.lane, config.storage.data_dir / "sim",
                           plc_port=args.plc_port, max_items=args.items, profile=config.plc.profile,
                           central=feed, first_item=args.first_item, truth_file=args.truth) as sim:
            for fault in faults:
                await sim.inject(fault)
            print(json.dumps(sim.endpoints), flush=True)
            lines = _stdin_lines()
            while (line := await lines.get()) is not None:  # until EOF, Ctrl-C or SIGTERM
                words = line.split()
                if len(words) == 2 and words[0] == "fault":
                    try:
                        await sim.inject(Fault.parse(words[1]))
                    except FaultError as err:
                        print(f"error: {err}", file=sys.stderr, flush=True)
                elif len(words) == 2 and words[0] == "feed" and words[1] in ("on", "off"):
                    sim.feeding = words[1] == "on"
                elif words:
                    print("error: expected 'fault NAME[=N]' or 'feed on|off'", file=sys.stderr, flush=True)
            await asyncio.Event().wait()  # standard input closed: serve until interrupted

    async def until_signalled() -> None:
        ending = Ending()
        job = asyncio.ensure_future(serve())
        task = asyncio.current_task()
        assert task is not None
        ending.install(task)
        stop = asyncio.ensure_future(ending.event.wait())
        try:
            await asyncio.wait([job, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (job, stop):
                t.cancel()
            await asyncio.gather(job, stop, return_exceptions=True)
        if job.done() and not job.cancelled() and job.exception() is not None:
            raise job.exception()  # type: ignore[misc]

    asyncio.run(until_signalled())
    return OK


def _stdin_lines() -> asyncio.Queue[str | None]:
    """Standard input's lines, then None at EOF. A daemon thread reads, so a pending read never blocks exit."""
    loop, queue = asyncio.get_running_loop(), asyncio.Queue[str | None]()

    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, name="stdin", daemon=True).start()
    return queue


def _faults(texts: Sequence[str]) -> list[Fault] | None:
    from simulator.faults import Fault, FaultError

    try:
        return [Fault.parse(text) for text in texts]
    except FaultError as err:
        print(f"error: {err}", file=sys.stderr)
        return None
