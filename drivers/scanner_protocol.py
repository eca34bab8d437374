"""Scanner line protocol v1: a pure codec (bytes in, frames out; frames in, bytes out). No I/O.

Wire format (docs/scanner-protocol.md is the normative text)::

    $<TYPE>,<SEQ>[,<key>=<value>...]*<CK>\\r\\n

CK is the XOR of the body bytes (between ``$`` and ``*``) as two hex digits. Values are UTF-8,
percent-encoded so that a body only ever holds printable ASCII without ``$ * , = %``.

Guarantees:
- ``encode`` either returns one complete frame of at most MAX_FRAME bytes or raises FrameError.
- ``decode(encode(f)) == (len(encode(f)), f)`` for every valid frame ``f``.
- ``Decoder.feed`` never raises; whatever the input and however it is chunked, good frames that
  arrive intact come out, in order, exactly once, and every rejected stretch of bytes is reported
  as one FrameError value and counted in ``Decoder.errors``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

PROTOCOL_VERSION = 1
MAX_FRAME = 512  # bytes, from "$" through "\r\n" inclusive
MAX_SEQ = 65535

ErrorKind = Literal["checksum", "syntax", "too_long", "garbage"]

_TYPE_RE = re.compile(r"[A-Z][A-Z0-9_]{0,31}\Z")
_KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_SEQ_RE = re.compile(r"[0-9]{1,5}\Z")
_HEX = b"0123456789ABCDEFabcdef"
# Bytes a value may carry literally: printable ASCII minus the protocol's delimiters and "%".
_LITERAL = frozenset(range(0x20, 0x7F)) - frozenset(b"$*,=%")
_IDLE = b"\r\n"  # line-ending bytes between frames are idle line, not garbage


class FrameError(ValueError):
    """A stretch of received bytes that is not a valid frame (or a frame that cannot be encoded).

    ``kind`` says why: "checksum" (well-formed, wrong CK), "syntax" (malformed or truncated frame),
    "too_long" (no terminator within MAX_FRAME bytes), "garbage" (bytes outside any frame).
    ``raw`` holds (up to 64 of) the offending bytes for diagnostics.
    """

    def __init__(self, kind: ErrorKind, message: str, raw: bytes | bytearray = b"") -> None:
        super().__init__(f"{kind}: {message}")
        self.kind: ErrorKind = kind
        self.raw = bytes(raw[:64])


@dataclass(frozen=True)
class Frame:
    """One protocol frame. ``fields`` keeps insertion order and is read-only after construction."""

    type: str
    seq: int
    fields: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _TYPE_RE.match(self.type):
            raise ValueError(f"frame type {self.type!r} is not an upper-case word")
        if not 0 <= self.seq <= MAX_SEQ:
            raise ValueError(f"frame seq {self.seq} outside 0..{MAX_SEQ}")
        fields = dict(self.fields)
        for key, value in fields.items():
            if not isinstance(key, str) or not _KEY_RE.match(key):
                raise ValueError(f"field key {key!r} in {self.type} is not a lower-case word")
            if not isinstance(value, str):
                raise ValueError(f"field {key}={value!r} in {self.type} is not a str")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as err:  # lone surrogates cannot go on the wire
                raise ValueError(f"field {key} in {self.type} is not valid Unicode") from err
        object.__setattr__(self, "fields", MappingProxyType(fields))

    def __hash__(self) -> int:
        return hash((self.type, self.seq, tuple(self.fields.items())))


def checksum(body: bytes) -> int:
    """XOR of all body bytes (NMEA style)."""
    ck = 0
    for b in body:
        ck ^= b
    return ck


def escape(value: str) -> str:
    """Percent-encode the UTF-8 bytes of ``value`` that may not appear literally in a body."""
    return "".join(chr(b) if b in _LITERAL else f"%{b:02X}" for b in value.encode("utf-8"))


def unescape(text: str) -> str:
    """Inverse of ``escape``; raises ValueError on a bad escape or invalid UTF-8."""
    if "%" not in text:
        return text
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or not all(ch.encode() in _HEX for ch in pair):
                raise ValueError(f"bad escape {text[i:i + 3]!r}")
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(ord(c))
            i += 1
    return out.decode("utf-8")


def encode(frame: Frame) -> bytes:
    """Serialise one frame, checksum and CRLF included. Raises FrameError("too_long") over MAX_FRAME."""
    parts = [frame.type, str(frame.seq)]
    parts.extend(f"{key}={escape(value)}" for key, value in frame.fields.items())
    body = ",".join(parts).encode("ascii")
    data = b"$%s*%02X\r\n" % (body, checksum(body))
    if len(data) > MAX_FRAME:
        raise FrameError("too_long", f"{frame.type} frame is {len(data)} bytes, max {MAX_FRAME}")
    return data


def _parse_line(line: bytes) -> Frame | FrameError:
    """Parse one complete line starting with "$" and ending with "\\n"."""
    content = line[1:-1]
    if content.endswith(b"\r"):
        content = content[:-1]
    body, star, ck_text = content.rpartition(b"*")
    if not star or len(ck_text) != 2 or not all(b in _HEX for b in ck_text):
        return FrameError("syntax", "frame lacks a *CK checksum trailer", line)
    if int(ck_text, 16) != checksum(body):
        return FrameError(
            "checksum", f"checksum {ck_text.decode()} != {checksum(body):02X}", line
        )
    if any(b < 0x20 or b > 0x7E or b in b"$*" for b in body):
        return FrameError("syntax", "body holds a byte that must be escaped", line)
    type_, *rest = body.decode("ascii").split(",")
    if not rest or not _TYPE_RE.match(type_) or not _SEQ_RE.match(rest[0]):
        return FrameError("syntax", "body does not start with TYPE,SEQ", line)
    seq = int(rest[0])
    if seq > MAX_SEQ:
        return FrameError("syntax", f"seq {seq} outside 0..{MAX_SEQ}", line)
    fields: dict[str, str] = {}
    for item in rest[1:]:
        key, eq, value = item.partition("=")
        if not eq or not _KEY_RE.match(key) or key in fields:
            return FrameError("syntax", f"bad or repeated field {item[:40]!r} in {type_}", line)
        try:
            fields[key] = unescape(value)
        except ValueError as err:
            return FrameError("syntax", f"field {key} in {type_}: {err}", line)
    return Frame(type_, seq, fields)


def decode(buffer: bytes | bytearray) -> tuple[int, Frame | FrameError | None]:
    """Look at the start of ``buffer``; return (bytes consumed, what they were).

    (0, None) means "need more bytes". Garbage runs up to (not including) the next "$";
    a frame interrupted by a new "$" is a syntax error ending just before that "$";
    a frame with no "\\n" within MAX_FRAME bytes is too_long and runs to the next "$" (or the end
    of the buffer; the Decoder then drops the rest of that line as part of the same error).
    """
    if not buffer:
        return 0, None
    if buffer[0] != 0x24:  # "$"
        start = buffer.find(b"$")
        end = len(buffer) if start < 0 else start
        if not buffer[:end].strip(_IDLE):
            return end, None
        return end, FrameError("garbage", f"{end} bytes outside a frame", buffer[:end])
    newline = buffer.find(b"\n", 1, MAX_FRAME)
    restart = buffer.find(b"$", 1, MAX_FRAME if newline < 0 else newline)
    if restart > 0:
        return restart, FrameError("syntax", "frame cut short by a new '$'", buffer[:restart])
    if newline < 0:
        if len(buffer) < MAX_FRAME:
            return 0, None
        restart = buffer.find(b"$", 1)
        end = len(buffer) if restart < 0 else restart
        return end, FrameError("too_long", f"no line end within {MAX_FRAME} bytes", buffer[:end])
    return newline + 1, _parse_line(bytes(buffer[: newline + 1]))


class Decoder:
    """Incremental decoder: feed it whatever the transport delivered, get frames and errors in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        # True while dropping the tail of a stretch already reported (garbage or an over-long
        # line), so that one bad stretch split across reads counts once, not once per read.
        self._discarding = False
        self.errors: dict[str, int] = {}
        self.frames_ok = 0

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        """Consume ``data``; return the frames and errors it completed. Never raises."""
        self._buffer += data
        out: list[Frame | FrameError] = []
        while self._buffer:
            consumed, item = decode(self._buffer)
            if consumed == 0:
                break
            at_end = consumed == len(self._buffer)
            del self._buffer[:consumed]
            if isinstance(item, FrameError) and item.kind == "garbage" and self._discarding:
                item = None
            if isinstance(item, Frame):
                self.frames_ok += 1
                out.append(item)
            elif item is not None:
                self.errors[item.kind] = self.errors.get(item.kind, 0) + 1
                out.append(item)
            if isinstance(item, FrameError) and item.kind in ("garbage", "too_long"):
                self._discarding = at_end
            elif item is None:
                self._discarding = self._discarding and at_end
            else:
                self._discarding = False
        return out
