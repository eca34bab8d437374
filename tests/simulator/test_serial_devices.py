"""The simulated serial devices, seen from a bare pty slave (no driver in between)."""

from __future__ import annotations

import asyncio
import os
import termios
from pathlib import Path

from drivers.scanner_protocol import Decoder, Frame, FrameError, encode
from simulator.serial_devices import SimBarcode, SimScanner


class RawLine:
    """The station's end of the pty, opened with plain os calls."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        self.decoder = Decoder()

    def close(self) -> None:
        os.close(self.fd)

    async def frames(self, n: int, timeout: float = 5.0) -> list[Frame | FrameError]:
        out: list[Frame | FrameError] = []
        async with asyncio.timeout(timeout):
            while len(out) < n:
                out += self.decoder.feed(await self.read())
        return out

    async def read(self) -> bytes:
        loop = asyncio.get_running_loop()
        while True:
            try:
                return os.read(self.fd, 4096)
            except BlockingIOError:
                ready = loop.create_future()
                loop.add_reader(self.fd, ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_reader(self.fd)


def test_scanner_answers_per_spec_and_ignores_bad_frames(tmp_path: Path) -> None:
    link = tmp_path / "ttyScanner"

    async def main() -> None:
        async with SimScanner(link=link) as sim:
            assert link.is_symlink() and os.readlink(link).startswith("/dev/pts/")
            line = RawLine(sim.path)
            try:
                attrs = termios.tcgetattr(line.fd)
                assert not attrs[3] & termios.ICANON, "slave must be in raw mode"
                bad = bytearray(encode(Frame("STATUS", 1)))
                bad[3] ^= 0x20  # corrupt: the checksum no longer matches
                os.write(line.fd, bytes(bad))
                os.write(line.fd, encode(Frame("HELLO", 2, {"proto": "9"})))
                os.write(line.fd, encode(Frame("HELLO", 3, {"proto": "1"})))
                err, ok = await line.frames(2)
                assert err == Frame("ERR", 2, {"code": "UNSUPPORTED_VERSION", "text": "supported: 1"})
                assert isinstance(ok, Frame) and ok.type == "OK" and ok.seq == 3
                assert ok.fields["proto"] == "1"
                assert sim.decoder.errors == {"checksum": 1}
                assert [c.seq for c in sim.commands] == [2, 3]
            finally:
                line.close()
        assert not link.exists()

    asyncio.run(main())


def test_noise_is_reproducible_and_frames_survive_it() -> None:
    async def capture(seed: int) -> tuple[bytes, list[Frame | FrameError]]:
        async with SimScanner(noise_bytes_per_frame=5, seed=seed) as sim:
            line = RawLine(sim.path)
            try:
                await sim.scan_started("S1")
                await sim.interlock(open=True)
                raw = b""
                async with asyncio.timeout(5):
                    while sum(isinstance(i, Frame) for i in Decoder().feed(raw)) < 2:
                        raw += await line.read()
                return raw, Decoder().feed(raw)
            finally:
                line.close()

    async def main() -> None:
        first, items = await capture(seed=11)
        again, _ = await capture(seed=11)
        assert first == again
        frames = [i for i in items if isinstance(i, Frame)]
        assert frames == [
            Frame("SCAN_STARTED", 0, {"scan": "S1"}),
            Frame("INTERLOCK", 1, {"state": "open"}),
        ]

    asyncio.run(main())


def test_barcode_writes_code_and_noread_lines() -> None:
    async def main() -> None:
        async with SimBarcode() as sim:
            line = RawLine(sim.path)
            try:
                await sim.send("RR123456785GB")
                await sim.send(None)
                raw = b""
                async with asyncio.timeout(5):
                    while raw.count(b"\r\n") < 2:
                        raw += await line.read()
                assert raw == b"RR123456785GB\r\nNOREAD\r\n"
            finally:
                line.close()

    asyncio.run(main())
