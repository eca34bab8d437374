"""Customs end to end: the simulated lane, customs' instructions over a real Mosquitto broker.

A `hold` for an item the simulator knows is benign, sent while the item is on the belt, sends it to the
INSPECT bin (the simulator's own record of where it went); sent after the item passed the gate, it
revises the stored item to INSPECT, and central gets the revision and its alert.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest

from simulator.stream import ItemStream, SimTruth
from station.cli.simulated import run_simulated
from station.config import Config, LaneSection, MqttSection, SimulatorSection, StationSection, StorageSection
from station.daemon import Lane
from station.store import Store
from tests.conftest import Broker
from tests.test_faults import stored, until

pytestmark = pytest.mark.slow  # the whole lane runs: daemon, simulator and broker

INSTRUCTIONS = "customs/v1/TEST/instructions"


def config(tmp_path: Path, broker: Broker) -> Config:
    return Config(
        station=StationSection(site="TEST", lane="L1"), lane=LaneSection(belt_speed_mm_s=1000),
        storage=StorageSection(data_dir=tmp_path), mqtt=MqttSection(host=broker.host, port=broker.port),
        simulator=SimulatorSection(seed=11, item_rate_per_s=1.5, threat_share=0.2, noread_share=0.0,
                                   invalid_s10_share=0.0, ead_missing_share=0.0, ead_late_share=0.0,
                                   ead_defect_share=0.0))


def benign(cfg: Config, count: int) -> list[SimTruth]:
    """The first items of the run that the simulator knows are harmless, with a good label and declaration."""
    stream = ItemStream(cfg.simulator)
    found = [t for t in (stream.item(i) for i in range(3, 60)) if not t.threats and t.s10_valid and t.barcode
             and t.has_ead and not t.image_fault]
    assert len(found) >= count, "the seed must have benign items"
    return found[:count]


def hold(ident: str, item_id: str) -> str:
    return json.dumps({"instruction_id": ident, "item_id": item_id, "type": "hold", "text": "profiled",
                       "issued_by": "customs-TEST", "issued_at": datetime.now(UTC).isoformat()})


def test_a_hold_sends_a_benign_item_to_inspect_on_the_belt_and_revises_it_after_the_gate(
        tmp_path: Path, broker: Broker) -> None:
    cfg = config(tmp_path, broker)
    on_belt, after_gate = benign(cfg, 2)
    published: list[tuple[str, dict[str, object]]] = []
    bins: dict[str, str | None] = {}

    async def central_listens(ready: asyncio.Event) -> None:
        async with aiomqtt.Client(broker.host, broker.port, identifier="test-central-listener") as client:
            await client.subscribe("screening/v1/TEST/L1/items/#", qos=1)
            ready.set()
            async for message in client.messages:
                published.append((str(message.topic), json.loads(bytes(message.payload))))  # type: ignore[arg-type]

    async def control(lane: Lane) -> None:
        assert lane.sim is not None
        sim = lane.sim

        def tracked(item_id: str) -> bool:
            return any(t.item_id == item_id for t in lane.runtime.core.tracks)

        def stored_row(item_id: str) -> bool:
            return bool(lane.store.items_for(item_id))

        async with aiomqtt.Client(broker.host, broker.port, identifier="test-customs") as customs:
            await until(lambda: tracked(on_belt.barcode or ""), 90, "the first benign item on the belt")
            await customs.publish(INSTRUCTIONS, hold("H-belt", on_belt.barcode or ""), qos=1)
            await until(lambda: stored_row(after_gate.barcode or ""), 90, "the second benign item stored")
            await customs.publish(INSTRUCTIONS, hold("H-after", after_gate.barcode or ""), qos=1)
            await until(lambda: any(r["revision"] == 2 for r in lane.store.items_for(after_gate.barcode or "")),
                        20, "the stored item revised")
        await until(lambda: sim.outcomes.get(on_belt.index) is not None
                    and sim.outcomes[on_belt.index].bin is not None, 30, "the held item through the gate")
        await stored(lane, lane.runtime.items_stored + 1)
        await until(lambda: any(t.endswith("/items/alert") and p["item_id"] == after_gate.barcode
                                and p["revision"] == 2 for t, p in published), 10, "the revision's alert")
        bins.update({t.barcode or "": sim.outcomes[t.index].bin for t in (on_belt, after_gate)})

    async def main() -> None:
        ready = asyncio.Event()
        listener = asyncio.create_task(central_listens(ready))
        await ready.wait()
        try:
            await run_simulated(cfg, control=control)
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    asyncio.run(main())
    with Store(tmp_path / "station.db") as store:
        (held,) = store.items_for(on_belt.barcode or "")
        (late,) = store.items_for(after_gate.barcode or "")
        alarms = {r["code"] for r in store.db.execute("SELECT code FROM alarms")}

    # On the belt: the simulator's diverter sent the benign item to INSPECT, and its record says why.
    assert bins[on_belt.barcode or ""] == "INSPECT"
    assert (held["decision"], held["routed"], held["revision"]) == ("INSPECT", "INSPECT", 1)
    assert "CUSTOMS_HOLD" in {r["code"] for r in json.loads(held["reasons"])}
    # After the gate: it went where the lane sent it (CLEAR, benign), and was decided again.
    assert bins[after_gate.barcode or ""] == late["routed"]
    assert (late["decision"], late["revision"]) == ("INSPECT", 2)
    mine = [(t.rsplit("/", 1)[1], p) for t, p in published if p.get("uid") == late["uid"]]
    revision = [p for kind, p in mine if kind == "result" and p["revision"] == 2]
    alert = [p for kind, p in mine if kind == "alert" and p["revision"] == 2]
    assert len(revision) == 1 and revision[0]["decision"] == "INSPECT"
    assert len(alert) == 1 and alert[0]["event"] == ("new" if late["routed"] == "CLEAR" else "update")
    assert "customs: hold" in alert[0]["changes"]  # type: ignore[operator]
    assert "CUSTOMS_REJECTED" not in alarms and "MISROUTED" not in alarms
