"""A station on its simulated lane in a process of its own, and central's side of the broker: what an
auditor runs to kill either at any moment."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt

from station.config import MqttSection
from station.mqtt_link import CentralLink, Live, Topics
from station.store import Store
from station.writer import StoreWriter
from tests.conftest import Broker, free_port, terminate


@dataclass
class LaneProcess:
    folder: Path
    broker: Broker
    site: str = "SITE-1"
    lane: str = "lane-1"
    mqtt: dict[str, object] = field(default_factory=dict)
    simulator: dict[str, object] = field(default_factory=dict)
    web: bool = True  # serve the console (on a free port)
    process: subprocess.Popen[str] | None = None
    runs: int = 0

    @property
    def data_dir(self) -> Path:
        return self.folder / "var"

    @property
    def log(self) -> Path:
        return self.folder / f"station-{self.runs}.log"

    def write_config(self) -> Path:
        mqtt = {"host": self.broker.host, "port": self.broker.port, "keepalive_s": 5, **self.mqtt}
        sim = {"item_rate_per_s": 2.0, "threat_share": 0.3, "seed": 5, **self.simulator}
        config = self.folder / "station.toml"
        config.write_text(
            f'[station]\nsite = "{self.site}"\nlane = "{self.lane}"\n'
            f'[storage]\ndata_dir = "{self.data_dir}"\n'
            + (f"[web]\nport = {free_port()}\n" if self.web else "[web]\nenabled = false\n")
            + "[mqtt]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in mqtt.items() if not isinstance(v, dict))
            + "".join(f"[mqtt.{k}]\n" + "".join(f"{n} = {json.dumps(x)}\n" for n, x in v.items())
                      for k, v in mqtt.items() if isinstance(v, dict))
            + "[simulator]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in sim.items()))
        return config

    def start(self, timeout: float = 60) -> None:
        """Start it, and return once its link to central is up (its log says so)."""
        self.launch()
        self.wait_up(timeout)

    def launch(self) -> None:
        self.runs += 1
        config = self.write_config()
        with self.log.open("w") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "station.cli", "--log-level", "info", "run", "--simulate", "--config",
                 str(config)], stdout=subprocess.DEVNULL, stderr=sink, text=True)

    def wait_up(self, timeout: float = 60) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(r"MQTT link up: .*, session \d+", self.log.read_text()):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"the station ended at once:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        self.process.kill()
        raise RuntimeError(f"the station's link did not come up in {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP: a hung box, whose socket stays open and says nothing (unlike a kill, which closes it)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> int:
        """SIGTERM, as systemd stops it; the exit code."""
        return 0 if self.process is None else terminate(self.process, timeout=60)


class StandInPresence:
    """What a lane says of itself, as the link asks for it: a stand-in for station/presence.py where
    the link's own contract is under test, valid for the schemas all the same."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics

    def head(self, schema: str) -> dict[str, object]:
        return {"schema": schema, "site": self.topics.site, "lane": self.topics.lane,
                "time": "2026-12-04T10:00:00+00:00"}

    def status(self, state: str) -> dict[str, object]:
        return {**self.head("screening/v1/status"), "state": state, "software_version": "test", "model_hash": None,
                "rules_version": "default-4", "config_hash": "0" * 64}

    def birth(self) -> list[Live]:
        return [Live(self.topics.birth, {**self.head("screening/v1/birth"), "software_version": "test",
                                         "devices": ["plc"], "classes": [], "threat_classes": [], "commands": [],
                                         "schemas": {}}),
                Live(self.topics.state("plc"), {**self.head("screening/v1/device-state"), "device": "plc",
                                                "state": "up", "detail": ""})]


@asynccontextmanager
async def running_link(path: Path, config: MqttSection, client_id: str, topics: Topics) -> AsyncIterator[CentralLink]:
    """A lane's link to central on the store at `path`, running as the daemon runs it (a stand-in presence)."""
    with Store(path) as store:
        async with StoreWriter(path) as writer:
            link = CentralLink(store, writer, config, client_id, topics=topics, presence=StandInPresence(topics))
            task = asyncio.create_task(link.run())
            try:
                yield link
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


@dataclass
class Heard:
    topic: str
    payload: dict[str, object]
    retained: bool
    at: float  # time.monotonic() it arrived


class Central:
    """Central's persistent QoS 1 session on a lane tree (or a whole site), as a background task."""

    def __init__(self, broker: Broker, topic: str = "screening/v1/#", name: str = "central",
                 protocol: aiomqtt.ProtocolVersion = aiomqtt.ProtocolVersion.V311) -> None:
        self.broker, self.topic, self.name, self.protocol = broker, topic, name, protocol
        self.heard: list[Heard] = []
        self.broken: list[str] = []  # messages that broke the contract: every wait fails on the first
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def __aenter__(self) -> Central:
        self._task = asyncio.create_task(self._listen())
        async with asyncio.timeout(10):
            await self.subscribed.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _listen(self) -> None:
        from station.contract import schema_for_topic
        from tests.contract_check import validated

        async with aiomqtt.Client(self.broker.host, self.broker.port, identifier=self.name, clean_session=False,
                                  protocol=self.protocol) as client:
            await client.subscribe(self.topic, qos=1)
            self.subscribed.set()
            async for message in client.messages:
                if not message.payload or schema_for_topic(str(message.topic)) == "screening/v1/command":
                    continue  # a retained message being cleared; central's own commands
                try:
                    payload = validated(str(message.topic), bytes(message.payload))  # type: ignore[arg-type]
                except AssertionError as err:
                    self.broken.append(str(err))
                    continue
                self.heard.append(Heard(str(message.topic), payload, bool(message.retain), time.monotonic()))

    def on(self, suffix: str) -> list[Heard]:
        return [h for h in self.heard if h.topic.endswith("/" + suffix)]

    async def until(self, test: object, what: str, timeout: float = 30) -> Heard:
        try:
            async with asyncio.timeout(timeout):
                while True:
                    assert not self.broken, self.broken[0]
                    found = next((h for h in self.heard if test(h)), None)  # type: ignore[operator]
                    if found is not None:
                        return found
                    await asyncio.sleep(0.02)
        except TimeoutError as err:
            topics = sorted({h.topic for h in self.heard})
            raise AssertionError(f"no {what} within {timeout} s; heard {len(self.heard)} on {topics}") from err

    def status(self, state: str, session: int) -> object:
        return lambda h: h.topic.endswith("/status") and h.payload["state"] == state and h.payload["session"] == session
