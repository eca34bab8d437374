"""The central link: one MQTT session with central systems, persistent, with Sparkplug B's state rules.

Sessions: before each CONNECT the link raises the lane's session counter in the store (so it rises
across restarts and crashes) and connects with a retained last will on `status` saying `offline` with
that session. Once connected it publishes `status` `online` (retained), then the lane's birth: what
`Presence.birth()` gives (`birth` and every `state/{device}`, retained). A consumer ignores an
`offline` whose session is not the latest `online`'s (Sparkplug's bdSeq). A clean stop publishes
`stopping`, then `offline` itself, before disconnecting.

Every message the link publishes carries `session`, `seq` (per session; 0 is the last will) and
`historical` (queued before this session connected: a replay of the outbox), spliced in front of the
stored JSON object; its `msg_id` is the one it was stored with, so consumers can drop duplicates.

Out: the store's outbox drains at QoS 1, in order. The station never waits on the broker: items are
written to the outbox with their results, and this task publishes them whenever a broker is
reachable. A message leaves the outbox only when the broker has acknowledged it (PUBACK), so a crash
or an outage loses nothing. State (status, birth, device state, command replies) is published live
and never queued: a newer one replaces it, and the next connect republishes it.

In: subscriptions at QoS 1 on the same session (EAD records, customs instructions), so that the broker
keeps what central sent while the station was away. Commands (`cmd/+`) at QoS 0 and never from a
retained message, so that a command sent while the lane was offline is never carried out later: each
goes to `commands`, whose reply goes back on the MQTT 5 response topic with the correlation data.
A handler must not raise: a bad message is the handler's to report.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, cast

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from drivers.aio import reraise_lost_cancel
from drivers.health import DeviceHealth, HealthState
from station.config import ConfigError, MqttSection
from station.mqtt_tls import explain, tls_context
from station.store import OutboxMessage, Store
from station.writer import StoreWriter

log = logging.getLogger(__name__)

BATCH = 60  # outbox messages handed to paho at once (its in-flight window is 20): enough to keep the wire busy
GOODBYE_S = 2.0  # at a clean stop, how long the outbox may still drain before `offline`


@dataclass(frozen=True)
class Topics:
    site: str
    lane: str

    @property
    def root(self) -> str:
        return f"screening/v1/{self.site}/{self.lane}"

    @property
    def status(self) -> str:
        return f"{self.root}/status"

    @property
    def birth(self) -> str:
        return f"{self.root}/birth"

    def state(self, device: str) -> str:
        return f"{self.root}/state/{device}"

    @property
    def alarms(self) -> str:
        return f"{self.root}/alarms"

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
    def commands(self) -> str:
        return f"{self.root}/cmd/+"

    @property
    def command_reply(self) -> str:
        """Where a reply goes when the command named no response topic of its own."""
        return f"{self.root}/cmd/reply"

    @property
    def ead_records(self) -> str:
        return f"ead/v1/{self.site}/records"

    @property
    def customs_instructions(self) -> str:
        return f"customs/v1/{self.site}/instructions"

    @property
    def screening_result(self) -> str:
        return f"{self.root}/customs/screening_result"

    @property
    def ead_quality(self) -> str:
        return f"{self.root}/ead/quality"


@dataclass(frozen=True)
class Live:
    """A message published now and never queued: state that a newer one replaces."""

    topic: str
    payload: Mapping[str, object]  # without msg_id, session, seq and historical: the link adds them
    retain: bool = True
    correlation: bytes | None = None  # MQTT 5 correlation data (command replies)


class Presence(Protocol):
    """What the lane says about itself on connect (station/presence.py)."""

    def status(self, state: str) -> dict[str, object]: ...

    def birth(self) -> list[Live]: ...


@dataclass(frozen=True)
class Command:
    """A message on `cmd/{name}`, as it came: the handler checks and answers it."""

    name: str
    payload: bytes
    retained: bool
    response_topic: str | None  # MQTT 5
    correlation: bytes | None  # MQTT 5


@dataclass(frozen=True)
class Reply:
    payload: Mapping[str, object]
    topic: str  # where it goes: the command's response topic, or the lane's reply topic


Handler = Callable[[str, bytes], None]  # (topic, payload)
CommandHandler = Callable[[Command], Awaitable[Reply | None]]


def stamp(payload: str, session: int, seq: int, historical: bool) -> str:
    """The stored JSON object with the session's fields in front (the stored text never has them)."""
    head = f'{{"session":{session},"seq":{seq},"historical":{"true" if historical else "false"}'
    body = payload.strip()
    if not body.startswith("{"):
        raise ValueError(f"an outbox payload must be a JSON object, not {body[:40]!r}")
    rest = body[1:].lstrip()
    return head + ("}" if rest.startswith("}") else "," + rest)


class CentralLink:
    def __init__(self, store: Store, writer: StoreWriter, config: MqttSection, client_id: str,
                 backoff: tuple[float, float] = (0.2, 5.0), subscriptions: Mapping[str, Handler] | None = None,
                 topics: Topics | None = None, presence: Presence | None = None) -> None:
        self.store = store  # read on the loop (WAL: never waits for the writer)
        self.writer = writer  # the session counter rises, and acknowledged messages leave, through it
        self.config = config
        self.client_id = client_id
        self.backoff = backoff
        self.topics = topics
        self.presence = presence
        self.subscriptions = dict(subscriptions or {})
        self.commands: CommandHandler | None = None  # set by the daemon: cmd/+ is subscribed only then
        self.received = 0
        self.handler_errors = 0  # handlers that raised: each one a bug, logged with its traceback
        # Told (topic, detail) of each handler that raised, so that the daemon can raise an alarm; must not raise.
        self.on_handler_error: Callable[[str, str], None] = lambda topic, detail: None
        self.connected = asyncio.Event()  # set once the first connection is up and subscribed
        self.health = DeviceHealth("mqtt", HealthState.DOWN if not config.host else HealthState.CONNECTING,
                                   detail=("no broker configured: messages stay in the outbox" if not config.host
                                           else ""))
        self.published = 0
        self.session = 0  # the session of the current (or last) connection
        self._seq = 0
        self._connected_at = 0.0  # time.time() of this session's CONNACK: a message queued before is historical
        self._client: aiomqtt.Client | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._said_goodbye = asyncio.Event()  # set once `goodbye` is done: the connection then closes
        self._commands_running: set[asyncio.Task[None]] = set()

    def notify(self) -> None:
        """New rows are in the outbox."""
        self._wake.set()

    @property
    def online(self) -> bool:
        return self._client is not None

    async def run(self) -> None:
        if not self.config.host:
            return
        delay = self.backoff[0]
        while not self._stopping:
            try:
                session = await self._next_session()
                async with self._connect(session) as client:
                    await self._begin(client, session)
                    delay = self.backoff[0]
                    await self._serve(client)
            except aiomqtt.MqttError as err:
                if self.health.state is not HealthState.DOWN:
                    log.warning("MQTT link to %s:%s down: %s", self.config.host, self.config.port,
                                explain(err, self.config))
                self.health = self.health.failed("link", explain(err, self.config))
            except ConfigError as err:  # a TLS file gone or half-written (a renewal): retried, never the end
                if self.health.state is not HealthState.DOWN:
                    log.warning("MQTT link to %s:%s cannot connect: %s", self.config.host, self.config.port, err)
                self.health = self.health.failed("link", str(err))
            finally:
                self._client = None
            if self._stopping:
                return
            try:  # the backoff, cut short by a goodbye
                async with asyncio.timeout(delay * random.uniform(0.5, 1.0)):
                    await self._said_goodbye.wait()
            except TimeoutError:
                pass
            delay = min(delay * 2, self.backoff[1])

    async def _next_session(self) -> int:
        future = self.writer.submit(lambda store: store.next_session(), want_result=True)
        assert future is not None
        return await future

    def _connect(self, session: int) -> aiomqtt.Client:
        v5 = self.config.protocol == "5"
        will = None
        if self.presence is not None and self.topics is not None:
            offline = {"msg_id": f"{self.client_id}/{session}/0", **self.presence.status("offline")}
            will = aiomqtt.Will(self.topics.status, stamp(json.dumps(offline), session, 0, False), qos=1, retain=True)
        properties = None
        if v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.config.session_expiry_s
        return aiomqtt.Client(
            self.config.host, self.config.port, identifier=self.client_id,
            username=self.config.username, password=self.config.password, tls_context=tls_context(self.config),
            tls_insecure=self.config.tls_insecure if self.config.tls else None,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            # persistent: MQTT 5's clean_start off (with a session expiry), 3.1.1's clean_session off
            clean_session=None if v5 else False,
            clean_start=False if v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY, properties=properties,
            keepalive=self.config.keepalive_s, will=will, timeout=10,
        )

    async def _begin(self, client: aiomqtt.Client, session: int) -> None:
        """A new session: subscribe, then say `online` and the birth, before any queued message."""
        self.session, self._seq, self._connected_at = session, 0, time.time()
        client.pending_calls_threshold = BATCH + 100  # our window, plus replies and state: not a warning
        self._client = client
        for topic in self.subscriptions:
            await client.subscribe(topic, qos=1)
        if self.commands is not None and self.topics is not None:
            await client.subscribe(self.topics.commands, qos=0)  # never queued by the broker while we are away
        reraise_lost_cancel()
        await self._say_online(client)
        self.health = self.health.ok(f"connected to {self.config.host}:{self.config.port} (session {session})")
        log.info("MQTT link up: %s:%s, session %d", self.config.host, self.config.port, session)
        self.connected.set()

    async def _say_online(self, client: aiomqtt.Client) -> None:
        if self.presence is None or self.topics is None:
            return
        await self._publish(client, Live(self.topics.status, self.presence.status("online")))
        for message in self.presence.birth():
            await self._publish(client, message)

    async def rebirth(self) -> None:
        """Publish `online` and the whole birth again, in the same session (`cmd/rebirth`)."""
        if self._client is not None:
            await self._say_online(self._client)

    async def send(self, message: Live) -> bool:
        """Publish state now if connected (True once acknowledged); otherwise it is dropped: the next
        connect's birth says the current state."""
        client = self._client
        if client is None:
            return False
        try:
            await self._publish(client, message)
        except aiomqtt.MqttError as err:
            log.info("live message on %s not sent: %s", message.topic, err)
            return False
        return True

    async def goodbye(self) -> None:
        """A clean stop: `stopping`, the outbox drained for a moment, `offline`; then the link's task
        disconnects and ends (at once, if it was not connected)."""
        self._stopping = True
        client = self._client
        try:
            if client is None or self.presence is None or self.topics is None:
                return
            try:
                await self._publish(client, Live(self.topics.status, self.presence.status("stopping")))
                async with asyncio.timeout(GOODBYE_S):
                    while self.store.outbox_count():
                        self.notify()
                        await asyncio.sleep(0.05)
            except (TimeoutError, aiomqtt.MqttError):
                pass
            try:
                await self._publish(client, Live(self.topics.status, self.presence.status("offline")))
            except aiomqtt.MqttError as err:
                log.warning("could not say offline: %s (the broker's last will says it)", err)
        finally:
            self._said_goodbye.set()

    async def _publish(self, client: aiomqtt.Client, message: Live) -> None:
        properties = None
        if message.correlation is not None and self.config.protocol == "5":
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = message.correlation
        self._seq += 1
        payload = {"msg_id": f"{self.client_id}/{self.session}/{self._seq}", **message.payload}
        await client.publish(message.topic, stamp(json.dumps(payload), self.session, self._seq, False), qos=1,
                             retain=message.retain, properties=properties)
        reraise_lost_cancel()

    async def _serve(self, client: aiomqtt.Client) -> None:
        """Publish and receive on one connection until either side fails (MqttError) or the link says
        goodbye, then stop both."""
        goodbye = asyncio.create_task(self._said_goodbye.wait())
        tasks = [asyncio.create_task(self._drain_forever(client)), asyncio.create_task(self._receive_forever(client)),
                 goodbye]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            # Ended without goodbye (Ctrl-C, a crash elsewhere): say offline ourselves, since a clean
            # DISCONNECT suppresses the will and would leave `online` retained.
            if self.presence is not None and self.topics is not None and not self._stopping:
                try:
                    async with asyncio.timeout(1.0):
                        await self._publish(client, Live(self.topics.status, self.presence.status("offline")))
                except (TimeoutError, aiomqtt.MqttError):
                    pass
            raise
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if goodbye in done:
            return  # a clean stop: the caller disconnects, and the broker keeps our `offline`
        for task in done:
            task.result()  # the MqttError that ended it (or a bug, which must not be swallowed)
        raise aiomqtt.MqttError("the connection's message stream ended")

    async def _receive_forever(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = str(message.topic)
            if not isinstance(message.payload, bytes | bytearray):
                continue
            payload = bytes(message.payload)
            if self.commands is not None and self.topics is not None and message.topic.matches(self.topics.commands):
                if topic != self.topics.command_reply and payload:  # empty: a retained command being cleared
                    self._spawn_command(client, topic, payload, message)
                continue
            handler = next((h for pattern, h in self.subscriptions.items() if message.topic.matches(pattern)), None)
            if handler is not None:
                self.received += 1
                try:
                    handler(topic, payload)
                except Exception as err:  # a bug in one handler must not end the link, and with it the daemon
                    self._handler_failed(topic, err)

    def _handler_failed(self, topic: str, err: Exception) -> None:
        log.error("handler of %s raised", topic, exc_info=err)
        self.handler_errors += 1
        # Short (its message may quote a whole payload) and valid UTF-8, so that an alarm can store it.
        detail = f"{type(err).__name__}: {err}"[:300].encode("utf-8", "backslashreplace").decode()
        self.on_handler_error(topic, detail)

    def _spawn_command(self, client: aiomqtt.Client, topic: str, payload: bytes, message: aiomqtt.Message) -> None:
        props = message.properties
        response = getattr(props, "ResponseTopic", None) if props is not None else None
        correlation = getattr(props, "CorrelationData", None) if props is not None else None
        command = Command(topic.rsplit("/", 1)[1], payload, bool(message.retain), response or None,
                          bytes(correlation) if correlation else None)
        self.received += 1

        async def answer() -> None:
            assert self.commands is not None
            try:
                reply = await self.commands(command)
            except Exception as err:  # a bug in a command: the link (and the lane) stay up
                self._handler_failed(topic, err)
                return
            if reply is not None:
                await self.send(Live(reply.topic, reply.payload, retain=False, correlation=command.correlation))

        task = asyncio.get_running_loop().create_task(answer())  # a model load takes seconds: not in the loop
        self._commands_running.add(task)
        task.add_done_callback(self._commands_running.discard)

    async def _drain_forever(self, client: aiomqtt.Client) -> None:
        """Keep up to BATCH outbox messages in flight, in order, topping up as acknowledgements come
        (no pause at a batch's end); delete what the broker acknowledged.

        Stored messages go straight to paho's publish(), and their PUBACKs come back through paho's
        on_publish callback (aiomqtt drives paho's socket from this loop, so the callback runs here):
        no task, event and timeout per message, as aiomqtt's own publish() has, which cost two thirds
        of the drain's time. aiomqtt (pinned below 3) keeps its paho client in `_client`; a PUBACK
        that is not ours goes on to aiomqtt's callback. A PUBACK that refuses the message (MQTT 5
        reason code >= 0x80, such as an ACL's 'Not authorized') leaves it in the outbox and ends
        the connection, naming the topic and the reason: nothing stored is dropped on a refusal.
        """
        paho: mqtt.Client = client._client
        aiomqtt_on_publish = cast(Callable[..., None], paho.on_publish)  # set by aiomqtt's Client
        inflight: dict[int, int] = {}  # paho's mid -> outbox seq
        acked: list[int] = []
        refused: list[str] = []

        def on_publish(c: mqtt.Client, userdata: object, mid: int, reason: ReasonCode,
                       properties: Properties | None) -> None:
            seq = inflight.pop(mid, None)
            if seq is None:
                aiomqtt_on_publish(c, userdata, mid, reason, properties)
            elif reason.is_failure:
                refused.append(f"outbox message {seq} refused by the broker: {reason}")
            else:
                acked.append(seq)
            self._wake.set()

        paho.on_publish = on_publish
        queued = 0  # the last seq handed to paho on this connection
        try:
            while True:
                self._wake.clear()
                if len(acked) >= BATCH or (acked and not inflight):  # one transaction a window, not a PUBACK
                    self._forget(acked)
                if refused:
                    raise aiomqtt.MqttError(refused[0])
                if len(inflight) < BATCH // 2:
                    for msg in self.store.outbox_batch(BATCH - len(inflight), after_seq=queued):
                        inflight[self._publish_stored(paho, msg)] = msg.seq
                        queued = msg.seq
                try:  # woken by a PUBACK or by new rows; and now and then regardless (a row another path wrote)
                    async with asyncio.timeout(1.0):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            paho.on_publish = aiomqtt_on_publish
            self._forget(acked)  # what the broker has, even if the connection ends now: not sent again

    def _forget(self, acked: list[int]) -> None:
        """Delete the acknowledged messages from the outbox, in one transaction; empties `acked`."""
        if not acked:
            return

        def delete(store: Store, done: list[int] = acked[:]) -> None:
            store.outbox_delete(done)

        self.writer.submit(delete)
        self.published += len(acked)
        acked.clear()

    def _publish_stored(self, paho: mqtt.Client, msg: OutboxMessage) -> int:
        """Hand one stored message to paho; its mid. seq is taken as paho queues it, so seq order is wire order."""
        self._seq += 1
        historical = msg.created_at < self._connected_at
        info = paho.publish(msg.topic, stamp(msg.payload, self.session, self._seq, historical), qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, f"could not publish outbox message {msg.seq}")
        return info.mid
