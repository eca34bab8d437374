"""Twenty lanes' central links on one broker, in one process: no two share a client id, a session or a
topic, and central gets every message of every lane (0 lost), each on its own lane's topics.

The links are the daemon's own (`CentralLink`, client id `station-{site}-{lane}` as the daemon derives
it, each with its store and writer); the lanes behind them are left out: twenty full stations with their
simulators and models do not fit on a 2-core CI machine (one lane published nothing within 120 s)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

from station.config import MqttSection
from station.mqtt_link import CentralLink, Topics
from station.store import OutboxMessage, Store
from station.writer import StoreWriter
from tests.central.lane_process import Central, StandInPresence
from tests.conftest import Broker

LANES = 20
MESSAGES = 100  # per lane, queued before it connects and while it runs


def alarms(topics: Topics, start: int, n: int) -> list[OutboxMessage]:
    return [OutboxMessage(f"{topics.site}/{topics.lane}/{i}", topics.alarms, json.dumps({
        "msg_id": f"{topics.site}/{topics.lane}/{i}", "schema": "screening/v1/alarm", "site": topics.site,
        "lane": topics.lane, "event": "raised", "code": "TEST", "detail": str(i), "at": "2026-12-04T10:00:00+00:00",
        "by": None})) for i in range(start, start + n)]


def test_twenty_lanes_share_one_broker_without_collisions_and_lose_nothing(tmp_path: Path, broker: Broker) -> None:
    lanes = [Topics(f"SITE-{1 + n % 2}", f"lane-{n // 2 + 1}") for n in range(LANES)]

    async def lane(topics: Topics, ready: asyncio.Event) -> None:
        path = tmp_path / f"{topics.site}-{topics.lane}.db"
        with Store(path) as store:
            store.enqueue(alarms(topics, 0, MESSAGES // 2))  # queued while it was away: historical
            async with StoreWriter(path) as writer:
                link = CentralLink(store, writer, MqttSection(host=broker.host, port=broker.port),
                                   f"station-{topics.site}-{topics.lane}", topics=topics,
                                   presence=StandInPresence(topics))
                task = asyncio.create_task(link.run())
                await link.connected.wait()
                later = alarms(topics, MESSAGES // 2, MESSAGES // 2)
                await writer.submit(lambda s: s.enqueue(later), want_result=True)  # type: ignore[misc]
                link.notify()
                while store.outbox_count():
                    await asyncio.sleep(0.02)
                await ready.wait()  # every lane drained: then all say goodbye
                await link.goodbye()
                await task

    async def main() -> None:
        async with Central(broker) as central:
            ready = asyncio.Event()
            jobs = [asyncio.create_task(lane(topics, ready)) for topics in lanes]
            await central.until(lambda h: len(central.on("alarms")) >= LANES * MESSAGES, "every lane's messages")
            ready.set()
            await asyncio.gather(*jobs)
            await central.until(lambda h: sum(x.payload["state"] == "offline" for x in central.on("status")) == LANES,
                                "every lane offline")
        lost = 0
        for topics in lanes:
            mine = [h for h in central.heard if h.topic.startswith(topics.root + "/")]
            assert all(h.payload["site"] == topics.site and h.payload["lane"] == topics.lane for h in mine)
            assert {h.payload["session"] for h in mine} == {1}  # one connect each: no client-id takeover
            assert [h.payload["state"] for h in mine if h.topic == topics.status] == ["online", "stopping", "offline"]
            received = Counter(str(h.payload["msg_id"]) for h in mine if h.topic == topics.alarms)
            lost += MESSAGES - len(received)
            assert sum(h.payload["historical"] for h in mine if h.topic == topics.alarms) == MESSAGES // 2
        assert lost == 0
        print(f"{LANES} lanes: {len(central.heard)} messages validated, 0 lost")

    asyncio.run(main())
