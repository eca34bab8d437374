"""The scanner's unsolicited events (protocol v1, docs/scanner-protocol.md) as typed values.

Pure: `parse_event(frame, t)` turns an event frame into a frozen dataclass, or says why it cannot.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from drivers.scanner_protocol import Frame

_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}\Z")
TUBE_STATES = frozenset({"warming", "ready", "off"})


@dataclass(frozen=True)
class ScanStarted:
    scan_id: str
    t: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class ScanDone:
    """The image is complete in the spool dir at ``file`` (relative; checked: no "..")."""

    scan_id: str
    file: str
    sha256: str  # lower-case hex
    t: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Interlock:
    open: bool
    t: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class ScannerFault:
    code: str
    text: str
    t: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class TubeStatus:
    state: str  # warming | ready | off
    kv: float | None
    ma: float | None
    t: float = field(default_factory=time.monotonic)


ScannerEvent = ScanStarted | ScanDone | Interlock | ScannerFault | TubeStatus


def _required(fields: Mapping[str, str], key: str) -> str:
    value = fields.get(key, "")
    if not value:
        raise ValueError(f"missing field {key}")
    return value


def _number(fields: Mapping[str, str], key: str) -> float | None:
    if key not in fields:
        return None
    value = float(fields[key])
    if not math.isfinite(value):
        raise ValueError(f"{key}={fields[key]} is not a finite number")
    return value


def parse_event(frame: Frame, t: float) -> ScannerEvent | None:
    """Typed event for an event frame; None for a type this driver does not know.

    Raises ValueError for a known event with missing or invalid fields.
    """
    f = frame.fields
    if frame.type == "SCAN_STARTED":
        return ScanStarted(_required(f, "scan"), t)
    if frame.type == "SCAN_DONE":
        name, digest = _required(f, "file"), _required(f, "sha256")
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or "\x00" in name or "\\" in name:
            raise ValueError(f"file {name!r} is not a plain path inside the spool dir")
        if not _SHA256_RE.match(digest):
            raise ValueError(f"sha256 {digest!r} is not 64 hex digits")
        return ScanDone(_required(f, "scan"), name, digest.lower(), t)
    if frame.type == "INTERLOCK":
        state = _required(f, "state")
        if state not in ("open", "closed"):
            raise ValueError(f"interlock state {state!r}")
        return Interlock(state == "open", t)
    if frame.type == "FAULT":
        return ScannerFault(_required(f, "code"), f.get("text", ""), t)
    if frame.type == "TUBE":
        state = _required(f, "state")
        if state not in TUBE_STATES:
            raise ValueError(f"tube state {state!r}")
        return TubeStatus(state, _number(f, "kv"), _number(f, "ma"), t)
    return None
