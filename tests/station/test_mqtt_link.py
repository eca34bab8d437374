"""The outbox publisher against a real Mosquitto broker: order, acknowledgement, outages."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt

from drivers.health import HealthState
from station.config import MqttSection
from station.mqtt_link import OutboxPublisher
from station.store import OutboxMessage, Store
from tests.conftest import Broker


async def collect(broker: Broker, topic: str, count: int, ready: asyncio.Event, timeout: float = 20) -> list[str]:
    """Central's side: a persistent QoS 1 subscription, so nothing published while it is away is lost."""
    got: list[str] = []
    async with aiomqtt.Client(broker.host, broker.port, identifier="test-central", clean_session=False) as client:
        await client.subscribe(topic, qos=1)
        ready.set()
        try:
            async with asyncio.timeout(timeout):
                async for message in client.messages:
                    got.append(bytes(message.payload).decode())  # type: ignore[arg-type]
                    if len(got) == count:
                        return got
        except TimeoutError as err:
            raise AssertionError(f"only {len(got)} of {count} messages in {timeout} s: {got[:5]}") from err
    return got


def messages(n: int) -> list[OutboxMessage]:
    return [OutboxMessage(f"m{i}", "screening/v1/S/L/items/result", json.dumps({"n": i})) for i in range(n)]


def test_backlog_is_published_in_order_and_removed_once_acknowledged(tmp_path: Path, broker: Broker) -> None:
    async def main() -> None:
        with Store(tmp_path / "s.db") as store:
            store.enqueue(messages(500))
            ready = asyncio.Event()
            receiver = asyncio.create_task(collect(broker, "screening/#", 500, ready))
            await ready.wait()
            publisher = OutboxPublisher(store, MqttSection(host=broker.host, port=broker.port), "station-test")
            task = asyncio.create_task(publisher.run())
            got = await receiver
            assert [json.loads(p)["n"] for p in got] == list(range(500))
            async with asyncio.timeout(5):
                while store.outbox_count():
                    await asyncio.sleep(0.01)
            assert publisher.published == 500 and publisher.health.state is HealthState.UP
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_station_runs_with_the_broker_down_and_publishes_when_it_appears(tmp_path: Path, broker: Broker) -> None:
    async def subscribe_once() -> None:
        async with aiomqtt.Client(broker.host, broker.port, identifier="test-central", clean_session=False) as c:
            await c.subscribe("screening/#", qos=1)

    asyncio.run(subscribe_once())
    broker.stop()

    async def main() -> None:
        with Store(tmp_path / "s.db") as store:
            publisher = OutboxPublisher(store, MqttSection(host=broker.host, port=broker.port), "station-test",
                                        backoff=(0.05, 0.2))
            task = asyncio.create_task(publisher.run())
            store.enqueue(messages(20))
            publisher.notify()
            async with asyncio.timeout(5):
                while "link" not in publisher.health.errors:
                    await asyncio.sleep(0.01)
            assert publisher.health.state is HealthState.DOWN and store.outbox_count() == 20
            await asyncio.to_thread(broker.start)
            ready = asyncio.Event()
            got = await collect(broker, "screening/#", 20, ready)
            assert sorted(json.loads(p)["n"] for p in got) == list(range(20))
            async with asyncio.timeout(5):
                while store.outbox_count():
                    await asyncio.sleep(0.01)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_no_broker_configured_keeps_messages(tmp_path: Path) -> None:
    async def main() -> None:
        with Store(tmp_path / "s.db") as store:
            store.enqueue(messages(3))
            publisher = OutboxPublisher(store, MqttSection(host=""), "station-test")
            await asyncio.wait_for(publisher.run(), 1)  # returns at once: nothing to connect to
            assert store.outbox_count() == 3
            assert "no broker configured" in publisher.health.detail

    asyncio.run(main())
