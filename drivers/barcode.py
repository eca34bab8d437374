"""Barcode reader driver: one code per line over a SerialPort; a no-read is a value, not an error.

The reader sends ``<code>\\r\\n`` per item, or ``NOREAD\\r\\n`` when it saw the item but no code.
CR, LF and CR LF all end a line. The code is stripped of surrounding blanks; empty lines are
ignored; a line with bytes outside printable ASCII (line noise, a baud-rate mismatch) or longer
than MAX_LINE bytes (blanks included) is counted as an error and produces no read. S10 validation
belongs to the station.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import TracebackType

from drivers.health import DeviceHealth, HealthState
from drivers.serial_port import DropOldestQueue, SerialLinkError, SerialPort

log = logging.getLogger(__name__)

NOREAD = "NOREAD"
RECENT = 50  # lines kept for the technician's tail
MAX_LINE = 128  # bytes; no symbology the lane reads comes close
_LINE_END = re.compile(rb"\r\n|\r|\n")


class BarcodeError(Exception):
    """Base of the barcode driver's errors (raised by ``reads()`` if the reader task failed)."""


@dataclass(frozen=True)
class BarcodeRead:
    code: str | None  # None: the reader's no-read line
    t: float  # time.monotonic() at receipt


@dataclass(frozen=True)
class BarcodeStats:
    reads: int  # lines that gave a code
    no_reads: int
    errors: Mapping[str, int]  # "garbage" (non-printable bytes), "too_long"
    dropped: int  # reads lost to queue overflow (oldest dropped)


class BarcodeReader:
    """A barcode reader as an async stream of reads (``reads()``), with health and stats."""

    def __init__(
        self,
        port: str,
        baudrate: int = 9600,
        *,
        name: str = "barcode",
        reconnect_backoff: tuple[float, float] = (0.05, 2.0),
        degraded_window: float = 10.0,
        queue_size: int = 1000,
    ) -> None:
        self.path = port
        self.name = name
        self._port = SerialPort(port, baudrate, reconnect_backoff=reconnect_backoff, name=name)
        self._degraded_window = degraded_window
        self._queue: DropOldestQueue[BarcodeRead] = DropOldestQueue(queue_size)
        self._partial = bytearray()
        self._skipping = False  # dropping the rest of an over-long line already counted
        self._reads = 0
        self._no_reads = 0
        self._errors: dict[str, int] = {}
        self._last_success: float | None = None
        self._last_error_at = -math.inf
        self._task: asyncio.Task[None] | None = None
        # The last lines read and the noise between them, for a technician: (time.time(), kind, text)
        self.recent: deque[tuple[float, str, str]] = deque(maxlen=RECENT)

    async def __aenter__(self) -> BarcodeReader:
        await self._port.__aenter__()
        self._task = asyncio.create_task(self._read_loop(), name=f"{self.name} reader")
        self._task.add_done_callback(self._task_done)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
        finally:
            self._queue.close()
            await self._port.__aexit__(et, ev, tb)

    async def reads(self) -> AsyncIterator[BarcodeRead]:
        """Reads in arrival order, for one consumer; ends when the reader is closed."""
        async for read in self._queue:
            yield read

    @property
    def stats(self) -> BarcodeStats:
        return BarcodeStats(self._reads, self._no_reads, dict(self._errors), self._queue.dropped)

    @property
    def health(self) -> DeviceHealth:
        port = self._port.health
        errors = dict(port.errors)
        errors.update((f"line_{k}", v) for k, v in self._errors.items())
        state: HealthState
        if port.state is not HealthState.UP:
            state, detail = port.state, port.detail
        elif time.monotonic() - self._last_error_at < self._degraded_window:
            state = HealthState.DEGRADED
            detail = f"{self.path}: bad lines in the last {self._degraded_window:g} s"
        else:
            state, detail = HealthState.UP, port.detail
        return DeviceHealth(self.name, state, self._last_success, detail, errors)

    def feed(self, data: bytes, t: float) -> list[BarcodeRead]:
        """Split ``data`` into lines and return the reads they complete (also counts errors)."""
        self._partial += data
        *lines, rest = _LINE_END.split(bytes(self._partial))
        self._partial = bytearray(rest)
        out = [read for line in lines if (read := self._line(line, t)) is not None]
        if len(self._partial) > MAX_LINE:
            if not self._skipping:
                self._error("too_long", f"no line end within {MAX_LINE} bytes")
            self._skipping = True
            self._partial.clear()
        return out

    def _line(self, raw: bytes, t: float) -> BarcodeRead | None:
        if self._skipping:  # tail of an over-long line, already counted
            self._skipping = False
            return None
        # The limit counts the blanks too, as `feed` does for a line still unterminated: a line is
        # refused or read the same however the serial port cut it.
        if len(raw) > MAX_LINE:
            self._error("too_long", f"line of {len(raw)} bytes")
            return None
        text = raw.strip(b" \t")
        if not text:
            return None
        if any(b < 0x20 or b > 0x7E for b in text):
            self._error("garbage", f"non-printable bytes in {text[:40]!r}")
            return None
        self._last_success = time.time()
        self.recent.append((self._last_success, "read", text.decode("ascii")))
        if text == NOREAD.encode():
            self._no_reads += 1
            return BarcodeRead(None, t)
        self._reads += 1
        return BarcodeRead(text.decode("ascii"), t)

    def _error(self, kind: str, detail: str) -> None:
        self._errors[kind] = self._errors.get(kind, 0) + 1
        self._last_error_at = time.monotonic()
        self.recent.append((time.time(), "noise", detail[:120]))
        log.debug("%s %s: %s", self.name, self.path, detail)

    async def _read_loop(self) -> None:
        while True:
            try:
                data = await self._port.read()
            except SerialLinkError:
                return  # closed under us: shutting down
            for read in self.feed(data, time.monotonic()):
                self._queue.put(read)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        log.error("%s %s: reader crashed", self.name, self.path, exc_info=task.exception())
        err = BarcodeError(f"{self.name} {self.path}: reader crashed")
        err.__cause__ = task.exception()
        self._queue.close(err)
