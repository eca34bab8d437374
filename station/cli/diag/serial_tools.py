"""`station diag ports` and `station diag serial sniff`: is the serial hardware there, and what does it say.

`ports` lists the machine's real serial ports (pyserial's list, which leaves out pseudo-terminals)
and probes each configured device the way the drivers open it (exclusive lock), naming why one
cannot be opened. `sniff` listens on one device and prints every received stretch of bytes as
decoded frames, or as hex when it is not a frame, then the error counts.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass

import serial
from serial.tools import list_ports

from drivers.scanner_protocol import Decoder, Frame, FrameError
from drivers.serial_port import SerialPort
from station.cli.common import load
from station.cli.diag.errors import FAIL, PASS, DiagFailed
from station.cli.diag.render import hex_bytes, table
from station.config import Config, PlcRtu
from station.lock import holder

SCANNER_ERROR_KINDS = ("garbage", "checksum", "syntax", "too_long")
BARCODE_MAX_LINE = 128  # as drivers/barcode.py: longer is line noise
_LINE_END = re.compile(rb"\r\n|\r|\n")


def ports(args: argparse.Namespace) -> int:
    config = load(args)
    present = sorted(list_ports.comports(include_links=True), key=lambda p: p.device)
    print("serial ports present:")
    rows = [[p.device, p.description or "", p.hwid or ""] for p in present]
    print("\n".join("  " + line for line in table(("device", "description", "hardware"), rows))
          if rows else "  (none found)")
    print()
    print("configured devices:")
    results = [probe(role, path, baud) for role, path, baud in configured_ports(config)]
    lines = table(("role", "port", "exists", "opens", "detail"),
                  [[r.role, r.path, _yes(r.exists), _yes(r.opens), r.detail] for r in results])
    print("\n".join("  " + line for line in lines))
    return PASS if all(r.opens for r in results) else FAIL


def configured_ports(config: Config) -> list[tuple[str, str, int]]:
    """(role, device, baudrate) of every serial device the configuration names."""
    out = [("scanner", config.scanner.port, config.scanner.baudrate),
           ("barcode", config.barcode.port, config.barcode.baudrate)]
    if isinstance(config.plc.link, PlcRtu):
        out.append(("plc (rtu)", config.plc.link.port, config.plc.link.baudrate))
    return out


@dataclass(frozen=True)
class Probe:
    """What opening one configured port showed."""

    role: str
    path: str
    exists: bool
    opens: bool
    detail: str


def probe(role: str, path: str, baudrate: int) -> Probe:
    """Open and close `path` as the drivers do (exclusive lock); say why it failed, in words."""
    target = os.path.realpath(path)
    via = f" -> {target}" if os.path.islink(path) else ""
    if not os.path.exists(path):
        dangling = " (dangling link)" if os.path.islink(path) else ""
        return Probe(role, path, False, False, f"no such device{dangling}: unplugged, or wrong name?")
    try:
        port = serial.Serial(path, baudrate, timeout=0, exclusive=True)
    except serial.SerialException as err:
        return Probe(role, path, True, False, _why(err) + via)
    port.close()
    return Probe(role, path, True, True, f"ok @ {baudrate}{via}")


def _why(err: serial.SerialException) -> str:
    code = err.errno
    if code in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EBUSY):
        return "in use: another process holds it (is the station running?)"
    if code == errno.EACCES:
        return "permission denied (is this user in the dialout group?)"
    return str(err)


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


# ---- sniff ---------------------------------------------------------------------------------------


def sniff(args: argparse.Namespace) -> int:
    config = load(args)
    path, baudrate, protocol = args.port, args.baudrate, args.protocol
    for role, device, baud in configured_ports(config):
        if args.port in (role, device):
            path, baudrate = device, baudrate or baud
            protocol = protocol or ("barcode" if role == "barcode" else "scanner")
    pid = holder(config.storage.data_dir)
    if pid is not None and _held_by_station(path, config):
        raise DiagFailed(_held(path, pid))
    return asyncio.run(_sniff(path, baudrate or 115200, args.seconds, args.frames, protocol or "scanner", pid))


def _held(path: str, pid: int) -> str:
    return (f"{path} is held by the running station (PID {pid}), which reads it: `station lane status` shows "
            "that device's health and errors; stop the station to listen on the line itself")


def _held_by_station(path: str, config: Config) -> bool:
    """Whether `path` is (a link to) one of the serial ports the station opens."""
    mine = {os.path.realpath(device) for _, device, _ in configured_ports(config)}
    return os.path.realpath(path) in mine


class BarcodeLines:
    """Barcode reader lines as sniff reports them: ('CODE'|'NOREAD', text) or a FrameError."""

    def __init__(self) -> None:
        self._partial = b""
        self.errors: dict[str, int] = {}

    def feed(self, data: bytes) -> list[tuple[str, str] | FrameError]:
        parts = _LINE_END.split(self._partial + data)
        self._partial = parts.pop()
        out: list[tuple[str, str] | FrameError] = []
        if len(self._partial) > BARCODE_MAX_LINE:
            parts.append(self._partial)
            self._partial = b""
        for line in parts:
            text = line.strip(b" \t")
            if not text:
                continue
            if len(text) > BARCODE_MAX_LINE:
                out.append(self._error("too_long", f"no line end within {BARCODE_MAX_LINE} bytes", line))
            elif all(0x20 <= b < 0x7F for b in text):
                code = text.decode("ascii")
                out.append(("NOREAD", "") if code == "NOREAD" else ("CODE", code))
            else:
                out.append(self._error("garbage", f"{len(line)} bytes, not printable ASCII", line))
        return out

    def _error(self, kind: str, message: str, raw: bytes) -> FrameError:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        return FrameError(kind, message, raw)  # type: ignore[arg-type]


async def _sniff(path: str, baudrate: int, seconds: float, frames: int | None, protocol: str,
                 station_pid: int | None = None) -> int:
    async with SerialPort(path, baudrate, name="sniff") as port:
        if not port.is_open:
            detail = port.health.detail
            if "Errno 11" in detail or "exclusively lock" in detail:  # another process holds it (flock)
                if station_pid is not None:
                    raise DiagFailed(_held(path, station_pid))
                detail = f"{path} is in use: another process holds it (a station running on another data folder?)"
            raise DiagFailed(f"cannot listen: {detail}")
        print(f"listening on {path} @ {baudrate} for {seconds:g} s, protocol {protocol}", flush=True)
        scanner, barcode = Decoder(), BarcodeLines()
        loop = asyncio.get_running_loop()
        start = loop.time()
        good = chunks = received = 0
        try:
            async with asyncio.timeout_at(start + seconds):
                while frames is None or good < frames:
                    data = await port.read()
                    chunks, received = chunks + 1, received + len(data)
                    stamp = f"{_clock()}  {f'+{loop.time() - start:.3f}':>8}"
                    items: Iterable[Frame | FrameError | tuple[str, str]]
                    if protocol == "scanner":
                        items = scanner.feed(data)
                    elif protocol == "barcode":
                        items = barcode.feed(data)
                    else:
                        items = [("RAW", hex_bytes(data, limit=4096))]
                    for item in items:
                        good += not isinstance(item, FrameError)
                        print(f"{stamp}  {_describe(item)}", flush=True)
        except TimeoutError:
            pass  # the listening time is up: the normal end
        elapsed = loop.time() - start
        lost = port.health.errors.get("lost", 0)
    errors = {"scanner": scanner.errors, "barcode": barcode.errors}.get(protocol, {})
    kinds = SCANNER_ERROR_KINDS if protocol == "scanner" else sorted(errors)
    print(f"--- {path}: {elapsed:.1f} s, {chunks} chunks, {received} bytes"
          + (f", link lost {lost} times" if lost else ""))
    label = {"scanner": "frames", "barcode": "reads"}.get(protocol, "chunks")
    print(f"{label}  {good if protocol != 'raw' else chunks}")
    if protocol != "raw":
        print("errors  " + (" ".join(f"{k}={errors.get(k, 0)}" for k in kinds) or "none"))
    if not received:
        print("nothing received (an idle device is quiet; check the cable and the baud rate)")
    return FAIL if sum(errors.values()) or lost else PASS


def _describe(item: Frame | FrameError | tuple[str, str]) -> str:
    if isinstance(item, Frame):
        fields = " ".join(f"{k}={v}" for k, v in item.fields.items())
        return f"FRAME  {item.type} seq={item.seq}  {fields}".rstrip()
    if isinstance(item, FrameError):
        return f"ERROR  {item}  {hex_bytes(item.raw)}"
    kind, text = item
    return f"{kind:<6} {text}".rstrip()


def _clock() -> str:
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 1000) % 1000:03d}"
