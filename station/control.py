"""The operator's local control channel: `station lane start|stop|reset|status` and
`station model load|rollback|status` talk to the daemon.

A Unix socket in the data directory (owner-only permissions), one JSON line each way:
``{"action": "start"}``, ``{"action": "model-load", "path": "/abs/dir"}``. Every command is recorded
in the alarms table as an audit line. This is the lane's way back after an E-stop until the web
console exists.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

from station.lane import messages as m
from station.lane.runtime import LaneRuntime
from station.model_swap import ModelSwitch

log = logging.getLogger(__name__)

ACTIONS = ("start", "stop", "reset")
MODEL_ACTIONS = ("model-status", "model-load", "model-rollback")


def socket_path(data_dir: Path) -> Path:
    return data_dir / "control.sock"


class ControlServer:
    """Async context manager serving the control socket for one runtime."""

    def __init__(self, runtime: LaneRuntime, models: ModelSwitch, path: Path) -> None:
        self.runtime = runtime
        self.models = models
        self.path = path
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ControlServer:
        self.path.unlink(missing_ok=True)  # a socket left by a crashed daemon
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o600)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.path.unlink(missing_ok=True)

    def status(self) -> dict[str, object]:
        core = self.runtime.core
        unseen = sum(z.length_mm for z in core.blind if z.length_mm != float("inf"))
        return {"state": core.state.value, "fault": core.fault, "plc_up": core.plc_up,
                "tracked": len(core.tracks), "items_stored": self.runtime.items_stored,
                "manual_only": core.manual_only,
                # belt that passed the entry eye unseen and has not yet passed the gate: held at INSPECT
                "unseen_belt_mm": round(unseen), "store_pending": self.runtime.writer.pending}

    async def handle(self, request: dict[str, object]) -> dict[str, object]:
        action = str(request.get("action"))
        if action == "status":
            return {"ok": True, **self.status()}
        if action == "model-status":
            return {"ok": True, **self.models.status()}
        if action in MODEL_ACTIONS:
            path = request.get("path")
            if action == "model-load" and not isinstance(path, str):
                return {"ok": False, "error": "model-load needs a \"path\""}
            self._audit(f"{action}{f' {path}' if path else ''} (control socket)")
            return await (self.models.load(Path(str(path))) if action == "model-load" else self.models.rollback())
        if action not in ACTIONS:
            return {"ok": False, "error": f"unknown action {action!r}; expected status, {', '.join(ACTIONS + MODEL_ACTIONS)}"}
        before = dict(self.runtime.alarms)
        self.runtime.dispatch(m.Operator(time.monotonic(), action))  # type: ignore[arg-type]
        self._audit(f"{action} (control socket)")
        refused = {k: v for k, v in self.runtime.alarms.items() if v != before.get(k) and k.endswith("_REFUSED")}
        return {"ok": not refused, **({"refused": sorted(refused)} if refused else {}), **self.status()}

    def _audit(self, what: str) -> None:
        self.runtime.writer.submit(lambda store: store.add_alarm("OPERATOR", what))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                line = await reader.readline()
            try:
                request = json.loads(line)
                if not isinstance(request, dict) or "action" not in request:
                    raise ValueError
            except ValueError:
                reply: dict[str, object] = {"ok": False, "error": "expected one JSON line: {\"action\": ...}"}
            else:
                if request["action"] not in ("status", "model-status"):
                    log.info("operator: %s", request)
                reply = await self.handle(request)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a client that says nothing or hangs up gets nothing
        finally:
            writer.close()


async def send(socket: Path, action: str, timeout: float = 5.0, **fields: str) -> dict[str, object]:
    """One command to a running daemon. ConnectionError when none is listening there."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_unix_connection(str(socket))
        try:
            writer.write(json.dumps({"action": action, **fields}).encode() + b"\n")
            await writer.drain()
            reply = json.loads(await reader.readline())
        finally:
            writer.close()
    return dict(reply)
