"""The simulated central EAD feed: declarations published to the broker, as central systems do.

Records go to `ead/v1/{site}/records` at QoS 1 (the broker keeps them for a station whose session
is persistent, even while it is down). A late record is sent some time after its item has passed
the gate, so the station must revise a decision it already made.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping

import aiomqtt

from drivers.aio import reraise_lost_cancel
from station.config import MqttSection

log = logging.getLogger(__name__)


class CentralFeed:
    """Async context manager: one MQTT connection publishing EAD records for one site."""

    def __init__(self, mqtt: MqttSection, site: str) -> None:
        self.mqtt = mqtt
        self.topic = f"ead/v1/{site}/records"
        self.sent = 0
        self.lost = 0  # not sent: the broker was gone
        self._client: aiomqtt.Client | None = None
        self._later: set[asyncio.Task[None]] = set()

    async def connect(self) -> None:
        """Connect now (MqttError if the broker does not answer); entering the feed connects if this did not."""
        if self._client is None:
            client = aiomqtt.Client(self.mqtt.host, self.mqtt.port, identifier=f"sim-central-{self.topic}",
                                    username=self.mqtt.username, password=self.mqtt.password, timeout=10)
            await client.__aenter__()
            self._client = client

    async def __aenter__(self) -> CentralFeed:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._later:
            task.cancel()
        await asyncio.gather(*self._later, return_exceptions=True)
        if self._client is not None:
            await self._client.__aexit__(None, None, None)

    async def send(self, record: Mapping[str, object]) -> None:
        assert self._client is not None, "use CentralFeed as an async context manager"
        try:
            await self._client.publish(self.topic, json.dumps(record), qos=1)
        except aiomqtt.MqttError as err:  # the broker went away: this declaration is lost, as a real feed's could be
            reraise_lost_cancel()
            self.lost += 1
            log.warning("simulated central: %s not sent: %s", record.get("item_id"), err)
            return
        reraise_lost_cancel()
        self.sent += 1

    def send_later(self, record: Mapping[str, object], delay_s: float) -> None:
        """Send `record` after `delay_s` seconds (a late declaration)."""
        async def later() -> None:
            await asyncio.sleep(delay_s)
            await self.send(record)

        task = asyncio.get_running_loop().create_task(later())
        self._later.add(task)
        task.add_done_callback(self._later.discard)
