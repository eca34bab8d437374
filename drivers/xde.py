"""The ".xde" dual-energy container the simulator (and a scanner export folder) writes.

Layout, little endian: ``b"XDE1"``, ``u32 header_len``, ``header_len`` bytes of UTF-8 JSON
(``{"width": W, "height": H, "planes": ["high", "low"], "dtype": "uint16", ...metadata}``),
then the high plane, then the low plane, each ``W*H`` uint16 LE, row-major.

Planes hold transmissions scaled to 0..65535 (65535 = no attenuation, i.e. air).
The codec is pure: bytes in, arrays out. Every malformed input raises :class:`XdeError`.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

MAGIC = b"XDE1"
_PREFIX = struct.Struct("<4sI")
_MAX_HEADER = 1 << 20  # a header is a few hundred bytes; 1 MiB means a corrupt length
_RESERVED = ("width", "height", "planes", "dtype")


class XdeError(ValueError):
    """A byte string is not a valid .xde container; the message says what is wrong."""


def encode_xde(high: np.ndarray, low: np.ndarray, meta: dict[str, Any] | None = None) -> bytes:
    """Pack two equal-shape 2-D planes (cast to uint16) and JSON-able metadata into .xde bytes.

    Metadata keys ``width``, ``height``, ``planes`` and ``dtype`` are owned by the format and
    cannot be overridden.
    """
    if high.ndim != 2 or high.shape != low.shape:
        raise XdeError(f"planes must be 2-D and the same shape, got {high.shape} and {low.shape}")
    height, width = high.shape
    header: dict[str, Any] = {k: v for k, v in (meta or {}).items() if k not in _RESERVED}
    header.update(width=int(width), height=int(height), planes=["high", "low"], dtype="uint16")
    try:
        header_bytes = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise XdeError(f"metadata is not JSON-serialisable: {err}") from err
    parts = [_PREFIX.pack(MAGIC, len(header_bytes)), header_bytes]
    for plane in (high, low):
        parts.append(np.ascontiguousarray(plane, dtype="<u2").tobytes())
    return b"".join(parts)


def _parse_header(data: bytes) -> tuple[dict[str, Any], int]:
    """Return (header, offset of the first plane)."""
    if len(data) < _PREFIX.size:
        raise XdeError(f"truncated: expected at least {_PREFIX.size} bytes, got {len(data)}")
    magic, header_len = _PREFIX.unpack_from(data, 0)
    if magic != MAGIC:
        raise XdeError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if header_len > _MAX_HEADER:
        raise XdeError(f"header length {header_len} exceeds {_MAX_HEADER} bytes")
    end = _PREFIX.size + header_len
    if len(data) < end:
        raise XdeError(f"truncated header: expected {end} bytes, got {len(data)}")
    try:
        header = json.loads(data[_PREFIX.size : end].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise XdeError(f"header is not UTF-8 JSON: {err}") from err
    except RecursionError as err:
        raise XdeError("header is not JSON we read: nested too deeply") from err
    except ValueError as err:  # an integer of more digits than Python converts
        raise XdeError(f"header is not JSON we read: {err}") from err
    if not isinstance(header, dict):
        raise XdeError("header is not a JSON object")
    return header, end


def decode_xde(data: bytes, max_pixels: int = 50_000_000) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Unpack .xde bytes into (high, low, header): two uint16 HxW arrays and the header dict.

    Checks the declared size against ``max_pixels`` before touching the planes, and the byte
    count exactly (trailing bytes are an error too, as they mean a writer disagreed on size).
    The returned arrays are read-only views into ``data`` (no copy: a scan is decoded once per
    item, on the way to the detector); copy them to change them.
    """
    header, offset = _parse_header(data)
    width, height = header.get("width"), header.get("height")
    if not (isinstance(width, int) and isinstance(height, int)) or isinstance(width, bool) or isinstance(height, bool):
        raise XdeError(f"header width/height must be integers, got {width!r} x {height!r}")
    if width <= 0 or height <= 0:
        raise XdeError(f"header size must be positive, got {width} x {height}")
    if header.get("dtype") != "uint16":
        raise XdeError(f"unsupported dtype {header.get('dtype')!r}, expected 'uint16'")
    if header.get("planes") != ["high", "low"]:
        raise XdeError(f"unsupported planes {header.get('planes')!r}, expected ['high', 'low']")
    if width * height > max_pixels:
        raise XdeError(f"too many pixels: {width} x {height} = {width * height} exceeds {max_pixels}")
    plane_bytes = width * height * 2
    expected = offset + 2 * plane_bytes
    if len(data) != expected:
        kind = "truncated" if len(data) < expected else "trailing data"
        raise XdeError(f"{kind}: expected {expected} bytes, got {len(data)}")
    planes = np.frombuffer(data, dtype="<u2", count=2 * width * height, offset=offset).reshape(2, height, width)
    if planes.dtype != np.uint16:  # a big-endian host: convert to native order
        planes = planes.astype(np.uint16)
    return planes[0], planes[1], header
