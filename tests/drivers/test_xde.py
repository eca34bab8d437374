"""The .xde codec: round trips, every truncation, bad magic, oversize."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from drivers.xde import XdeError, decode_xde, encode_xde


@st.composite
def plane_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    planes = arrays(np.uint16, (h, w))
    return draw(planes), draw(planes)


@settings(max_examples=100, deadline=None)
@given(plane_pairs(), st.dictionaries(st.text(min_size=1, max_size=8), st.integers() | st.text(max_size=8), max_size=3))
def test_round_trip_keeps_planes_and_metadata(pair: tuple[np.ndarray, np.ndarray], meta: dict) -> None:
    high, low = pair
    out_high, out_low, header = decode_xde(encode_xde(high, low, meta))
    assert out_high.dtype == np.uint16 and out_low.dtype == np.uint16
    np.testing.assert_array_equal(out_high, high)
    np.testing.assert_array_equal(out_low, low)
    assert header["width"] == high.shape[1] and header["height"] == high.shape[0]
    for key, value in meta.items():
        if key not in ("width", "height", "planes", "dtype"):
            assert header[key] == value


def test_every_truncation_raises_xde_error() -> None:
    rng = np.random.default_rng(0)
    data = encode_xde(rng.integers(0, 65535, (5, 7), dtype=np.uint16), rng.integers(0, 65535, (5, 7), dtype=np.uint16), {"item": "RR123456785GB"})
    for n in range(len(data)):
        with pytest.raises(XdeError):
            decode_xde(data[:n])


def test_truncated_plane_message_names_sizes() -> None:
    data = encode_xde(np.zeros((4, 4), np.uint16), np.zeros((4, 4), np.uint16))
    with pytest.raises(XdeError, match=rf"truncated: expected {len(data)} bytes, got {len(data) - 3}"):
        decode_xde(data[:-3])


def test_bad_magic() -> None:
    data = encode_xde(np.zeros((2, 2), np.uint16), np.zeros((2, 2), np.uint16))
    with pytest.raises(XdeError, match="bad magic"):
        decode_xde(b"PNG1" + data[4:])


def test_too_many_pixels_is_refused_before_reading_planes() -> None:
    header = json.dumps({"width": 60000, "height": 60000, "planes": ["high", "low"], "dtype": "uint16"}).encode()
    with pytest.raises(XdeError, match="too many pixels"):
        decode_xde(b"XDE1" + struct.pack("<I", len(header)) + header)


def test_header_that_is_not_json() -> None:
    with pytest.raises(XdeError, match="header"):
        decode_xde(b"XDE1" + struct.pack("<I", 4) + b"\xff{[}")


def test_mismatched_planes_refused() -> None:
    with pytest.raises(XdeError, match="same shape"):
        encode_xde(np.zeros((2, 3), np.uint16), np.zeros((3, 2), np.uint16))
