"""The station on its simulated lane: `station run --simulate`, and the tests' way to run a whole lane.

The only place besides `station sim` where the station meets the simulator: it opens the simulated
lane (simulator/lane.py) once the daemon holds the data folder and hands the daemon its endpoints as
plain values (station/daemon.py `Endpoints`); the daemon never imports the simulator.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from aiomqtt import MqttError

from drivers.health import HealthState
from drivers.links import TcpLink
from simulator.central import CentralFeed
from simulator.faults import Fault
from simulator.lane import SimLane
from station.config import Config
from station.daemon import Control, Endpoints, Lane, OpenLane, RunResult, run_station
from station.lane import messages as m

log = logging.getLogger(__name__)


def simulated_lane(config: Config, *, items: int | None = None, plc_port: int = 0,
                   faults: Sequence[Fault] = ()) -> OpenLane:
    """What opens the simulated lane in the daemon's data folder (its `sim/` folder), faults injected."""

    @asynccontextmanager
    async def open_lane(data_dir: Path) -> AsyncIterator[Endpoints]:
        feed = await central_feed(config)
        async with SimLane(config.simulator, config.lane, data_dir / "sim", plc_port=plc_port, max_items=items,
                           profile=config.plc.profile, central=feed) as sim:
            for fault in faults:
                await sim.inject(fault)
            yield Endpoints(TcpLink("127.0.0.1", sim.plc.port), sim.scanner.path, sim.barcode.path, sim.spool_dir,
                            sim.ead_file if feed is None else None, feed is not None, sim)

    return open_lane


async def central_feed(config: Config) -> CentralFeed | None:
    """Central's EAD feed over the configured broker, or None (a file the station imports): without a
    broker, and with one that does not answer now (the station's own link keeps trying it)."""
    if not config.mqtt.host:
        return None
    feed = CentralFeed(config.mqtt, config.station.site)
    try:
        await feed.connect()
    except MqttError as err:
        log.warning("broker %s:%d not reachable (%s): the simulated central writes its declarations to a file "
                    "the station imports", config.mqtt.host, config.mqtt.port, err)
        return None
    return feed


async def run_simulated(config: Config, *, control: Control, items: int | None = None, plc_port: int = 0,
                        faults: Sequence[Fault] = ()) -> RunResult:
    """`run_station` on the simulated lane, with the simulator's ground truth in the result."""
    sims: list[SimLane] = []

    async def controlled(lane: Lane) -> None:
        sims.append(lane.sim)
        await control(lane)

    result = await run_station(config, lane=simulated_lane(config, items=items, plc_port=plc_port, faults=faults),
                               control=controlled)
    result.sim_outcomes = dict(sims[0].outcomes) if sims else {}
    return result


async def stop_after(lane: Lane, items: int, grace_s: float = 10.0) -> None:
    """Return when the simulator has routed `items` items and the station has stored them (the belt stopped)."""
    sim: SimLane = lane.sim
    await sim.all_routed.wait()
    runtime, store = lane.runtime, lane.store
    try:
        async with asyncio.timeout(grace_s):
            await runtime.wait_stored(items)
    except TimeoutError:
        log.error("only %d of %d items stored %.0f s after the last left the belt", runtime.items_stored, items,
                  grace_s)
    runtime.dispatch(m.Operator(time.monotonic(), "stop"))
    if lane.central.health.state is HealthState.UP:  # give a connected broker the backlog before we go
        try:
            async with asyncio.timeout(grace_s):
                while store.outbox_count():
                    await asyncio.sleep(0.05)
        except TimeoutError:
            log.warning("%d messages still in the outbox at the end of the run", store.outbox_count())
