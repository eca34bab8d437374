"""The central link's session rules against a real Mosquitto: the counter, the will, online and the
birth before anything else, seq per session, historical replays, a clean goodbye."""

from __future__ import annotations

import asyncio
import json
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import aiomqtt
from hypothesis import given
from hypothesis import strategies as st

from station.config import MqttSection
from station.mqtt_link import CentralLink, Topics, stamp
from station.store import OutboxMessage, Store
from tests.central.lane_process import running_link
from tests.conftest import Broker

TOPICS = Topics("S", "L")


def link(path: Path, broker: Broker, **mqtt: object) -> AbstractAsyncContextManager[CentralLink]:
    config = MqttSection(host=broker.host, port=broker.port, **mqtt)  # type: ignore[arg-type]
    return running_link(path, config, "station-S-L", TOPICS)


class Consumer:
    """Central's side: a persistent QoS 1 session on the lane's whole tree, retained messages included."""

    def __init__(self, broker: Broker, name: str = "central") -> None:
        self.client = aiomqtt.Client(broker.host, broker.port, identifier=name, clean_session=False)
        self.got: list[tuple[str, dict[str, object], bool]] = []

    async def __aenter__(self) -> Consumer:
        await self.client.__aenter__()
        await self.client.subscribe("screening/v1/S/L/#", qos=1)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self.client.__aexit__(None, None, None)

    async def _collect(self) -> None:
        async for message in self.client.messages:
            self.got.append((str(message.topic), json.loads(bytes(message.payload)), bool(message.retain)))  # type: ignore[arg-type]

    async def until(self, what: str, test: object, timeout: float = 15) -> list[dict[str, object]]:
        async with asyncio.timeout(timeout):
            while not (found := [p for t, p, _ in self.got if test(t, p)]):  # type: ignore[operator]
                await asyncio.sleep(0.02)
        return found

    def on(self, suffix: str) -> list[dict[str, object]]:
        return [p for t, p, _ in self.got if t == f"{TOPICS.root}/{suffix}"]


@given(st.dictionaries(st.text(max_size=8).filter(lambda k: k not in ("session", "seq", "historical")),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)), max_size=5),
       st.integers(1, 2**31), st.integers(0, 2**31), st.booleans())
def test_stamping_adds_the_session_fields_and_changes_nothing_else(payload: dict[str, object], session: int,
                                                                   seq: int, historical: bool) -> None:
    stamped = json.loads(stamp(json.dumps(payload), session, seq, historical))
    assert stamped == {"session": session, "seq": seq, "historical": historical, **payload}


def test_online_and_the_birth_come_first_then_the_outbox_with_rising_seq(tmp_path: Path, broker: Broker) -> None:
    async def main() -> None:
        with Store(tmp_path / "s.db") as store:  # queued while no station ran: a replay, historical
            store.enqueue([OutboxMessage(f"old{i}", TOPICS.result, json.dumps({"msg_id": f"old{i}", "n": i}))
                           for i in range(3)])
        async with Consumer(broker) as central, link(tmp_path / "s.db", broker) as lane:
            await asyncio.wait_for(lane.connected.wait(), 10)
            lane.store.enqueue([OutboxMessage("new", TOPICS.result, json.dumps({"msg_id": "new", "n": 3}))])
            lane.notify()
            await central.until("4 results", lambda t, p: len(central.on("items/result")) == 4)
            topics = [t.removeprefix(TOPICS.root + "/") for t, _, _ in central.got]
            assert topics[:3] == ["status", "birth", "state/plc"], topics
            payloads = [p for _, p, _ in central.got]
            assert {p["session"] for p in payloads} == {1}
            seqs = [p["seq"] for p in payloads]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] == 1, seqs  # 0 is the will
            assert payloads[0]["state"] == "online"
            results = central.on("items/result")
            assert [(r["n"], r["historical"]) for r in results] == [(0, True), (1, True), (2, True), (3, False)]
            assert all(isinstance(p["msg_id"], str) and p["msg_id"] for p in payloads)
    asyncio.run(main())


def test_the_session_counter_rises_at_every_connect_and_survives_a_restart(tmp_path: Path, broker: Broker) -> None:
    async def main() -> None:
        async with Consumer(broker) as central:
            for expected in (1, 2, 3):
                async with link(tmp_path / "s.db", broker) as lane:
                    await asyncio.wait_for(lane.connected.wait(), 10)
                    assert lane.session == expected
                    await central.until(f"online {expected}", lambda t, p, e=expected: (
                        t.endswith("/status") and p["state"] == "online" and p["session"] == e))
        # a broker restart: the same station reconnects, with a new session
        async with link(tmp_path / "s.db", broker) as lane:
            await asyncio.wait_for(lane.connected.wait(), 10)
            broker.stop()
            broker.start()
            async with Consumer(broker, "after-restart") as central:
                await central.until("online 5", lambda t, p: (
                    t.endswith("/status") and p["state"] == "online" and p["session"] == 5), timeout=30)
    asyncio.run(main())


def test_a_cancelled_link_says_offline_itself_and_a_goodbye_says_stopping_then_offline(tmp_path: Path,
                                                                                       broker: Broker) -> None:
    async def main() -> None:
        async with Consumer(broker) as central:
            async with link(tmp_path / "s.db", broker) as lane:
                await asyncio.wait_for(lane.connected.wait(), 10)
            await central.until("offline 1", lambda t, p: t.endswith("/status") and p["state"] == "offline")
            async with link(tmp_path / "s.db", broker) as lane:
                await asyncio.wait_for(lane.connected.wait(), 10)
                lane.store.enqueue([OutboxMessage("last", TOPICS.result, json.dumps({"n": 9}))])
                await lane.goodbye()
            states = [(p["session"], p["state"]) for p in central.on("status")]
            assert states == [(1, "online"), (1, "offline"), (2, "online"), (2, "stopping"), (2, "offline")]
            assert [r["n"] for r in central.on("items/result")] == [9]  # the goodbye drained the outbox first
        # what a consumer that comes later sees: the retained last word
        async with Consumer(broker, "late") as late:
            await late.until("retained status", lambda t, p: t.endswith("/status"))
            assert [(p["session"], p["state"]) for p in late.on("status")] == [(2, "offline")]
            assert all(r for t, _, r in late.got if t.endswith(("/status", "/birth", "/state/plc")))
    asyncio.run(main())
