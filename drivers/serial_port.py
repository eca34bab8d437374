"""Async byte transport over a POSIX serial device (pyserial for setup, the event loop for I/O).

``SerialPort`` owns one device path. It opens it with pyserial (exclusive lock, non-blocking),
reads with ``loop.add_reader`` and, when the device goes away (EIO, hang-up, end of file, a failed
write), closes it, reports DOWN and reopens it with jittered exponential backoff. Callers of
``read()`` just wait across a reconnect; ``write()`` fails fast with ``SerialLinkDown`` while the
line is down, because a command written into the void would only surface later as a timeout.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from types import TracebackType
from typing import Generic, TypeVar

import serial

from drivers.health import DeviceHealth, HealthState

log = logging.getLogger(__name__)

READ_CHUNK = 4096
MAX_BUFFERED = 64 * 1024  # received bytes held for a slow reader before reading pauses


class SerialLinkError(Exception):
    """Base of the transport's errors."""


class SerialLinkDown(SerialLinkError):
    """The device is not open (unplugged, failed, or the port is closing)."""


class SerialPortClosed(SerialLinkError):
    """The SerialPort itself was closed; no more bytes will come."""


class SerialPort:
    """One serial device as an async byte stream that survives the device going away.

    Guarantees: bytes come out of ``read()`` in the order the device sent them within one
    connection; nothing is read while the buffer holds MAX_BUFFERED bytes (back-pressure goes to
    the kernel's tty buffer, nothing is dropped here); ``on_link(True|False)`` is called on the
    loop after each open and each loss, before any byte of the new connection is delivered.
    """

    def __init__(
        self,
        path: str,
        baudrate: int = 115200,
        *,
        reconnect_backoff: tuple[float, float] = (0.05, 2.0),
        name: str | None = None,
        on_link: Callable[[bool], None] | None = None,
    ) -> None:
        self.path = path
        self.baudrate = baudrate
        self._backoff = reconnect_backoff
        self._on_link = on_link
        self._health = DeviceHealth(name or path)
        self._serial: serial.Serial | None = None
        self._generation = 0
        self._buffer = bytearray()
        self._data = asyncio.Event()
        self._lost: asyncio.Future[str] | None = None
        self._paused = False
        self._closed = False
        self._write_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def health(self) -> DeviceHealth:
        return self._health

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    @property
    def generation(self) -> int:
        """How many times the device has been opened; changes on every reconnect."""
        return self._generation

    async def __aenter__(self) -> SerialPort:
        """Try the first open at once (so a present device is usable on return); never raises
        for a missing device: the supervisor keeps trying and health says DOWN meanwhile."""
        self._try_open()
        self._task = asyncio.create_task(self._supervise(), name=f"serial {self.path}")
        self._task.add_done_callback(self._supervisor_done)
        return self

    def _supervisor_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Only a bug gets here (I/O errors are handled in the loop); make it loud, not silent.
            self._health = self._health.failed("crash", f"{self.path}: supervisor crashed")
            log.error("serial %s: supervisor crashed", self.path, exc_info=task.exception())

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                # Our own cancel of the supervisor; re-raise only if *we* are being cancelled.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        self._health = replace(self._health, state=HealthState.DOWN, detail=f"{self.path}: closed")
        self._data.set()  # wake readers so they see the port closed

    async def read(self) -> bytes:
        """Wait for bytes and return all that are buffered. Raises SerialPortClosed after close."""
        while not self._buffer:
            if self._closed:
                raise SerialPortClosed(f"serial port {self.path} is closed")
            self._data.clear()
            await self._data.wait()
        data = bytes(self._buffer)
        self._buffer.clear()
        if self._paused and self._serial is not None:
            self._paused = False
            asyncio.get_running_loop().add_reader(self._serial.fileno(), self._on_readable)
        return data

    async def write(self, data: bytes) -> None:
        """Write all of ``data`` or raise SerialLinkDown; concurrent writes never interleave."""
        async with self._write_lock:
            view = memoryview(data)
            while view:
                ser, lost = self._serial, self._lost
                if ser is None or lost is None:
                    raise SerialLinkDown(f"serial port {self.path} is down: {self._health.detail}")
                try:
                    view = view[os.write(ser.fileno(), view) :]
                except BlockingIOError:
                    await self._wait_writable(ser.fileno(), lost)
                except OSError as err:
                    self._mark_lost(f"write failed: {err}")
                    raise SerialLinkDown(f"serial port {self.path}: write failed: {err}") from err

    async def _wait_writable(self, fd: int, lost: asyncio.Future[str]) -> None:
        loop = asyncio.get_running_loop()
        writable = loop.create_future()

        def wake() -> None:
            if not writable.done():
                writable.set_result(None)

        loop.add_writer(fd, wake)
        try:
            await asyncio.wait([writable, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            loop.remove_writer(fd)
            writable.cancel()
        if lost.done():
            raise SerialLinkDown(f"serial port {self.path} went down during a write")

    async def _supervise(self) -> None:
        """Open, wait for loss, close, back off, repeat, until cancelled."""
        delay = self._backoff[0]
        while True:
            if self._serial is None and not self._try_open():
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self._backoff[1])
                continue
            delay = self._backoff[0]
            assert self._lost is not None
            try:
                reason = await self._lost
            finally:
                self._close_device()
            self._health = self._health.failed("lost", f"{self.path}: {reason}")
            log.warning("serial %s: link lost (%s); reopening", self.path, reason)
            if self._on_link is not None:
                self._on_link(False)
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    def _try_open(self) -> bool:
        try:
            self._open()
        except (serial.SerialException, OSError) as err:
            # pyserial repeats the path and the errno in its message: the errno's own words say it once
            code = getattr(err, "errno", None)
            why = os.strerror(code) if isinstance(code, int) and code not in (errno.EAGAIN, errno.EWOULDBLOCK) else err
            self._health = self._health.failed("open", f"cannot open {self.path}: {why}")
            log.debug("serial %s: open failed: %s", self.path, err)
            return False
        return True

    def _open(self) -> None:
        ser = serial.Serial(self.path, self.baudrate, timeout=0, exclusive=True)
        loop = asyncio.get_running_loop()
        self._serial = ser
        self._lost = loop.create_future()
        self._generation += 1
        self._health = self._health.ok(f"open {self.path} @ {self.baudrate}")
        log.info("serial %s: open (connection %d)", self.path, self._generation)
        if self._on_link is not None:
            self._on_link(True)
        loop.add_reader(ser.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        ser = self._serial
        if ser is None:
            return
        try:
            data = os.read(ser.fileno(), READ_CHUNK)
        except BlockingIOError:
            return
        except OSError as err:
            # EIO is how Linux reports a hung-up tty (pty master closed, USB adapter unplugged).
            reason = "device hung up" if err.errno == errno.EIO else f"read failed: {err}"
            self._mark_lost(reason)
            return
        if not data:
            self._mark_lost("end of file")
            return
        self._buffer += data
        self._data.set()
        if len(self._buffer) >= MAX_BUFFERED:
            self._paused = True
            asyncio.get_running_loop().remove_reader(ser.fileno())

    def _mark_lost(self, reason: str) -> None:
        if self._serial is not None:
            asyncio.get_running_loop().remove_reader(self._serial.fileno())
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(reason)

    def _close_device(self) -> None:
        ser, lost = self._serial, self._lost
        self._serial, self._lost, self._paused = None, None, False
        if lost is not None and not lost.done():
            lost.set_result("port closed")  # releases writers waiting for the device to drain
        if ser is not None:
            asyncio.get_running_loop().remove_reader(ser.fileno())
            ser.close()


T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """A bounded inbound stream for one consumer. Overflow policy: drop the oldest item and count it.

    Why drop oldest: device events describe the present; a consumer that fell behind needs the
    newest state more than a backlog, and the drop is visible in ``dropped`` (and in health).
    """

    def __init__(self, maxsize: int) -> None:
        self._items: collections.deque[T] = collections.deque()
        self._maxsize = maxsize
        self._ready = asyncio.Event()
        self._error: BaseException | None = None
        self._closed = False
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        if len(self._items) >= self._maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    def close(self, error: BaseException | None = None) -> None:
        """End the stream: consumers drain what is queued, then stop (or raise ``error``)."""
        self._closed = True
        self._error = error
        self._ready.set()

    async def __aiter__(self) -> AsyncIterator[T]:
        while True:
            while self._items:
                yield self._items.popleft()
            if self._closed:
                if self._error is not None:
                    raise self._error
                return
            self._ready.clear()
            await self._ready.wait()
