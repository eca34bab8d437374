"""The X-ray scanner driver: protocol v1 (docs/scanner-protocol.md) over a SerialPort.

Layers, by composition: SerialPort (bytes, reconnects) -> Decoder (frames) -> this module
(command/reply correlation by seq, the HELLO handshake, typed events, health).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType

from drivers.health import DeviceHealth, HealthState
from drivers.scanner_events import ScannerEvent, parse_event
from drivers.scanner_protocol import MAX_SEQ, PROTOCOL_VERSION, Decoder, Frame, FrameError, encode
from drivers.serial_port import DropOldestQueue, SerialLinkError, SerialPort

RECENT = 50  # frames kept for the technician's tail

log = logging.getLogger(__name__)

class ScannerError(Exception):
    """Base of the scanner driver's errors (link down, handshake failed, ...)."""


class ScannerTimeout(ScannerError):
    """No reply within the timeout."""


class ScannerRejected(ScannerError):
    """The scanner answered ERR."""

    def __init__(self, code: str, text: str, frame: Frame) -> None:
        super().__init__(f"scanner rejected {code}: {text}")
        self.code = code
        self.text = text
        self.frame = frame


@dataclass(frozen=True)
class ScannerStats:
    frames_ok: int
    frame_errors: Mapping[str, int]  # codec kinds + "invalid" (well-formed, violates the protocol)
    events_dropped: int  # event queue overflow (oldest dropped)
    stale_replies: int  # replies to no awaited command (arrived after a timeout)
    unknown_frames: int  # frame types this driver does not know (ignored, per the spec)
    timeouts: int


def _wire(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


class Scanner:
    """The scanner as commands (``command``) and an event stream (``events``).

    Guarantees: a reply is matched to its command by seq, never by arrival order; a command fails
    with ScannerTimeout, ScannerRejected or ScannerError, never hangs past its timeout; HELLO is
    repeated after every reconnect and nothing else is sent before it succeeds; events come out in
    arrival order, at most 1000 queued (oldest dropped and counted).
    """

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = 115200,
        timeout: float = 1.0,
        name: str = "scanner",
        reconnect_backoff: tuple[float, float] = (0.05, 2.0),
        degraded_window: float = 10.0,
        event_queue_size: int = 1000,
    ) -> None:
        self.path = port
        self.timeout = timeout
        self.name = name
        self.identity: Mapping[str, str] = {}  # the HELLO reply's fields: model, serial, fw
        self._port = SerialPort(
            port, baudrate, reconnect_backoff=reconnect_backoff, name=name, on_link=self._on_link
        )
        self._degraded_window = degraded_window
        self._decoder = Decoder()
        self._events: DropOldestQueue[ScannerEvent] = DropOldestQueue(event_queue_size)
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._seq = 0
        self._ready = asyncio.Event()
        self._link_up = asyncio.Event()
        self._handshake_error: str | None = None
        self._last_success: float | None = None
        self._last_error_at = -math.inf
        self._invalid = 0
        self._stale = 0
        self._unknown = 0
        self._timeouts = 0
        self._tasks: list[asyncio.Task[None]] = []
        # The last frames decoded and the noise between them, for a technician: (time.time(), kind, text)
        self.recent: deque[tuple[float, str, str]] = deque(maxlen=RECENT)

    async def __aenter__(self) -> Scanner:
        await self._port.__aenter__()
        self._tasks = [
            asyncio.create_task(self._read_loop(), name=f"{self.name} reader"),
            asyncio.create_task(self._handshake_loop(), name=f"{self.name} handshake"),
        ]
        for task in self._tasks:
            task.add_done_callback(self._task_done)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._tasks:
            task.cancel()
        try:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            self._fail_pending("scanner closed")
            self._events.close()
            await self._port.__aexit__(et, ev, tb)

    @property
    def ready(self) -> bool:
        """True once HELLO succeeded on the current connection."""
        return self._ready.is_set()

    async def command(self, type: str, timeout: float | None = None, **fields: object) -> Frame:
        """Send one command and return its OK reply. bool fields go as 1/0, others via str().

        Waits (within the timeout) for the handshake if the line is up; fails at once if it is down.
        """
        return await self._request(type, {k: _wire(v) for k, v in fields.items()}, timeout, True)

    async def _request(
        self, type: str, fields: Mapping[str, str], timeout: float | None, wait_ready: bool
    ) -> Frame:
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                if wait_ready and not self._ready.is_set():
                    where = f"{self.name} {self.path}"
                    if self._port.health.state is HealthState.DOWN:
                        raise ScannerError(f"{where}: link down: {self._port.health.detail}")
                    if self._handshake_error is not None:
                        raise ScannerError(f"{where}: {self._handshake_error}")
                    await self._ready.wait()
                return await self._exchange(type, fields)
        except TimeoutError as err:
            self._timeouts += 1
            raise ScannerTimeout(
                f"{self.name} {self.path}: no reply to {type} within {limit} s"
            ) from err

    async def events(self) -> AsyncIterator[ScannerEvent]:
        """Events in arrival order, for one consumer; ends when the scanner is closed."""
        async for event in self._events:
            yield event

    @property
    def stats(self) -> ScannerStats:
        errors = dict(self._decoder.errors)
        if self._invalid:
            errors["invalid"] = self._invalid
        return ScannerStats(
            self._decoder.frames_ok - self._invalid,
            errors,
            self._events.dropped,
            self._stale,
            self._unknown,
            self._timeouts,
        )

    @property
    def health(self) -> DeviceHealth:
        port = self._port.health
        stats = self.stats
        errors = dict(port.errors)
        errors.update((f"frame_{k}", v) for k, v in stats.frame_errors.items())
        if stats.timeouts:
            errors["timeout"] = stats.timeouts
        if stats.events_dropped:
            errors["events_dropped"] = stats.events_dropped
        state: HealthState
        if port.state is not HealthState.UP:
            state, detail = port.state, port.detail
        elif self._handshake_error is not None:
            state, detail = HealthState.DOWN, self._handshake_error
        elif not self._ready.is_set():
            state, detail = HealthState.CONNECTING, f"{self.path}: waiting for HELLO reply"
        elif time.monotonic() - self._last_error_at < self._degraded_window:
            state = HealthState.DEGRADED
            detail = f"{self.path}: frame errors in the last {self._degraded_window:g} s"
        else:
            ident = self.identity
            state = HealthState.UP
            detail = f"{self.path}: {ident.get('model', '?')} serial {ident.get('serial', '?')}"
        return DeviceHealth(self.name, state, self._last_success, detail, errors)

    async def _exchange(self, type: str, fields: Mapping[str, str]) -> Frame:
        seq = self._next_seq()
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[seq] = future
        try:
            await self._port.write(encode(Frame(type, seq, fields)))
            reply = await future
        except SerialLinkError as err:
            raise ScannerError(f"{self.name} {self.path}: {type} not sent: {err}") from err
        finally:
            self._pending.pop(seq, None)
        if reply.type == "ERR":
            fields = reply.fields
            raise ScannerRejected(fields.get("code", "?"), fields.get("text", ""), reply)
        return reply

    def _next_seq(self) -> int:
        for _ in range(MAX_SEQ + 1):
            self._seq = (self._seq + 1) % (MAX_SEQ + 1)
            if self._seq not in self._pending:
                return self._seq
        raise ScannerError(f"{self.name}: all {MAX_SEQ + 1} sequence numbers are awaiting replies")

    def _on_link(self, up: bool) -> None:
        if up:
            self._link_up.set()
            return
        self._link_up.clear()
        self._ready.clear()
        self._fail_pending("link lost")

    def _fail_pending(self, reason: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ScannerError(f"{self.name} {self.path}: {reason}"))

    async def _handshake_loop(self) -> None:
        """HELLO on every new connection; keep trying while the device is silent."""
        while True:
            await self._link_up.wait()
            self._link_up.clear()
            self._handshake_error = None
            while self._port.is_open and not self._link_up.is_set():
                try:
                    hello = {"proto": str(PROTOCOL_VERSION)}
                    reply = await self._request("HELLO", hello, None, False)
                except ScannerTimeout:
                    continue  # silent device: say HELLO again
                except ScannerRejected as err:
                    self._handshake_error = f"HELLO rejected: {err.code} {err.text}"
                    break
                except ScannerError:
                    break  # link lost; _on_link will wake us for the next connection
                proto = reply.fields.get("proto")
                if proto != str(PROTOCOL_VERSION):
                    self._handshake_error = f"scanner speaks proto={proto}, need {PROTOCOL_VERSION}"
                    log.error("%s %s: %s", self.name, self.path, self._handshake_error)
                    break
                self.identity = dict(reply.fields)
                self._ready.set()
                log.info("%s %s: ready, model %s", self.name, self.path, reply.fields.get("model"))
                break

    async def _read_loop(self) -> None:
        while True:
            try:
                data = await self._port.read()
            except SerialLinkError:
                return  # the port was closed under us: we are shutting down
            t = time.monotonic()
            for item in self._decoder.feed(data):
                if isinstance(item, FrameError):
                    self._note_error(item.kind, str(item))
                else:
                    self._dispatch(item, t)

    def _dispatch(self, frame: Frame, t: float) -> None:
        self.recent.append((time.time(), frame.type, " ".join(f"{k}={v}" for k, v in frame.fields.items())[:120]))
        if frame.type in ("OK", "ERR"):
            future = self._pending.get(frame.seq)
            if future is None or future.done():
                self._stale += 1
                log.debug("%s: reply seq %d awaited by no command", self.name, frame.seq)
            else:
                future.set_result(frame)
            self._last_success = time.time()
            return
        try:
            event = parse_event(frame, t)
        except ValueError as err:
            self._invalid += 1
            self._note_error("invalid", f"{frame.type} seq {frame.seq}: {err}")
            return
        self._last_success = time.time()
        if event is None:
            self._unknown += 1
            log.debug("%s: ignoring unknown frame type %s", self.name, frame.type)
            return
        self._events.put(event)

    def _note_error(self, kind: str, detail: str) -> None:
        self._last_error_at = time.monotonic()
        self.recent.append((time.time(), "noise" if kind in ("checksum", "syntax") else kind, detail[:120]))
        log.debug("%s %s: %s frame error: %s", self.name, self.path, kind, detail)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        err = ScannerError(f"{self.name} {self.path}: {task.get_name()} crashed")
        err.__cause__ = task.exception()
        log.error("%s", err, exc_info=task.exception())
        self._events.close(err)
