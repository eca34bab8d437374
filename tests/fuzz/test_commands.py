"""Commands: a message on `screening/v1/{site}/{lane}/cmd/{name}`, as the central link hands it over
(`station.mqtt_link.Command`: the name from the topic, the payload, the retain flag, MQTT 5's response topic
and correlation data), through `station.commands.CommandDesk.__call__`.

The desk needs a lane: here it is the smallest one that does what the runtime does with a command's words,
writing the audit row, the alarm and the command's row to a real Store (the writer thread is inline), and
recording what it was asked to do. The contract (station/commands.py): every command gets a reply valid
against `screening/v1/command-reply`, on a topic under the lane's root; it is carried out only when every
check passes; each one is one audit row; nothing a stranger sends ends the desk.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from station import contract
from station.commands import REPLY_SCHEMA, CommandDesk
from station.config import COMMANDS, parse_config
from station.lane.core import LaneState
from station.mqtt_link import Command, Topics
from station.store import Store
from tests.fuzz.harness import budget, fuzzes, mutated
from tests.station.test_customs import json_values

INPUT = "commands"

TOPICS = Topics("SITE-1", "lane-1")
ALLOWED = {"ops": list(COMMANDS), "intern": ["rebirth"]}


class Core:
    def __init__(self) -> None:
        self.state = LaneState.RUNNING

    def why_not_running(self) -> str | None:
        return None if self.state is LaneState.RUNNING else "stopped by central"


class Lane:
    """What CommandDesk reaches of the runtime, doing with the store what LaneRuntime does."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.core = Core()
        self.writer = self
        self.done: list[str] = []

    def submit(self, job: Callable[[Store], Any]) -> None:
        job(self.store)  # the writer's thread, inline: a job that fails here fails the example

    def audit(self, who: str, action: str) -> None:
        self.store.add_audit(who, action)

    def dispatch_alarm(self, code: str, detail: str) -> None:
        self.store.add_alarm(code, detail, 1.0)

    def operator(self, action: str, by: str) -> list[str]:
        self.done.append(action)
        self.core.state = LaneState.RUNNING if action == "start" else LaneState.STOPPED
        return []

    def use_rules(self, decide: object, version: str) -> None:
        self.done.append("rules")


class Models:
    def __init__(self, lane: Lane) -> None:
        self.lane = lane

    async def load(self, path: Path) -> dict[str, object]:
        self.lane.done.append("model")
        return {"ok": True, "model": {"path": path}}


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CommandDesk, Lane]]:
    with Store(tmp_path_factory.mktemp("commands") / "station.db") as store:
        lane = Lane(store)

        async def rebirth() -> None:
            lane.done.append("rebirth")
        config = parse_config({"mqtt": {"commands": ALLOWED}})
        made = CommandDesk(cast(Any, lane), cast(Any, Models(lane)), config, TOPICS, store, rebirth)
        yield made, lane


def request(ttl_s: float, **fields: object) -> dict[str, object]:
    return {"cmd_id": uuid.uuid4().hex, "issued_by": "ops",
            "expires_at": (datetime.now(UTC) + timedelta(seconds=ttl_s)).isoformat(), **fields}


@st.composite
def near_valid(draw: st.DrawFn) -> dict[str, object]:
    """A command as central sends one, with each field kept, dropped or replaced by something else."""
    fields = request(draw(st.sampled_from([-10, 60, 299, 301, 10**6])))
    optional = {"args": st.sampled_from([{}, {"path": "/models/none"}, {"path": 7}, {"path": "\ud800"}, []]),
                "reply_to": st.sampled_from([f"{TOPICS.root}/cmd/reply/central", "elsewhere/x", f"{TOPICS.root}/+"]),
                "correlation": st.text(max_size=20)}
    for key, values in optional.items():
        if draw(st.booleans()):
            fields[key] = draw(values)
    fields["issued_by"] = draw(st.sampled_from(["ops", "intern", "nobody", "", "o" * 101, "\ud800", "ops\x00"]))
    for key in draw(st.lists(st.sampled_from(sorted(fields)), max_size=2, unique=True)):
        if draw(st.booleans()):
            del fields[key]
        else:
            fields[key] = draw(json_values)
    return fields


valid = st.builds(lambda args: json.dumps(request(60, args=args)).encode(), st.sampled_from([{}, {"path": "/m"}]))
payloads = st.one_of(
    valid, valid,
    st.binary(max_size=200),
    near_valid().map(lambda v: json.dumps(v).encode()),
    near_valid().flatmap(lambda v: mutated(json.dumps(v).encode(), most=3)),
    st.builds(lambda cid: json.dumps(request(60, cmd_id=cid)).encode(), st.sampled_from(["\ud800", "a\udfffb"])),
)
names = st.sampled_from(COMMANDS) | st.sampled_from(COMMANDS) | st.text(min_size=1, max_size=12).filter(
    lambda t: "/" not in t and "+" not in t and "#" not in t)  # a topic level: no separator, no wildcard
commands = st.builds(Command, names, payloads, st.sampled_from([False, False, True]),
    st.none() | st.sampled_from([f"{TOPICS.root}/cmd/reply/x", "other/root", f"{TOPICS.root}/#"]),
    st.none() | st.binary(max_size=16))


def audit_rows(store: Store) -> int:
    return int(store.db.execute("SELECT count(*) FROM audit").fetchone()[0])


@budget(300)
@given(commands)
@example(Command("pause", json.dumps(request(60, cmd_id="\ud800")).encode(), False, None, None))  # finding 8
@example(Command("pause", json.dumps(request(60, issued_by="\udfff")).encode(), False, None, None))
@example(Command("reply", b"{}", False, None, b"\xff\xfe"))
@fuzzes(INPUT)
def test_every_command_gets_a_valid_reply_and_one_audit_row_and_is_done_only_if_allowed(
        desk: tuple[CommandDesk, Lane], command: Command) -> None:
    handler, lane = desk
    lane.core.state = LaneState.RUNNING if command.name != "resume" else LaneState.STOPPED
    lane.done.clear()
    before = audit_rows(lane.store)
    reply = asyncio.run(handler(command))
    payload = dict(reply.payload)
    assert contract.problems(REPLY_SCHEMA, {**payload, "msg_id": "m", "session": 1, "seq": 1,
                                            "historical": False}) == []
    assert reply.topic.startswith(TOPICS.root + "/") and "+" not in reply.topic and "#" not in reply.topic
    json.dumps(payload).encode("utf-8")  # what goes on the wire
    assert audit_rows(lane.store) == before + 1
    assert lane.store.verify_audit()[1] is None
    event("accepted" if payload["accepted"] else "refused")
    if payload["accepted"]:
        request_ = contract.parse("screening/v1/command", command.payload)
        assert not command.retained and command.name in COMMANDS
        assert command.name in ALLOWED[str(request_["issued_by"])]
        assert lane.done, "accepted, but nothing was done"
        assert lane.store.db.execute("SELECT outcome FROM commands WHERE cmd_id = ?",
                                     (request_["cmd_id"],)).fetchone()[0] == "accepted"
    elif command.name != "model-load":  # a model load that failed has been tried
        assert lane.done == []
