"""What the lane says about itself to central: `status`, `birth` and `state/{device}`, all retained.

Built from the lane's status snapshot (station/lane/status.py) and what the station is (software,
model, rules, configuration); published by the central link at each connect (the birth) and, while
connected, whenever a device's or the lane's state changes. The link adds msg_id, session, seq and
historical.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

from station.config import Config
from station.contract import iso_time
from station.lane.status import DEVICES, LaneStatus, StatusBoard
from station.mqtt_link import CentralLink, Live, Topics
from station.version import VERSION

# The messages this lane sends, by name, and the schema each follows (station/schemas/, docs/asyncapi.yaml).
MESSAGE_SCHEMAS = {
    "status": "screening/v1/status", "birth": "screening/v1/birth", "state": "screening/v1/device-state",
    "alarms": "screening/v1/alarm", "items/result": "screening/v1/item-result",
    "items/alert": "screening/v1/item-alert", "items/verdict": "screening/v1/item-verdict",
    "ead/quality": "screening/v1/ead-quality", "cmd/reply": "screening/v1/command-reply",
    "customs/screening_result": "customs/v1/screening-result",
}


def config_hash(config: Config) -> str:
    """SHA-256 of the effective configuration (secrets left out), so central can tell two lanes' apart."""
    data = config.model_dump(mode="json", exclude={"mqtt": {"password"}})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    """What does not change while the station runs (the model and the rules can: they are asked for)."""

    topics: Topics
    config_hash: str
    commands: tuple[str, ...]  # the commands some issuer may send
    schemas: dict[str, str]  # message name -> schema id


class LanePresence:
    def __init__(self, identity: Identity, board: StatusBoard, *, model_hash: Callable[[], str | None],
                 rules_version: Callable[[], str], classes: Callable[[], tuple[tuple[str, ...], tuple[str, ...]]]):
        self.identity = identity
        self.board = board
        self.model_hash = model_hash
        self.rules_version = rules_version
        self.classes = classes  # (all classes, threat classes) of the loaded model
        self._sent: dict[str, tuple[str, str]] = {}  # device -> (state, detail) last published this session

    def _head(self, schema: str) -> dict[str, object]:
        topics = self.identity.topics
        return {"schema": schema, "site": topics.site, "lane": topics.lane, "time": _now()}

    def status(self, state: str) -> dict[str, object]:
        return {**self._head("screening/v1/status"), "state": state, "software_version": VERSION,
                "model_hash": self.model_hash(), "rules_version": self.rules_version(),
                "config_hash": self.identity.config_hash}

    def birth(self) -> list[Live]:
        classes, threats = self.classes()
        birth = {**self._head("screening/v1/birth"), "software_version": VERSION,
                 "devices": ["lane", *DEVICES], "classes": list(classes), "threat_classes": list(threats),
                 "commands": list(self.identity.commands), "schemas": self.identity.schemas}
        self._sent = dict(self._states(self.board.current))
        return [Live(self.identity.topics.birth, birth),
                *(self._state_message(device, state, detail) for device, (state, detail) in self._sent.items())]

    def changed(self, status: LaneStatus) -> list[Live]:
        """The state messages of what changed since the last published (the caller publishes them)."""
        messages = []
        for device, now in self._states(status).items():
            if self._sent.get(device) != now:
                self._sent[device] = now
                messages.append(self._state_message(device, *now))
        return messages

    async def watch(self, link: CentralLink) -> None:
        """Publish each change of state while the link is up (the next birth says it otherwise)."""
        seq = 0
        while True:
            status = await self.board.newer_than(seq)
            seq = status.seq
            if not link.online:
                continue
            for message in self.changed(status):
                if not await link.send(message):
                    self._sent.pop(message.topic.rsplit("/", 1)[1], None)  # say it again next time

    def _states(self, status: LaneStatus | None) -> dict[str, tuple[str, str]]:
        if status is None:
            return {}
        states = {"lane": (status.state, status.reason or "")}
        states.update({d.device: (d.state, d.detail) for d in status.devices})
        return states

    def _state_message(self, device: str, state: str, detail: str) -> Live:
        return Live(self.identity.topics.state(device),
                    {**self._head("screening/v1/device-state"), "device": device, "state": state, "detail": detail})


def _now() -> str:
    return iso_time()
