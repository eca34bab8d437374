"""Simulated serial devices on pseudo-terminals: the scanner (protocol v1) and the barcode reader.

Each device opens a pty pair, puts the slave in raw mode and serves the device end on the master.
The station opens ``device.path`` with the real drivers (pyserial, termios): no mocks.

``link``: when given, ``path`` is a symlink to the pty slave, created atomically on enter and removed
on exit, like a udev ``/dev/serial/by-id/...`` name. A device closed and a new one opened on the same
link is how a test unplugs and replugs a device: the driver's reconnect loop finds the new pty.

Like a real UART, a simulated device never blocks forever: bytes the line cannot take within
``write_timeout`` (nobody reading the slave) are dropped and counted in ``dropped_bytes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import tty
from pathlib import Path
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

from drivers.scanner_protocol import MAX_SEQ, PROTOCOL_VERSION, Decoder, Frame, encode

log = logging.getLogger(__name__)


class _PtyDevice:
    """The device end of a pty: raw slave, non-blocking master, optional stable symlink."""

    def __init__(self, *, link: str | os.PathLike[str] | None, split_writes: bool, seed: int,
                 write_timeout: float = 1.0) -> None:
        self._link = Path(link) if link is not None else None
        self.split_writes = split_writes
        self.write_timeout = write_timeout
        self._rng = random.Random(seed)
        self._master = -1
        self._slave = -1
        self._slave_name = ""
        self._write_lock = asyncio.Lock()
        self.dropped_bytes = 0

    @property
    def path(self) -> str:
        """What the station opens: the symlink if one was asked for, else the pty slave."""
        return str(self._link) if self._link is not None else self._slave_name

    def _open_pty(self) -> None:
        self._master, self._slave = os.openpty()
        # The sim keeps its own slave fd open so that the master never sees EIO while the
        # station's driver is between connections.
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self._slave_name = os.ttyname(self._slave)
        if self._link is not None:
            tmp = self._link.with_name(f".{self._link.name}.{os.getpid()}.tmp")
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(self._slave_name)
            os.replace(tmp, self._link)

    def _close_pty(self) -> None:
        if self._link is not None and self._link.is_symlink():
            if os.readlink(self._link) == self._slave_name:
                self._link.unlink()
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    @property
    def plugged(self) -> bool:
        return self._master >= 0

    async def unplug(self) -> None:
        """Pull the cable: the pty and its link go away (the station's port hangs up); what the device
        sends while unplugged is lost."""
        if not self.plugged:
            return
        await self._stop_serving()
        async with self._write_lock:
            self._close_pty()

    async def replug(self) -> None:
        """Plug the cable back in: a new pty behind the same link (as udev would name it)."""
        if self.plugged:
            return
        self._open_pty()
        self._start_serving()

    async def _stop_serving(self) -> None:
        """What a device runs on its line stops (nothing to stop for a device that only talks)."""

    def _start_serving(self) -> None:
        """What a device runs on its line starts again after a replug."""

    async def _read(self) -> bytes:
        """Bytes the station wrote; waits for some."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                return os.read(self._master, 4096)
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_reader(self._master, lambda: ready.done() or ready.set_result(None))
                try:
                    await ready
                finally:
                    loop.remove_reader(self._master)

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (in random small chunks when ``split_writes``); dropped while unplugged."""
        async with self._write_lock:
            if not self.plugged:
                self.dropped_bytes += len(data)
                return
            if not self.split_writes:
                await self._write(data)
                return
            view = memoryview(data)
            while view:
                size = self._rng.randint(1, 8)
                await self._write(view[:size])
                view = view[size:]
                await asyncio.sleep(0)  # let the reader see a partial frame

    async def _write(self, data: memoryview | bytes) -> None:
        loop = asyncio.get_running_loop()
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._master, view) :]
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(self._master, lambda: writable.done() or writable.set_result(None))
                try:
                    async with asyncio.timeout(self.write_timeout):  # not wait_for: 3.11's can drop a cancel
                        await writable
                except TimeoutError:
                    self.dropped_bytes += len(view)
                    log.debug("sim %s: line full, dropped %d bytes", self.path, len(view))
                    return
                finally:
                    loop.remove_writer(self._master)


class SimScanner(_PtyDevice):
    """A scanner speaking protocol v1. Tube starts ready (X-ray on), interlock closed, not armed.

    Knobs: ``noise_bytes_per_frame`` random bytes (seeded) before every frame it sends;
    ``split_writes``; ``respond = False`` to ignore commands; ``proto`` to claim another version.
    ``commands`` records every command frame received, in order.
    """

    def __init__(
        self,
        *,
        model: str = "SIM-XR1",
        serial: str = "SIM0001",
        noise_bytes_per_frame: int = 0,
        split_writes: bool = False,
        seed: int = 0,
        link: str | os.PathLike[str] | None = None,
        warmup_s: float = 0.05,
        proto: int = PROTOCOL_VERSION,
    ) -> None:
        super().__init__(link=link, split_writes=split_writes, seed=seed)
        self.model = model
        self.serial = serial
        self.noise_bytes_per_frame = noise_bytes_per_frame
        self.warmup_s = warmup_s
        self.proto = proto
        self.respond = True
        self.tube_state = "ready"
        self.interlock_open = False
        self.armed = False
        self.commands: list[Frame] = []
        self.decoder = Decoder()
        self._event_seq = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> SimScanner:
        self._open_pty()
        self._start_serving()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop_serving()
        self._close_pty()

    def _start_serving(self) -> None:
        self._spawn(self._serve(), "serve")

    async def _stop_serving(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- what the orchestrator (or a test) makes the scanner do --------------------------------

    async def scan_started(self, scan_id: str) -> None:
        self.armed = False
        await self._event("SCAN_STARTED", scan=scan_id)

    async def scan_done(self, scan_id: str, file: str, sha256: str) -> None:
        await self._event("SCAN_DONE", scan=scan_id, file=file, sha256=sha256)

    async def interlock(self, open: bool) -> None:
        """Open or close the interlock; opening it disarms the scanner."""
        self.interlock_open = open
        if open:
            self.armed = False
        await self._event("INTERLOCK", state="open" if open else "closed")

    async def fault(self, code: str, text: str) -> None:
        await self._event("FAULT", code=code, text=text)

    # -- the device end of the protocol --------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=f"sim scanner {name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, frame: Frame) -> None:
        data = encode(frame)
        if self.noise_bytes_per_frame:
            data = self._rng.randbytes(self.noise_bytes_per_frame) + data
        await self.send_raw(data)

    async def _event(self, type: str, **fields: str) -> None:
        seq, self._event_seq = self._event_seq, (self._event_seq + 1) % (MAX_SEQ + 1)
        await self._send(Frame(type, seq, fields))

    async def _tube_event(self) -> None:
        kv, ma = self._tube_values()
        await self._event("TUBE", state=self.tube_state, kv=kv, ma=ma)

    def _tube_values(self) -> tuple[str, str]:
        return ("160", "0.5") if self.tube_state == "ready" else ("0", "0")

    async def _serve(self) -> None:
        while True:
            data = await self._read()
            for item in self.decoder.feed(data):
                if isinstance(item, Frame):  # bad frames are dropped silently, per the spec
                    self.commands.append(item)
                    if self.respond:
                        await self._send(await self._answer(item))

    async def _answer(self, cmd: Frame) -> Frame:
        def ok(**fields: str) -> Frame:
            return Frame("OK", cmd.seq, fields)

        def err(code: str, text: str) -> Frame:
            return Frame("ERR", cmd.seq, {"code": code, "text": text})

        f = cmd.fields
        if cmd.type == "HELLO":
            if f.get("proto") != str(PROTOCOL_VERSION):
                return err("UNSUPPORTED_VERSION", f"supported: {PROTOCOL_VERSION}")
            return ok(proto=str(self.proto), model=self.model, serial=self.serial, fw="1.0")
        if cmd.type == "STATUS":
            return ok(tube=self.tube_state, interlock="open" if self.interlock_open else "closed",
                      xray="0" if self.tube_state == "off" else "1", armed=str(int(self.armed)))
        if cmd.type == "XRAY":
            if f.get("on") not in ("0", "1"):
                return err("BAD_FIELD", "on must be 0 or 1")
            if f["on"] == "1" and self.interlock_open:
                return err("INTERLOCK_OPEN", "interlock open")
            await self._switch_xray(f["on"] == "1")
            return ok(xray=f["on"])
        if cmd.type == "ARM":
            if self.interlock_open:
                return err("INTERLOCK_OPEN", "interlock open")
            if self.tube_state != "ready":
                return err("NOT_READY", f"tube {self.tube_state}")
            self.armed = True
            return ok(armed="1")
        if cmd.type == "SELFTEST":
            return ok(result="pass")
        if cmd.type == "TUBE":
            kv, ma = self._tube_values()
            return ok(state=self.tube_state, kv=kv, ma=ma)
        return err("UNKNOWN_COMMAND", f"unknown command {cmd.type}")

    async def _switch_xray(self, on: bool) -> None:
        if not on and self.tube_state != "off":
            self.tube_state, self.armed = "off", False
            self._spawn(self._tube_event(), "tube")
        elif on and self.tube_state == "off":
            self.tube_state = "warming"
            self._spawn(self._warm_up(), "warm-up")

    async def _warm_up(self) -> None:
        await self._tube_event()
        await asyncio.sleep(self.warmup_s)
        if self.tube_state == "warming":
            self.tube_state = "ready"
            await self._tube_event()


class SimBarcode(_PtyDevice):
    """A barcode reader: ``send(code)`` writes ``<code>\\r\\n``; ``send(None)`` writes ``NOREAD\\r\\n``."""

    def __init__(self, *, split_writes: bool = False, seed: int = 0,
                 link: str | os.PathLike[str] | None = None) -> None:
        super().__init__(link=link, split_writes=split_writes, seed=seed)

    async def __aenter__(self) -> SimBarcode:
        self._open_pty()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close_pty()

    async def send(self, code: str | None) -> None:
        await self.send_raw(b"%s\r\n" % (b"NOREAD" if code is None else code.encode("ascii")))
