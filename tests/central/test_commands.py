"""Commands from central to a running station, over a real broker: carried out, answered on the MQTT 5
response topic with the correlation data, refused with a reason when they must be, audited all; and never
carried out when sent while the lane was offline, or from a retained message."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.central.lane_process import Central, Heard, LaneProcess
from tests.conftest import Broker

pytestmark = pytest.mark.slow

ROOT = "screening/v1/SITE-1/lane-1"
REPLIES = f"{ROOT}/cmd/reply/central"  # under the lane's root: the ACL lets a lane publish nowhere else


def command(name: str, *, issued_by: str = "ops", ttl_s: float = 60, cmd_id: str | None = None,
            **extra: object) -> dict[str, object]:
    return {"cmd_id": cmd_id or uuid.uuid4().hex, "issued_by": issued_by,
            "expires_at": (datetime.now(UTC) + timedelta(seconds=ttl_s)).isoformat(), **extra}


class Desk:
    """Central's command sender: MQTT 5, with a response topic and correlation data."""

    def __init__(self, broker: Broker) -> None:
        self.client = aiomqtt.Client(broker.host, broker.port, identifier="central-desk",
                                     protocol=aiomqtt.ProtocolVersion.V5)

    async def __aenter__(self) -> Desk:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.__aexit__(None, None, None)

    async def send(self, name: str, payload: dict[str, object] | bytes, *, retain: bool = False) -> str:
        correlation = uuid.uuid4().hex
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = REPLIES
        props.CorrelationData = correlation.encode()
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        await self.client.publish(f"{ROOT}/cmd/{name}", body, qos=1, retain=retain, properties=props)
        return correlation


async def reply_to(central: Central, correlation: str, timeout: float = 20) -> dict[str, object]:
    heard: Heard = await central.until(lambda h: h.topic == REPLIES and h.payload.get("correlation") == correlation,
                                       f"the reply {correlation}", timeout=timeout)
    return heard.payload


async def lane_state(central: Central, state: str, session: int = 1) -> None:
    """Until the lane's latest state, said in `session`, is `state`."""
    await central.until(lambda h: h.topic == f"{ROOT}/state/lane" and h.payload["state"] == state
                        and h.payload["session"] == session and h is central.on("state/lane")[-1],
                        f"the lane {state} in session {session}")


def test_commands_are_checked_carried_out_answered_and_audited(tmp_path: Path, broker: Broker) -> None:
    lane = LaneProcess(tmp_path, broker, mqtt={"commands": {"ops": ["pause", "resume", "rebirth"],
                                                            "intern": ["rebirth"]}})

    async def main() -> None:
        async with Central(broker, f"{ROOT}/#") as central, Desk(broker) as desk:
            # retained on the broker before the lane comes: delivered at its subscribe, marked retained
            stale = await desk.send("pause", command("pause", cmd_id="retained-1"), retain=True)
            lane.start()
            assert (await reply_to(central, stale))["accepted"] is False
            assert "retained" in str((await reply_to(central, stale))["reason"])
            await desk.client.publish(f"{ROOT}/cmd/pause", b"", qos=1, retain=True)  # clear the retained one
            await lane_state(central, "RUNNING")

            pause = command("pause")
            answer = await reply_to(central, await desk.send("pause", pause))
            assert answer["accepted"] is True and answer["cmd_id"] == pause["cmd_id"], answer
            await lane_state(central, "STOPPED")

            again = await reply_to(central, await desk.send("pause", pause))  # the same cmd_id
            assert again["accepted"] is False and "replayed" in str(again["reason"])
            nothing = await reply_to(central, await desk.send("pause", command("pause")))
            assert nothing["accepted"] is False and "nothing to pause" in str(nothing["reason"])
            expired = await reply_to(central, await desk.send("resume", command("resume", ttl_s=-5)))
            assert expired["accepted"] is False and "expired" in str(expired["reason"])
            too_long = await reply_to(central, await desk.send("resume", command("resume", ttl_s=86_000)))
            assert too_long["accepted"] is False and "ahead" in str(too_long["reason"])
            intern = await reply_to(central, await desk.send("resume", command("resume", issued_by="intern")))
            assert intern["accepted"] is False and "may not send resume" in str(intern["reason"])
            bad = await reply_to(central, await desk.send("resume", b'{"cmd_id": 7}'))
            assert bad["accepted"] is False and "not a command" in str(bad["reason"])
            await central.until(lambda h: h.topic == f"{ROOT}/alarms" and h.payload["code"] == "COMMAND_REJECTED",
                                "the COMMAND_REJECTED alarm")

            resumed = await reply_to(central, await desk.send("resume", command("resume")))
            assert resumed["accepted"] is True, resumed
            await lane_state(central, "RUNNING")

            births = len(central.on("birth"))
            rebirth = await reply_to(central, await desk.send("rebirth", command("rebirth", issued_by="intern")))
            assert rebirth["accepted"] is True
            await central.until(lambda h: len(central.on("birth")) > births, "a second birth")
            assert {h.payload["session"] for h in central.on("birth")} == {1}  # the same session

            # MQTT 3.1.1 has no response topic: the payload's reply_to and correlation do the same
            async with aiomqtt.Client(broker.host, broker.port, identifier="central-311") as old:
                await old.publish(f"{ROOT}/cmd/rebirth", json.dumps(command(
                    "rebirth", reply_to=REPLIES, correlation="311-corr")), qos=1)
            assert (await reply_to(central, "311-corr"))["accepted"] is True

            # sent while the lane is offline: never carried out later
            assert lane.stop() == 0
            offline = command("pause", ttl_s=240)
            await desk.send("pause", offline)
            lane.start()
            await lane_state(central, "RUNNING", session=2)
            barrier = await reply_to(central, await desk.send("rebirth", command("rebirth")))
            assert barrier["accepted"] is True
            assert not [h for h in central.heard if h.payload.get("cmd_id") == offline["cmd_id"]]
            assert central.on("state/lane")[-1].payload["state"] == "RUNNING"

        with sqlite3.connect(lane.data_dir / "station.db") as db:
            audited = [a for (a,) in db.execute("SELECT action FROM audit WHERE action LIKE 'command %'")]
            outcomes = dict(db.execute("SELECT cmd_id, outcome FROM commands").fetchall())
        assert len(audited) == 12, audited  # every command that arrived, accepted or not
        assert outcomes[str(pause["cmd_id"])] == "accepted"
        assert str(offline["cmd_id"]) not in outcomes

    try:
        asyncio.run(main())
    finally:
        lane.stop()
