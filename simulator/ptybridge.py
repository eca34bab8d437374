"""A null-modem cable made of two pseudo-terminals: what one end writes, the other end reads.

Programs that open a serial port *by name* on both sides (pymodbus's serial server, the station's
serial client, mbpoll) need two tty paths that are wired to each other. `PtyBridge` opens two pty
pairs, puts both slaves in raw mode (8 bits, no echo, no line editing, like a UART) and copies
bytes between the two masters from event-loop callbacks, so it needs no socat and no thread.

Guarantees: bytes arrive in order and unchanged; the bridge never blocks the event loop: bytes
the far end cannot take (nobody reading it and its tty buffer full) wait in a bounded buffer of
`max_pending` bytes per direction and beyond that are dropped and counted in `dropped_bytes`,
as a real line drops what no UART picks up. The bridge keeps its own fd of each slave open, so
either end may close and reopen its port at any time without the other end seeing a hang-up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tty
from types import TracebackType

log = logging.getLogger(__name__)


class _Direction:
    """Copies one master's output into the other master, buffering what does not fit."""

    def __init__(self, loop: asyncio.AbstractEventLoop, src: int, dst: int, max_pending: int) -> None:
        self.loop, self.src, self.dst, self.max_pending = loop, src, dst, max_pending
        self.pending = bytearray()
        self.dropped = 0
        self.copied = 0

    def on_readable(self) -> None:
        try:
            data = os.read(self.src, 4096)
        except BlockingIOError:
            return
        except OSError:  # EIO: cannot happen while we hold the slave, but never spin on it
            self.loop.remove_reader(self.src)
            return
        if not self.pending:
            data = data[self._write(data):]
            if data:
                self.loop.add_writer(self.dst, self.on_writable)
        room = self.max_pending - len(self.pending)
        if len(data) > room:
            self.dropped += len(data) - room
            log.debug("pty bridge: line full, dropped %d bytes", len(data) - room)
        self.pending += data[:max(0, room)]

    def on_writable(self) -> None:
        del self.pending[:self._write(bytes(self.pending))]
        if not self.pending:
            self.loop.remove_writer(self.dst)

    def _write(self, data: bytes) -> int:
        try:
            n = os.write(self.dst, data)
        except BlockingIOError:
            return 0
        self.copied += n
        return n


class PtyBridge:
    """Async context manager: `path_a` and `path_b` are two tty devices wired back to back."""

    def __init__(self, *, max_pending: int = 65536) -> None:
        self.max_pending = max_pending
        self._fds: list[int] = []
        self._names: tuple[str, str] = ("", "")
        self._directions: list[_Direction] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def path_a(self) -> str:
        return self._names[0]

    @property
    def path_b(self) -> str:
        return self._names[1]

    @property
    def dropped_bytes(self) -> int:
        return sum(d.dropped for d in self._directions)

    async def __aenter__(self) -> PtyBridge:
        loop = asyncio.get_running_loop()
        try:
            ma, sa = os.openpty()
            self._fds += [ma, sa]
            mb, sb = os.openpty()
            self._fds += [mb, sb]
            for slave in (sa, sb):
                tty.setraw(slave)  # termios is per tty: whoever opens the path later gets raw mode
            for master in (ma, mb):
                os.set_blocking(master, False)
            self._names = (os.ttyname(sa), os.ttyname(sb))
        except OSError:
            self._close_fds()
            raise
        self._loop = loop
        self._directions = [_Direction(loop, ma, mb, self.max_pending), _Direction(loop, mb, ma, self.max_pending)]
        for d in self._directions:
            loop.add_reader(d.src, d.on_readable)
        log.debug("pty bridge %s <-> %s", *self._names)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Unplug the cable: both paths stop existing; idempotent."""
        loop, self._loop = self._loop, None
        if loop is not None:
            for d in self._directions:
                loop.remove_reader(d.src)
                loop.remove_writer(d.dst)
        self._close_fds()

    def _close_fds(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)
