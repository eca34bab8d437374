"""Commands from central on `screening/v1/{site}/{lane}/cmd/{name}`, each answered with a reply.

A command is carried out only if every check passes, in this order, and otherwise refused with the
reason in its reply:
1. it did not come from a retained message (the link never receives one queued while it was away);
2. its payload is a `screening/v1/command` (cmd_id, issued_by, expires_at, args);
3. it has not expired, and does not claim to stay valid longer than `[mqtt] command_max_ttl_s`;
4. its cmd_id was never seen (kept in the store, so a replay after a restart is refused too);
5. `[mqtt.commands]` allows this issuer this command;
6. the lane's state allows it (pause a running lane, resume a stopped one).
Every command, carried out or refused, is one row of the audit chain, as `central:{issued_by}`.

Who issued it is what the payload says: the broker's ACL is what lets only central's account publish
on `cmd/` (docs/central-security.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

from station.config import COMMANDS, Config, ConfigError
from station.contract import ContractError, parse
from station.lane.core import LaneState
from station.lane.runtime import LaneRuntime
from station.model_swap import ModelSwitch
from station.mqtt_link import Command, Reply, Topics
from station.rules import load_ruleset
from station.store import Store

log = logging.getLogger(__name__)

SCHEMA = "screening/v1/command"
REPLY_SCHEMA = "screening/v1/command-reply"


class CommandDesk:
    def __init__(self, runtime: LaneRuntime, models: ModelSwitch, config: Config, topics: Topics, store: Store,
                 rebirth: Callable[[], Awaitable[None]]) -> None:
        self.runtime = runtime
        self.models = models
        self.config = config
        self.topics = topics
        self.rebirth = rebirth
        self.seen = store.command_ids(unexpired_at=time.time())  # cmd_ids that would still be valid
        self.allowed = {issuer: set(names) for issuer, names in config.mqtt.commands.items()}

    @property
    def accepted_names(self) -> tuple[str, ...]:
        """The commands some issuer may send (the birth lists them)."""
        return tuple(name for name in COMMANDS if any(name in names for names in self.allowed.values()))

    async def __call__(self, command: Command) -> Reply:
        try:
            request = parse(SCHEMA, command.payload)
        except ContractError as err:
            self.runtime.dispatch_alarm("COMMAND_REJECTED", f"cmd/{command.name}: {err}")
            self.runtime.audit("central:?", f"command {command.name} refused: {err}"[:500])
            return self._reply(command, None, None, accepted=False, reason=f"not a command: {err}")
        cmd_id, issuer = str(request["cmd_id"]), str(request["issued_by"])
        expires_at = datetime.fromisoformat(str(request["expires_at"])).timestamp()
        reason = self._refusal(command, cmd_id, issuer, expires_at)
        if reason is None:
            self.seen.add(cmd_id)
            try:
                result, reason = await self._carry_out(command.name, request.get("args") or {}, f"central:{issuer}")
            except Exception as err:  # the command failed: say so to central; the lane stays up
                log.exception("command %s %s failed", command.name, cmd_id)
                result, reason = None, f"failed: {type(err).__name__}: {err}"
        else:
            result = None
        outcome = "accepted" if reason is None else f"refused: {reason}"
        if reason != "replayed: this cmd_id was already received":  # the first one's row stays
            self.runtime.writer.submit(lambda s: s.add_command(cmd_id, command.name, issuer, expires_at, outcome))
        self.runtime.audit(f"central:{issuer}", f"command {command.name} {cmd_id}: {outcome}"[:500])
        log.info("command %s %s from %s: %s", command.name, cmd_id, issuer, outcome)
        return self._reply(command, cmd_id, request, accepted=reason is None, reason=reason, result=result)

    def _refusal(self, command: Command, cmd_id: str, issuer: str, expires_at: float) -> str | None:
        now = time.time()
        if command.retained:
            return "a retained command is never carried out"
        if command.name not in COMMANDS:
            return f"unknown command {command.name!r}; this lane knows {', '.join(COMMANDS)}"
        if expires_at < now:
            return f"expired {now - expires_at:.0f} s ago"
        if expires_at > now + self.config.mqtt.command_max_ttl_s:
            return f"expires_at is more than {self.config.mqtt.command_max_ttl_s:.0f} s ahead"
        if cmd_id in self.seen:
            return "replayed: this cmd_id was already received"
        if command.name not in self.allowed.get(issuer, ()):
            return f"{issuer!r} may not send {command.name} to this lane ([mqtt.commands])"
        state = self.runtime.core.state
        if command.name == "pause" and state is not LaneState.RUNNING:
            return f"the lane is {state.value}: nothing to pause"
        if command.name == "resume" and state is LaneState.RUNNING:
            return "the lane is already RUNNING"
        return None

    async def _carry_out(self, name: str, args: dict[str, object], who: str) -> tuple[dict[str, object] | None,
                                                                                       str | None]:
        """(result, None) once done, or (None, why not)."""
        if name in ("pause", "resume"):
            refused = self.runtime.operator("stop" if name == "pause" else "start", who)
            if refused:
                return None, f"the lane refused: {', '.join(refused)} ({self.runtime.core.why_not_running()})"
            return {"lane": self.runtime.core.state.value}, None
        if name == "rebirth":
            await self.rebirth()
            return {}, None
        if name == "model-load":
            path = args.get("path")
            if not isinstance(path, str):
                return None, "model-load needs args.path (the model's folder on this lane)"
            answer = await self.models.load(Path(path))
            return (answer, None) if answer.get("ok") else (None, str(answer.get("error", answer)))
        try:  # rules-reload: the configured files, read again
            ruleset = await asyncio.to_thread(load_ruleset, self.config)
        except ConfigError as err:
            return None, f"rules not reloaded: {err}"
        self.runtime.use_rules(ruleset.decide, ruleset.version)
        return {"rules_version": ruleset.version}, None

    def _reply(self, command: Command, cmd_id: str | None, request: dict[str, object] | None, *, accepted: bool,
               reason: str | None = None, result: dict[str, object] | None = None) -> Reply:
        correlation = command.correlation.decode("utf-8", "replace") if command.correlation else None
        if request is not None and correlation is None and isinstance(request.get("correlation"), str):
            correlation = str(request["correlation"])
        payload: dict[str, object] = {
            "schema": REPLY_SCHEMA, "site": self.topics.site, "lane": self.topics.lane, "cmd_id": cmd_id,
            "command": command.name, "correlation": correlation, "accepted": accepted,
            **({"reason": reason} if reason else {}), **({"result": _plain(result)} if result is not None else {}),
        }
        return Reply(payload, self._reply_topic(command, request))

    def _reply_topic(self, command: Command, request: dict[str, object] | None) -> str:
        """The MQTT 5 response topic, else the payload's reply_to, but only under this lane's root (the
        ACL lets a lane publish nowhere else), else the lane's own reply topic."""
        wanted = command.response_topic or (str(request["reply_to"]) if request and "reply_to" in request else None)
        if wanted and wanted.startswith(self.topics.root + "/") and "+" not in wanted and "#" not in wanted:
            return wanted
        return self.topics.command_reply


def _plain(value: dict[str, object]) -> dict[str, object]:
    """As JSON has it (a model's status may hold paths or tuples)."""
    return dict(json.loads(json.dumps(value, default=str)))
