"""The station daemon: one AsyncExitStack for what it opens, one TaskGroup for what it runs.

Shutdown order follows construction order in reverse, and a task that crashes ends the whole group
with its exception, so a broken part is never silent.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivers.barcode import BarcodeReader
from drivers.links import Link
from drivers.plc import FaultCode, Plc
from drivers.profile import load_profile
from drivers.scanner import Scanner
from station import logs
from station.commands import CommandDesk
from station.config import Config
from station.console.app import Console
from station.console.server import LaneAccess, bind
from station.control import ControlServer, socket_path
from station.ead.record import BadLine, EadRecord
from station.ead_quality import publish_quality
from station.inference import InferenceWorker
from station.intake import import_ead_file
from station.kernel.detector import DEFAULT_MODEL, Detector, ModelError
from station.lane import messages as m
from station.lane.core import LaneCore, LaneState
from station.lane.runtime import READER_GRACE_S, LaneRuntime
from station.lane.status import LaneStatus
from station.lock import DataDirLock
from station.model_swap import ModelSwitch, model_info
from station.mqtt_link import CentralLink, Topics
from station.presence import MESSAGE_SCHEMAS, Identity, LanePresence, config_hash
from station.retention import Policy
from station.rules import load_ruleset
from station.service import Notifier, notify_ready
from station.space import SpaceKeeper
from station.store import Store
from station.writer import StoreWriter

log = logging.getLogger(__name__)



class StopRun(Exception):
    """Raised in the TaskGroup's body to end a run whose control has returned."""


@dataclass
class RunResult:
    store_path: Path
    started: float  # time.monotonic()
    started_at: float  # time.time(), to tell this run's items from earlier ones in the store
    ready_s: float | None = None
    sim_outcomes: dict[int, Any] = field(default_factory=dict)  # filled by a simulated run's caller
    alarms: dict[str, int] = field(default_factory=dict)
    outbox_left: int = 0
    published: int = 0
    longest_stall_s: float = 0.0  # the event loop's longest stall during the run
    status: LaneStatus | None = None  # the lane's last snapshot


@dataclass(frozen=True)
class Endpoints:
    """Where the lane's devices are when they are not where the configuration says: the simulated lane's,
    handed over as plain values (the daemon never imports the simulator)."""

    plc: Link
    scanner: str
    barcode: str
    spool_dir: Path
    ead_file: Path | None  # central's declarations as a file, imported before the start
    central_feed: bool  # declarations come over MQTT from a feed that starts with the belt
    handle: Any = None  # what a run's controller may reach of it (the simulator), passed through untouched


OpenLane = Callable[[Path], AbstractAsyncContextManager[Endpoints]]  # given the data folder, once it is ours


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
    sim: Any  # Endpoints.handle: the simulator, on a simulated lane
    console_url: str | None = None  # where the operator console is served, if it is


Control = Callable[[Lane], Awaitable[None]]


async def run_station(config: Config, *, lane: OpenLane | None = None, control: Control | None = None) -> RunResult:
    """Run the lane until cancelled, or until `control` returns.

    `lane` opens the devices somewhere else than the configuration says (station/cli/simulated.py: the
    simulated lane), once this process holds the data folder. Tests pass their own control to inject
    faults and act as the operator.
    """
    started = time.monotonic()
    ruleset = load_ruleset(config)
    data_dir = config.storage.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    result = RunResult(store_path=data_dir / "station.db", started=started, started_at=time.time())
    async with AsyncExitStack() as stack:
        stack.enter_context(DataDirLock(data_dir))  # first: a second station on this folder touches nothing
        web_socket = bind(config.web, any_port=lane is not None) if config.web.enabled else None
        if web_socket is not None:
            stack.callback(web_socket.close)
        store = stack.enter_context(Store(result.store_path))  # the loop's reader
        runtime: LaneRuntime | None = None
        keeper: SpaceKeeper | None = None
        full: list[tuple[bool, str]] = []  # what the writer reported before the runtime could hear it

        def on_full(is_full: bool, why: str) -> None:
            if runtime is not None:
                runtime.store_full(is_full, why)
            else:
                full.append((is_full, why))
            if is_full and keeper is not None:
                keeper.wake()  # retention at once: deleting what may go brings the space back

        writer = await stack.enter_async_context(StoreWriter(
            result.store_path, min_free_bytes=int(config.storage.min_free_mb * 2**20), on_full=on_full))
        spool_dir, plc_link = config.spool_dir, config.plc.link.link()
        scanner_port, barcode_port = config.scanner.port, config.barcode.port
        topics = Topics(config.station.site, config.station.lane)
        logs.set_lane(topics.site, topics.lane)
        central = CentralLink(store, writer, config.mqtt,
                              config.mqtt.client_id or f"station-{topics.site}-{topics.lane}", topics=topics)
        sim = None
        if lane is not None:
            where = await stack.enter_async_context(lane(data_dir))
            sim, spool_dir, plc_link = where.handle, where.spool_dir, where.plc
            scanner_port, barcode_port = where.scanner, where.barcode
            if where.ead_file is not None:
                await writer.drained()
                lines = await asyncio.to_thread(_import_ead, result.store_path, where.ead_file)
                for line in lines:
                    if isinstance(line, BadLine):
                        log.warning("EAD %s line %d: %s", where.ead_file, line.line, line.problem)

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
        runtime.rules_version = ruleset.version
        stack.push_async_callback(runtime.aclose)
        for is_full, why in full:
            runtime.store_full(is_full, why)
        keeper = await stack.enter_async_context(SpaceKeeper(  # retention's thread: a first pass 30 s in
            result.store_path, data_dir / "images", Policy.of(config.storage), writer,
            interval_s=config.storage.retention_interval_min * 60, on_low=runtime.space_low))
        if left := runtime.record_left_on_belt():
            log.warning("%d items were on the belt when the station last stopped: recorded UNCONFIRMED", left)
        central.subscriptions[topics.ead_records] = runtime.ead_message
        central.subscriptions[topics.customs_instructions] = runtime.customs_message
        central.on_handler_error = lambda topic, detail: runtime.dispatch_alarm("INBOUND_ERROR", f"{topic}: {detail}")
        models = ModelSwitch(worker, runtime, threads=config.model.threads, why_none=why)
        async def selftest() -> dict[str, str]:
            return dict((await scanner.command("SELFTEST", timeout=10.0)).fields)

        control_server = await stack.enter_async_context(
            ControlServer(runtime, models, socket_path(data_dir), selftest=selftest))
        desk = CommandDesk(runtime, models, config, topics, store, rebirth=central.rebirth)
        central.commands = desk

        def classes() -> tuple[tuple[str, ...], tuple[str, ...]]:
            manifest = worker.detector.manifest if worker.detector else None
            return (tuple(manifest.classes), tuple(manifest.threat_classes)) if manifest else ((), ())

        presence = LanePresence(Identity(topics, config_hash(config), desk.accepted_names, MESSAGE_SCHEMAS),
                                runtime.board, model_hash=lambda: runtime.model.hash if runtime.model else None,
                                rules_version=lambda: runtime.rules_version, classes=classes)
        central.presence = presence
        console = None
        if web_socket is not None:
            access = LaneAccess(
                board=runtime.board, control=control_server, writer=writer, topics=topics, lane=config.lane,
                notify=central.notify, registers=lambda: plc.latest.values if plc.latest else {},
                frames=lambda: {"scanner": list(scanner.recent), "barcode": list(barcode.recent)},
                threat_classes=lambda: tuple(worker.detector.manifest.threat_classes) if worker.detector else (),
                lane_metrics=runtime.metrics, serial=lambda: {"scanner": scanner.stats, "barcode": barcode.stats},
                rules_version=lambda: runtime.rules_version, min_free_bytes=int(config.storage.min_free_mb * 2**20))
            plc.on_poll = runtime.metrics.polled  # each poll's round trip, for /metrics
            console = Console(access, result.store_path, data_dir / "images", config.web, web_socket)
            stack.callback(console.close)
            log.info("operator console at %s", console.url)
        log.info("station %s/%s: model %s", topics.site, topics.lane,
                 detector.manifest.name if detector else f"none ({why})")
        # Everything made so far (the model, the libraries, the configuration) lives as long as the run:
        # out of the collector's sight, a full collection walks only what the lane allocates, and never
        # stalls the loop long enough to miss a PLC poll (it did: 110-180 ms on a loaded 2-core box).
        gc.freeze()
        systemd = Notifier()
        stack.callback(systemd.close)
        try:
            async with asyncio.TaskGroup() as tasks:
                if systemd.enabled:
                    tasks.create_task(notify_ready(systemd, lambda: runtime.core.plc_up,  # the status as of now
                                                   lambda: service_status(runtime.publish_status())))
                    tasks.create_task(systemd.pet_forever(lambda: service_status(runtime.board.current)))
                for job in (runtime.pump_plc(), runtime.pump_writes(), runtime.pump_scanner(scanner),
                            runtime.pump_barcode(barcode), runtime.tick(), runtime.watch_loop(),
                            runtime.watch_devices(), central.run(), presence.watch(central),
                            publish_quality(result.store_path, writer, topics.ead_quality,
                                            config.mqtt.ead_quality_interval_s, central.notify,
                                            site=topics.site, lane=topics.lane)):
                    tasks.create_task(job)
                if console is not None:
                    tasks.create_task(console.serve())
                if lane is not None or config.lane.auto_start:
                    # A simulated central feed starts with the belt: let the station subscribe first.
                    feed_first = lane is not None and where.central_feed
                    tasks.create_task(_start_when_ready(runtime, result, central if feed_first else None))
                if control is not None:
                    await control(Lane(runtime, store, central, scanner, barcode, models, sim,
                                       console.url if console else None))
                    systemd.stopping()
                    await runtime.writes_done()  # the belt's last stop reaches the PLC before we go
                    await writer.drained()  # what the run stored is in the outbox: the goodbye drains it
                    await central.goodbye()
                else:
                    await asyncio.Event().wait()  # until cancelled (Ctrl-C)
                # Raised in the group's body (not in a child), so the group cancels the rest and the
                # caller's task is left with no pending cancellation (Python 3.11's TaskGroup would be).
                raise StopRun
        except* StopRun:
            pass
        finally:
            if console is not None:
                console.changes.close()
        await writer.drained()
        result.status = runtime.publish_status()
        result.alarms = dict(runtime.alarms)
        result.outbox_left = store.outbox_count()
        result.published = central.published
        result.longest_stall_s = runtime.longest_stall_s
    return result


def service_status(status: LaneStatus | None) -> str:
    """One line for `systemctl status`: the lane's state and what it has done."""
    if status is None:
        return "starting"
    held = f" ({status.reason})" if status.reason else ""
    model = " MANUAL_ONLY" if status.manual_only else ""
    age = status.outbox.oldest_age_s(status.at)
    outbox = f", outbox {status.outbox.depth}" + (f" (oldest {age:.0f} s)" if age else "")
    return (f"{status.state}{held}{model}: {status.counters.items} items, {status.counters.inspected} to INSPECT"
            f"{outbox}, {len(status.alarms)} alarms")


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
