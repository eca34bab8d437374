"""The operator's local control channel: `station lane …`, `station alarm …`, `station model …` and
`station diag plc write` reach the running daemon here.

A Unix socket in the data directory (owner-only permissions), one JSON line each way:
``{"action": "start"}``, ``{"action": "alarm-clear", "code": "SCANNER_DOWN"}``. Who asked is the OS user
the kernel names for the connecting process (SO_PEERCRED), not what the request claims; every action
that changes something is audited with that user in the store's `audit` table. `status` answers with
the lane's current `LaneStatus` snapshot (station/lane/status.py) and the answering daemon's
`software_version` (station/version.py: after an upgrade that was not yet restarted, it differs from the
CLI's own `station --version`).

The socket belongs to the process holding the data folder's lock (station/lock.py): a second daemon
never gets this far, so it never removes the first one's socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

from drivers.plc import PlcError
from station.lane.core import LaneState
from station.lane.runtime import LaneRuntime
from station.model_swap import ModelSwitch
from station.version import VERSION

log = logging.getLogger(__name__)

LANE_ACTIONS = ("start", "stop", "reset", "maintenance")
MODEL_ACTIONS = ("model-status", "model-load", "model-rollback")
ALARM_ACTIONS = ("alarm-ack", "alarm-clear")
ACTIONS = ("status", *LANE_ACTIONS, *ALARM_ACTIONS, *MODEL_ACTIONS, "plc-write", "scanner-selftest", "ead-imported")
GOODS_OUTPUTS = ("gate_clear", "gate_clear_until_mm", "belt_run", "belt_speed_sp")  # a write here moves mail


def socket_path(data_dir: Path) -> Path:
    return data_dir / "control.sock"


def peer_user(sock: socket.socket | None) -> str:
    """The OS user of the process at the other end of a Unix socket."""
    if sock is None:
        return "unknown"
    try:
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    except OSError:
        return "unknown"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def os_user() -> str:
    """This process's OS user, as the audit names it."""
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return f"uid {os.getuid()}"


class ControlServer:
    """Async context manager serving the control socket for one runtime."""

    def __init__(self, runtime: LaneRuntime, models: ModelSwitch, path: Path,
                 selftest: Callable[[], Awaitable[dict[str, str]]] | None = None) -> None:
        self.runtime = runtime
        self.models = models
        self.path = path
        self.selftest = selftest  # the scanner's SELFTEST command, through the running station's driver
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> ControlServer:
        self.path.unlink(missing_ok=True)  # a socket left by a crashed daemon (we hold the data folder's lock)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o600)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self.path.unlink(missing_ok=True)

    def status(self) -> dict[str, object]:
        return {**self.runtime.publish_status().as_dict(), "software_version": VERSION}

    async def handle(self, request: dict[str, object], who: str) -> dict[str, object]:
        action = str(request.get("action"))
        if action == "status":
            return {"ok": True, **self.status()}
        if action == "model-status":
            return {"ok": True, **self.models.status()}
        if action in MODEL_ACTIONS:
            path = request.get("path")
            if action == "model-load" and not isinstance(path, str):
                return {"ok": False, "error": "model-load needs a \"path\""}
            self.runtime.audit(who, f"{action}{f' {path}' if path else ''}")
            return await (self.models.load(Path(str(path))) if action == "model-load" else self.models.rollback())
        if action in ALARM_ACTIONS:
            code = request.get("code")
            if not isinstance(code, str):
                return {"ok": False, "error": f"{action} needs a \"code\""}
            error = (self.runtime.ack_alarm if action == "alarm-ack" else self.runtime.clear_alarm)(code, who)
            return {"ok": error is None, **({"error": error} if error else {}), **self.status()}
        if action == "plc-write":
            return await self._plc_write(request, who)
        if action == "scanner-selftest":
            return await self._selftest(who)
        if action == "ead-imported":
            since = request.get("since")
            if not isinstance(since, (int, float)):
                return {"ok": False, "error": "ead-imported needs \"since\" (Unix seconds)"}
            self.runtime.audit(who, f"ead import {request.get('file', '')}".rstrip())
            return {"ok": True, **await self.runtime.declarations_imported(float(since))}
        if action not in LANE_ACTIONS:
            return {"ok": False, "error": f"unknown action {action!r}; expected {', '.join(ACTIONS)}"}
        refused = self.runtime.operator(action, who)
        return {"ok": not refused, **({"refused": refused} if refused else {}), **self.status()}

    async def _plc_write(self, request: dict[str, object], who: str) -> dict[str, object]:
        """A technician's write to a PLC output through the running station (`station diag plc write`)."""
        name, value = request.get("name"), request.get("value")
        if not isinstance(name, str) or not isinstance(value, (bool, int, float)):
            return {"ok": False, "error": "plc-write needs a \"name\" and a \"value\" (a number or true/false)"}
        state = self.runtime.core.state
        if name in GOODS_OUTPUTS and state is not LaneState.MAINTENANCE:
            why = (f"{name} moves goods: refused while the lane is {state.value}; "
                   "put it in maintenance first (`station lane maintenance`: belt stopped, every item INSPECT)")
            self.runtime.audit(who, f"diag plc write {name}={value} refused: lane {state.value}")
            return {"ok": False, "error": why}
        self.runtime.audit(who, f"diag plc write {name}={value} (lane {state.value})")
        try:
            await self.runtime.plc.write(name, value)
        except PlcError as err:
            return {"ok": False, "error": f"{name}={value}: {err}"}
        try:
            back = None if self.runtime.plc.profile.by_name(name).pulse else await self.runtime.plc.read(name)
        except PlcError as err:
            return {"ok": False, "error": f"wrote {name}={value} but could not read it back: {err}"}
        return {"ok": True, "written": {name: value}, "read_back": back}

    async def _selftest(self, who: str) -> dict[str, object]:
        """The scanner's self-test: it cannot scan meanwhile, so only on a lane whose belt is not running."""
        state = self.runtime.core.state
        if self.selftest is None:
            return {"ok": False, "error": "this station has no scanner self-test"}
        if state is LaneState.RUNNING:
            self.runtime.audit(who, "scanner self-test refused: lane RUNNING")
            return {"ok": False, "error": "the scanner cannot self-test while the belt runs: stop the lane first"}
        self.runtime.audit(who, f"scanner self-test (lane {state.value})")
        try:
            fields = await self.selftest()
        except Exception as err:  # the driver's errors (timeout, rejected, no link) all say what happened
            return {"ok": False, "error": f"self-test: {err}"}
        passed = fields.get("result") == "pass"
        return {"ok": passed, "result": fields, **({} if passed else {"error": f"self-test result: {fields}"})}

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
                who = peer_user(writer.get_extra_info("socket"))
                if request["action"] not in ("status", "model-status"):
                    log.info("control: %s by %s", request, who)
                reply = await self.handle(request, who)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a client that says nothing or hangs up gets nothing
        finally:
            writer.close()


async def send(socket: Path, action: str, timeout: float = 5.0, **fields: object) -> dict[str, object]:
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
