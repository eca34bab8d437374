"""The station daemon: one AsyncExitStack for what it opens, one TaskGroup for what it runs.

Shutdown order follows construction order in reverse, and a task that crashes ends the whole group
with its exception, so a broken part is never silent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from drivers.barcode import BarcodeReader
from drivers.health import HealthState
from drivers.links import TcpLink
from drivers.plc import FaultCode, Plc
from drivers.profile import load_profile
from drivers.scanner import Scanner
from station.config import Config
from station.control import ControlServer, socket_path
from station.detector import Detector, ModelError
from station.ead.importer import import_ead_file
from station.ead.quality import publish_quality
from station.ead.record import BadLine, EadRecord
from station.inference import InferenceWorker
from station.lane import messages as m
from station.lock import DataDirLock
from station.lane.core import LaneCore, LaneState
from station.lane.runtime import READER_GRACE_S, LaneRuntime
from station.model_swap import ModelSwitch, model_info
from station.mqtt_link import CentralLink, Topics
from station.rules import load_ruleset
from station.store import Store
from station.writer import StoreWriter

if TYPE_CHECKING:
    from simulator.faults import Fault
    from simulator.lane import SimLane

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "default"


class StopRun(Exception):
    """Raised in the TaskGroup's body to end a run whose control has returned."""


@dataclass
class RunResult:
    store_path: Path
    started: float  # time.monotonic()
    started_at: float  # time.time(), to tell this run's items from earlier ones in the store
    ready_s: float | None = None
    sim_outcomes: dict[int, object] = field(default_factory=dict)
    alarms: dict[str, int] = field(default_factory=dict)
    outbox_left: int = 0
    published: int = 0
    longest_stall_s: float = 0.0  # the event loop's longest stall during the run


def load_detector(config: Config) -> tuple[Detector | None, str | None]:
    """The configured model, or (None, why) when there is none usable: the lane then runs MANUAL_ONLY."""
    path = config.model.path or DEFAULT_MODEL
    try:
        return Detector.load(path, threads=config.model.threads), None
    except ModelError as err:
        log.error("model %s refused: %s; every item goes to INSPECT (MANUAL_ONLY)", path, err)
        return None, str(err)


@dataclass(frozen=True)
class Lane:
    """What a run's controller can reach: the running parts of the station (and the simulator)."""

    runtime: LaneRuntime
    store: Store
    central: CentralLink
    scanner: Scanner
    barcode: BarcodeReader
    models: ModelSwitch
    sim: SimLane | None


Control = Callable[[Lane], Awaitable[None]]


async def run_station(config: Config, *, simulate: bool = False, items: int | None = None,
                      plc_port: int = 0, control: Control | None = None, faults: Sequence[Fault] = ()) -> RunResult:
    """Run the lane until cancelled, or until `control` returns.

    With `simulate` and `items`, the default control ends the run once the simulator has routed that many
    items and the station has stored them. Tests pass their own control to inject faults and act as the operator.
    """
    started = time.monotonic()
    ruleset = load_ruleset(config)
    data_dir = config.storage.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    result = RunResult(store_path=data_dir / "station.db", started=started, started_at=time.time())
    async with AsyncExitStack() as stack:
        stack.enter_context(DataDirLock(data_dir))  # first: a second station on this folder touches nothing
        store = stack.enter_context(Store(result.store_path))  # the loop's reader
        runtime: LaneRuntime | None = None
        full: list[tuple[bool, str]] = []  # what the writer reported before the runtime could hear it
        writer = await stack.enter_async_context(StoreWriter(
            result.store_path, min_free_bytes=int(config.storage.min_free_mb * 2**20),
            on_full=lambda is_full, why: runtime.store_full(is_full, why) if runtime else full.append((is_full, why))))
        spool_dir, plc_link = config.spool_dir, config.plc.link.link()
        scanner_port, barcode_port = config.scanner.port, config.barcode.port
        topics = Topics(config.station.site, config.station.lane)
        central = CentralLink(store, writer, config.mqtt, config.mqtt.client_id or f"station-{topics.site}-{topics.lane}")
        sim = None
        if simulate:
            # the simulator is only imported when asked for
            from simulator.central import CentralFeed
            from simulator.lane import SimLane

            feed = CentralFeed(config.mqtt, topics.site) if config.mqtt.host else None  # EAD over MQTT, or a file
            sim = await stack.enter_async_context(
                SimLane(config.simulator, config.lane, data_dir / "sim", plc_port=plc_port, max_items=items,
                        profile=config.plc.profile, central=feed))
            spool_dir, plc_link = sim.spool_dir, TcpLink("127.0.0.1", sim.plc.port)
            scanner_port, barcode_port = sim.scanner.path, sim.barcode.path
            for fault in faults:
                await sim.inject(fault)
            if feed is None:
                await writer.drained()
                lines = await asyncio.to_thread(_import_ead, result.store_path, sim.ead_file)
                for line in lines:
                    if isinstance(line, BadLine):
                        log.warning("EAD %s line %d: %s", sim.ead_file, line.line, line.problem)

        detector, why = load_detector(config)
        max_image_bytes = int(config.scanner.max_image_mb * 2**20)
        worker = InferenceWorker(detector, config.model.timeout_s, max_image_bytes=max_image_bytes)
        stack.callback(worker.close)
        plc = await stack.enter_async_context(Plc(
            load_profile(config.plc.profile), plc_link,
            poll_interval=config.plc.poll_interval_s, timeout=config.plc.timeout_s))
        scanner = await stack.enter_async_context(Scanner(scanner_port, baudrate=config.scanner.baudrate))
        barcode = await stack.enter_async_context(BarcodeReader(barcode_port, baudrate=config.barcode.baudrate))
        core = LaneCore(config.lane, manual_only=detector is None, decide_fn=ruleset.decide)
        runtime = LaneRuntime(core, store, writer, topics, plc=plc, spool_dir=spool_dir,
                              images_dir=data_dir / "images", worker=worker, max_image_bytes=max_image_bytes,
                              on_stored=central.notify,
                              devices={"plc": lambda: plc.health, "scanner": lambda: scanner.health,
                                       "barcode": lambda: barcode.health, "mqtt": lambda: central.health})
        runtime.published = lambda: central.published
        runtime.set_model(model_info(detector), why)
        stack.push_async_callback(runtime.aclose)
        for is_full, why in full:
            runtime.store_full(is_full, why)
        if left := runtime.record_left_on_belt():
            log.warning("%d items were on the belt when the station last stopped: recorded UNCONFIRMED", left)
        central.subscriptions[topics.ead_records] = runtime.ead_message
        central.on_handler_error = lambda topic, detail: runtime.dispatch_alarm("INBOUND_ERROR", f"{topic}: {detail}")
        models = ModelSwitch(worker, runtime, threads=config.model.threads, why_none=why)
        await stack.enter_async_context(ControlServer(runtime, models, socket_path(data_dir)))
        log.info("station %s/%s: model %s", topics.site, topics.lane,
                 detector.manifest.name if detector else f"none ({why})")
        if control is None and items is not None and sim is not None:
            control = partial(_stop_after, items=items)
        try:
            async with asyncio.TaskGroup() as tasks:
                for job in (runtime.pump_plc(), runtime.pump_writes(), runtime.pump_scanner(scanner),
                            runtime.pump_barcode(barcode), runtime.tick(), runtime.watch_loop(),
                            runtime.watch_devices(), central.run(),
                            publish_quality(result.store_path, writer, topics.ead_quality,
                                            config.mqtt.ead_quality_interval_s, central.notify)):
                    tasks.create_task(job)
                if simulate or config.lane.auto_start:
                    # A simulated central feed starts with the belt: let the station subscribe first.
                    tasks.create_task(_start_when_ready(runtime, result, central if simulate and config.mqtt.host else None))
                if control is not None:
                    await control(Lane(runtime, store, central, scanner, barcode, models, sim))
                else:
                    await asyncio.Event().wait()  # until cancelled (Ctrl-C)
                # Raised in the group's body (not in a child), so the group cancels the rest and the
                # caller's task is left with no pending cancellation (Python 3.11's TaskGroup would be).
                raise StopRun
        except* StopRun:
            pass
        await writer.drained()
        result.sim_outcomes = dict(sim.outcomes) if sim else {}
        result.alarms = dict(runtime.alarms)
        result.outbox_left = store.outbox_count()
        result.published = central.published
        result.longest_stall_s = runtime.longest_stall_s
    return result


def _import_ead(path: Path, ead_file: Path) -> list[EadRecord | BadLine]:
    """The simulated central's declarations, imported as `station ead import` would (own connection)."""
    with Store(path) as store:
        return import_ead_file(store, ead_file, source="simulator")


async def _start_when_ready(runtime: LaneRuntime, result: RunResult, central: CentralLink | None = None,
                            grace_s: float = 10.0) -> None:
    """Start the belt once the PLC answers (and, with `central`, once the link to central is up)."""
    if central is not None:
        try:
            async with asyncio.timeout(grace_s):
                await central.connected.wait()
        except TimeoutError:
            log.warning("no link to central after %.0f s; starting the lane anyway", grace_s)
    seq = -1
    while not runtime.core.plc_up:  # until the core (not just the driver) has seen the PLC answer
        seq = (await runtime.plc.next_snapshot(seq)).seq
        await asyncio.sleep(0)  # pump_plc hands the same snapshot to the core
    result.ready_s = time.monotonic() - result.started
    try:  # the serial readers answer within a moment of opening; one that does not holds the belt
        async with asyncio.timeout(READER_GRACE_S):
            while not runtime.readers_usable():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pass
    runtime.check_readers(time.monotonic(), grace_s=0)  # a reader not usable now raises its alarm before the start
    try:  # a PLC whose watchdog tripped while no station ran (fault 1) clears once our heartbeat lands
        async with asyncio.timeout(grace_s):
            while runtime.core.values.get("fault_code") == FaultCode.HEARTBEAT_STALE:
                seq = (await runtime.plc.next_snapshot(seq)).seq
                await asyncio.sleep(0)
    except TimeoutError:
        pass  # the start below is refused, and says why
    runtime.dispatch(m.Operator(time.monotonic(), "start"))
    if runtime.core.state is not LaneState.RUNNING:
        log.error("lane did not start (%s): see the START_REFUSED alarm", runtime.core.state.value)


async def _stop_after(lane: Lane, items: int, grace_s: float = 10.0) -> None:
    """End the run when the simulator has routed `items` items and the station has stored them."""
    assert lane.sim is not None
    await lane.sim.all_routed.wait()
    runtime, store = lane.runtime, lane.store
    try:
        async with asyncio.timeout(grace_s):
            await runtime.wait_stored(items)
    except TimeoutError:
        log.error("only %d of %d items stored %.0f s after the last left the belt", runtime.items_stored, items, grace_s)
    runtime.dispatch(m.Operator(time.monotonic(), "stop"))
    if lane.central.health.state is HealthState.UP:  # give a connected broker the backlog before we go
        try:
            async with asyncio.timeout(grace_s):
                while store.outbox_count():
                    await asyncio.sleep(0.05)
        except TimeoutError:
            log.warning("%d messages still in the outbox at the end of the run", store.outbox_count())
