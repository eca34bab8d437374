"""The central link against a real Mosquitto broker: order, acknowledgement, outages, subscriptions."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiomqtt

from drivers.health import HealthState
from station.config import MqttSection
from station.mqtt_link import CentralLink
from station.store import OutboxMessage, Store
from station.writer import StoreWriter
from tests.conftest import Broker


@asynccontextmanager
async def opened(path: Path) -> AsyncIterator[tuple[Store, StoreWriter]]:
    """The store as the daemon holds it: a connection to read on the loop, a writer thread to change it."""
    with Store(path) as store:
        async with StoreWriter(path) as writer:
            yield store, writer


async def collect(broker: Broker, topic: str, count: int, ready: asyncio.Event, timeout: float = 20) -> list[str]:
    """Central's side: a persistent QoS 1 subscription, so nothing published while it is away is lost."""
    got: list[str] = []
    async with aiomqtt.Client(broker.host, broker.port, identifier="test-consumer", clean_session=False) as client:
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
        async with opened(tmp_path / "s.db") as (store, writer):
            store.enqueue(messages(500))
            ready = asyncio.Event()
            receiver = asyncio.create_task(collect(broker, "screening/#", 500, ready))
            await ready.wait()
            central = CentralLink(store, writer, MqttSection(host=broker.host, port=broker.port), "station-test")
            task = asyncio.create_task(central.run())
            got = await receiver
            assert [json.loads(p)["n"] for p in got] == list(range(500))
            async with asyncio.timeout(5):
                while store.outbox_count():
                    await asyncio.sleep(0.01)
            assert central.published == 500 and central.health.state is HealthState.UP
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_station_runs_with_the_broker_down_and_publishes_when_it_appears(tmp_path: Path, broker: Broker) -> None:
    async def subscribe_once() -> None:
        async with aiomqtt.Client(broker.host, broker.port, identifier="test-consumer", clean_session=False) as c:
            await c.subscribe("screening/#", qos=1)

    asyncio.run(subscribe_once())
    broker.stop()

    async def main() -> None:
        async with opened(tmp_path / "s.db") as (store, writer):
            central = CentralLink(store, writer, MqttSection(host=broker.host, port=broker.port), "station-test",
                                        backoff=(0.05, 0.2))
            task = asyncio.create_task(central.run())
            store.enqueue(messages(20))
            central.notify()
            async with asyncio.timeout(5):
                while "link" not in central.health.errors:
                    await asyncio.sleep(0.01)
            assert central.health.state is HealthState.DOWN and store.outbox_count() == 20
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
        async with opened(tmp_path / "s.db") as (store, writer):
            store.enqueue(messages(3))
            central = CentralLink(store, writer, MqttSection(host=""), "station-test")
            await asyncio.wait_for(central.run(), 1)  # returns at once: nothing to connect to
            assert store.outbox_count() == 3
            assert "no broker configured" in central.health.detail

    asyncio.run(main())


def test_subscriptions_share_the_persistent_session_so_nothing_sent_while_away_is_lost(tmp_path: Path, broker: Broker) -> None:
    """Central publishes EAD records at QoS 1; those sent while the station is down arrive when it returns."""
    got: list[tuple[str, bytes]] = []

    async def central_sends(*payloads: bytes) -> None:
        async with aiomqtt.Client(broker.host, broker.port, identifier="test-central") as client:
            for payload in payloads:
                await client.publish("ead/v1/S/records", payload, qos=1)

    async def station_until(count: int, store: Store, writer: StoreWriter) -> None:
        link = CentralLink(store, writer, MqttSection(host=broker.host, port=broker.port), "station-test",
                           subscriptions={"ead/v1/S/records": lambda topic, payload: got.append((topic, payload))})
        task = asyncio.create_task(link.run())
        try:
            async with asyncio.timeout(10):
                while link.health.state is not HealthState.UP or len(got) < count:
                    await asyncio.sleep(0.01)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def main() -> None:
        async with opened(tmp_path / "s.db") as (store, writer):
            await station_until(0, store, writer)  # first connection: the broker now keeps the session
            await central_sends(b"one", b"two")  # the station is away
            await station_until(2, store, writer)
            await central_sends(b"three")  # acknowledged by the broker, which keeps it for our session
            await station_until(3, store, writer)

    asyncio.run(main())
    assert got == [("ead/v1/S/records", b"one"), ("ead/v1/S/records", b"two"), ("ead/v1/S/records", b"three")]


def test_a_handler_that_raises_is_counted_and_reported_and_the_link_stays_up(tmp_path: Path, broker: Broker) -> None:
    handled: list[bytes] = []
    reported: list[tuple[str, str]] = []

    def handler(topic: str, payload: bytes) -> None:
        if payload == b"bad":
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        handled.append(payload)

    async def main() -> None:
        async with opened(tmp_path / "s.db") as (store, writer):
            link = CentralLink(store, writer, MqttSection(host=broker.host, port=broker.port), "station-test",
                               subscriptions={"ead/v1/S/records": handler})
            link.on_handler_error = lambda topic, detail: reported.append((topic, detail))
            task = asyncio.create_task(link.run())
            await asyncio.wait_for(link.connected.wait(), 10)
            async with aiomqtt.Client(broker.host, broker.port, identifier="test-central") as client:
                await client.publish("ead/v1/S/records", b"bad", qos=1)
                await client.publish("ead/v1/S/records", b"good", qos=1)
            async with asyncio.timeout(10):
                while not handled:
                    await asyncio.sleep(0.01)
            assert not task.done() and link.health.state is HealthState.UP
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert link.handler_errors == 1 and link.received == 2

    asyncio.run(main())
    assert handled == [b"good"]
    assert [topic for topic, _ in reported] == ["ead/v1/S/records"] and "OverflowError" in reported[0][1]
