"""The central link: one MQTT session with central systems, persistent (clean_session off).

Out: drains the store's outbox to the broker at QoS 1, in order. The station never waits on the
broker: items are written to the outbox with their results, and this task publishes them whenever a
broker is reachable. A message leaves the outbox only when the broker has acknowledged it (PUBACK),
so a crash or an outage loses nothing; a message published twice keeps its `msg_id`, so consumers
can drop the duplicate.

In: subscriptions at QoS 1 on the same session (EAD records on `ead/v1/{site}/records`), so that the
broker keeps what central sent while the station was away and delivers it on reconnect. Each
message goes to its handler, which must not raise: a bad message is the handler's to report.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiomqtt

from drivers.aio import reraise_lost_cancel
from drivers.health import DeviceHealth, HealthState
from station.config import MqttSection
from station.store import Store
from station.writer import StoreWriter

log = logging.getLogger(__name__)

BATCH = 200  # messages in flight at once; paho keeps them in order on the wire


@dataclass(frozen=True)
class Topics:
    site: str
    lane: str

    @property
    def root(self) -> str:
        return f"screening/v1/{self.site}/{self.lane}"

    @property
    def result(self) -> str:
        return f"{self.root}/items/result"

    @property
    def alert(self) -> str:
        return f"{self.root}/items/alert"

    @property
    def verdict(self) -> str:
        """An operator's verdict on an INSPECT item, from the console (QoS 1, like every message)."""
        return f"{self.root}/items/verdict"

    @property
    def ead_records(self) -> str:
        return f"ead/v1/{self.site}/records"

    @property
    def ead_quality(self) -> str:
        return f"{self.root}/ead/quality"


Handler = Callable[[str, bytes], None]  # (topic, payload)


class CentralLink:
    def __init__(self, store: Store, writer: StoreWriter, config: MqttSection, client_id: str,
                 backoff: tuple[float, float] = (0.2, 5.0), subscriptions: Mapping[str, Handler] | None = None):
        self.store = store  # read on the loop (WAL: never waits for the writer)
        self.writer = writer  # acknowledged messages leave the outbox through it
        self.config = config
        self.client_id = client_id
        self.backoff = backoff
        self.subscriptions = dict(subscriptions or {})
        self.received = 0
        self.handler_errors = 0  # handlers that raised: each one a bug, logged with its traceback
        # Told (topic, detail) of each handler that raised, so that the daemon can raise an alarm; must not raise.
        self.on_handler_error: Callable[[str, str], None] = lambda topic, detail: None
        self.connected = asyncio.Event()  # set once the first connection is up and subscribed
        self.health = DeviceHealth("mqtt", HealthState.DOWN if not config.host else HealthState.CONNECTING,
                                   detail=("no broker configured: messages stay in the outbox" if not config.host
                                           else ""))
        self.published = 0
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """New rows are in the outbox."""
        self._wake.set()

    async def run(self) -> None:
        if not self.config.host:
            return
        delay = self.backoff[0]
        while True:
            try:
                async with self._client() as client:
                    for topic in self.subscriptions:
                        await client.subscribe(topic, qos=1)
                    reraise_lost_cancel()
                    self.health = self.health.ok(f"connected to {self.config.host}:{self.config.port}")
                    self.connected.set()
                    delay = self.backoff[0]
                    await self._serve(client)
            except aiomqtt.MqttError as err:
                if self.health.state is not HealthState.DOWN:
                    log.warning("MQTT link to %s:%s down: %s", self.config.host, self.config.port, err)
                self.health = self.health.failed("link", str(err))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.backoff[1])

    def _client(self) -> aiomqtt.Client:
        tls = None
        if self.config.tls:
            tls = aiomqtt.TLSParameters(ca_certs=str(self.config.ca_file) if self.config.ca_file else None,
                                        cert_reqs=ssl.CERT_REQUIRED)
        return aiomqtt.Client(
            self.config.host, self.config.port, identifier=self.client_id,
            username=self.config.username, password=self.config.password, tls_params=tls,
            keepalive=self.config.keepalive_s, clean_session=False, timeout=10,
        )

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish and receive on one connection until either side fails (MqttError), then stop both."""
        tasks = [asyncio.create_task(self._drain_forever(client)), asyncio.create_task(self._receive_forever(client))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # the MqttError that ended it (or a bug, which must not be swallowed)
        raise aiomqtt.MqttError("the connection's message stream ended")

    async def _receive_forever(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            handler = next((h for pattern, h in self.subscriptions.items() if message.topic.matches(pattern)), None)
            if handler is not None and isinstance(message.payload, bytes | bytearray):
                self.received += 1
                try:
                    handler(topic, bytes(message.payload))
                except Exception as err:  # a bug in one handler must not end the link, and with it the daemon
                    log.exception("handler of %s raised", topic)
                    self.handler_errors += 1
                    # Short (its message may quote a whole payload) and valid UTF-8, so that an alarm can store it.
                    detail = f"{type(err).__name__}: {err}"[:300].encode("utf-8", "backslashreplace").decode()
                    self.on_handler_error(topic, detail)

    async def _drain_forever(self, client: aiomqtt.Client) -> None:
        sent = 0  # the last seq acknowledged on this connection (its delete may still be on the writer's queue)
        while True:
            self._wake.clear()
            batch = self.store.outbox_batch(BATCH, after_seq=sent)
            if not batch:
                try:  # woken by new rows; and now and then regardless (a row another path wrote)
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            # Publish the batch concurrently (paho sends in call order) and delete what was acknowledged.
            results = await asyncio.gather(
                *(client.publish(msg.topic, msg.payload, qos=1) for msg in batch), return_exceptions=True
            )
            reraise_lost_cancel()  # aiomqtt awaits with 3.11's wait_for, which can drop our cancel
            acked = [msg.seq for msg, res in zip(batch, results, strict=True) if res is None]
            if acked:

                def delete(store: Store, acked: list[int] = acked) -> None:
                    store.outbox_delete(acked)

                self.writer.submit(delete)
                sent = max(sent, max(acked))
            self.published += len(acked)
            failure = next((r for r in results if isinstance(r, BaseException)), None)
            if failure is not None:
                if isinstance(failure, aiomqtt.MqttError):
                    raise failure
                raise aiomqtt.MqttError(f"publish failed: {failure!r}") from failure
