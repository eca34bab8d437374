"""Image files: a scan the scanner (or whoever can write its export folder) leaves in the spool, through
`station.inference.detect_file` (the inference worker's job: `spool.read_spool_file`, the SHA-256 check,
`kernel.imaging.load_image`, then the detector, here a stand-in that only looks at the plane it gets).

The contract (station/spool.py, station/kernel/imaging.py, drivers/xde.py): a file that cannot be used is
InferenceProblem(IMAGE_ERROR) naming the file, never another exception; a link, FIFO or directory is refused
without being opened for reading; a header that declares more than `max_pixels` is refused before any plane
is decoded, so no file makes the station allocate much (checked: the decode runs under an address-space
limit 768 MiB above what the process holds, and an allocation that fails there is a finding too).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from drivers.xde import encode_xde
from station.inference import InferenceProblem, detect_file
from station.kernel.detector import Detector
from station.kernel.imaging import _tiff_pages
from tests.fuzz.harness import budget, fuzzes, mutated

INPUT = "image files"

MAX_BYTES = 4 * 1024 * 1024  # the spool's limit here ([scanner] max_image_mb)
HEADROOM = 768 * 1024 * 1024  # what a decode may allocate: 50 M pixels of uint16 are 100 MB
SUFFIXES = [".xde", ".png", ".jpg", ".tif", ".tiff", ".PNG", ".bmp", ""]


class Looker:
    """The detector's place: records the plane it is given, finds nothing."""

    def __init__(self) -> None:
        self.planes: list[np.ndarray] = []

    def detect(self, plane: np.ndarray) -> list[Any]:
        self.planes.append(plane)
        return []

    def is_threat(self, found: object) -> bool:
        return False


# ---- files ------------------------------------------------------------------------------------------


def tiff(entries: list[tuple[int, int, int, int]], pixels: bytes) -> bytes:
    """A little-endian one-page TIFF with these directory entries (tag, type, count, value) in this order;
    the value -1 is the offset of `pixels`, which follow the directory."""
    at = 8 + 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<IH", 8, len(entries)))
    for tag, typ, count, value in entries:
        value = at if value == -1 else value
        out += struct.pack("<HHIHH" if typ == 3 else "<HHII", tag, typ, count, *((value, 0) if typ == 3 else (value,)))
    return bytes(out + struct.pack("<I", 0) + pixels)


def grey_tiff(width: int, height: int, *, first: tuple[tuple[int, int], ...] = (),
              pixels: bytes | None = None) -> bytes:
    """An uncompressed 8-bit grey TIFF; `first`: (tag, value) entries put before the real ones."""
    data = b"\x80" * (width * height) if pixels is None else pixels
    return tiff([*((tag, 4, 1, v) for tag, v in first), (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8),
                 (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, -1), (277, 3, 1, 1), (278, 4, 1, height),
                 (279, 4, 1, len(data))], data)


def xde_header(**header: object) -> bytes:
    text = json.dumps({"width": 2, "height": 2, "planes": ["high", "low"], "dtype": "uint16", **header}).encode()
    return b"XDE1" + struct.pack("<I", len(text)) + text + b"\x00" * 16


@st.composite
def scans(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid scan of each kind the station reads, small: (its suffix, its bytes)."""
    h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["xde", "png8", "png16", "png-colour", "jpg", "tif16", "tif-dual"]))
    if kind == "xde":
        planes = rng.integers(0, 65535, (2, h, w), dtype=np.uint16)
        return ".xde", encode_xde(planes[0], planes[1], {"scan": "S1"})
    if kind == "tif-dual":
        planes = rng.integers(0, 65535, (2, h, w), dtype=np.uint16)
        ok, data = cv2.imencodemulti(".tiff", [planes[0], planes[1]])
        assert ok
        return ".tif", data.tobytes()
    wide = kind in ("png16", "tif16")
    shape = (h, w, 3) if kind == "png-colour" else (h, w)
    image: np.ndarray = rng.integers(0, 65535 if wide else 255, shape, dtype=np.uint16 if wide else np.uint8)
    suffix = {"png8": ".png", "png16": ".png", "png-colour": ".png", "jpg": ".jpg", "tif16": ".tif"}[kind]
    ok, data = cv2.imencode(suffix, image)
    assert ok
    return suffix, data.tobytes()


def bigger(suffix: str, data: bytes, width: int, height: int) -> bytes:
    """The scan with its header claiming another size (the checksums, where there are any, left as they were)."""
    if suffix == ".png" and len(data) >= 24:
        return data[:16] + struct.pack(">II", width % 2**32, height % 2**32) + data[24:]
    if suffix == ".jpg":
        at = next((m.start() for m in re.finditer(rb"\xff[\xc0\xc2]", data)), None)
        if at is not None:
            return data[:at + 5] + struct.pack(">HH", height % 2**16, width % 2**16) + data[at + 9:]
    if suffix == ".xde":
        return xde_header(width=width, height=height)
    return grey_tiff(width % 2**32, height % 2**32, pixels=b"\x80" * 16)


def huge_width() -> bytes:
    """An .xde header whose width has 5000 digits (more than Python converts to an int)."""
    text = b'{"width": ' + b"9" * 5000 + b', "height": 2, "planes": ["high", "low"], "dtype": "uint16"}'
    return b"XDE1" + struct.pack("<I", len(text)) + text


@st.composite
def crafted_tiffs(draw: st.DrawFn) -> bytes:
    """A grey TIFF page whose size tags are written every way a forger might: any type, count, order, twice."""
    w, h = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    big = draw(st.sampled_from([30000, 65535, 100_000, 2**31]))
    size_tags = [(256, draw(st.sampled_from([1, 3, 4, 8, 9, 16])), draw(st.sampled_from([1, 1, 2])),
                  draw(st.sampled_from([w, big]))),
                 (257, draw(st.sampled_from([1, 3, 4, 8, 9, 16])), draw(st.sampled_from([1, 1, 2])),
                  draw(st.sampled_from([h, big])))]
    size_tags += draw(st.lists(st.sampled_from(size_tags), max_size=2))
    rest = [(258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, -1), (277, 3, 1, 1), (278, 4, 1, h),
            (279, 4, 1, w * h)]
    entries = draw(st.permutations(size_tags + rest))
    return tiff([(t, y, c, v % 2**16 if y in (3, 8) else v % 2**32) for t, y, c, v in entries], b"\x80" * (w * h))


sizes = st.sampled_from([0, 1, 2**15, 65535, 100_000, 2**31 - 1, 2**32 - 1, 50_000_000])
files = st.one_of(
    scans(),
    scans().flatmap(lambda scan: st.tuples(st.just(scan[0]), mutated(scan[1], most=6))),
    scans().flatmap(lambda scan: st.tuples(st.just(scan[0]), st.integers(0, len(scan[1])).map(lambda n: scan[1][:n]))),
    st.builds(lambda scan, w, h: (scan[0], bigger(scan[0], scan[1], w, h)), scans(), sizes, sizes),
    st.tuples(st.sampled_from(SUFFIXES), st.binary(max_size=300)),
    st.tuples(st.just(".tif"), crafted_tiffs()),
    st.tuples(st.just(".tif"), crafted_tiffs().flatmap(lambda t: mutated(t, most=3))),
    st.tuples(st.just(".xde"), st.builds(lambda k, v: xde_header(**{k: v}), st.sampled_from(["width", "height", "dtype",
                                                                                             "planes"]),
                                         st.sampled_from([-1, 0, 1.5, "10", True, None, [2], 10**30, 2**63]))),
    st.tuples(st.just(".xde"), st.sampled_from([b"XDE1" + struct.pack("<I", 2**32 - 1), b"XDE1\x05\x00\x00\x00[[[[[",
                                                b"XDE1" + struct.pack("<I", 100_000) + b"[" * 100_000])),
)


@contextmanager
def address_space_limit(headroom: int) -> Iterator[None]:
    """No allocation above `headroom` more than the process holds now may succeed, while inside."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    held = int(re.search(r"VmSize:\s+(\d+) kB", Path("/proc/self/status").read_text())[1]) * 1024  # type: ignore[index]
    limit = held + headroom if hard == resource.RLIM_INFINITY else min(hard, held + headroom)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def assert_refused_or_loaded(path: Path, data: bytes | None, *, hashed: bool) -> None:
    looker = Looker()
    sha = hashlib.sha256(data).hexdigest() if hashed and data is not None else None
    with address_space_limit(HEADROOM):
        try:
            detect_file(cast(Detector, looker), path, sha, max_image_bytes=MAX_BYTES)
        except InferenceProblem as problem:
            assert problem.reason.code == "IMAGE_ERROR"
            assert str(path) in problem.reason.detail
            assert not re.search(r"(?i)alloc|memory", problem.reason.detail), problem.reason.detail
            assert looker.planes == []
            return
    (plane,) = looker.planes
    assert plane.ndim == 2 and plane.dtype in (np.uint8, np.uint16) and 0 < plane.size <= 50_000_000
    assert path.suffix.lower() in (".xde", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


@budget(400)
@given(files, st.booleans())
@example((".tif", grey_tiff(4, 3, first=((256, 30000), (257, 30000)))), False)  # finding 9
@example((".xde", b"XDE1" + struct.pack("<I", 100_000) + b"[" * 100_000), False)  # finding 10
@example((".xde", huge_width()), False)
@example((".png", b""), False)
@example((".tif", b"II*\x00\x00\x00\x00\x00"), False)  # finding 11: no page at all
@fuzzes(INPUT)
def test_a_spooled_scan_is_detected_or_an_image_error_naming_it(
        tmp_path_factory: pytest.TempPathFactory, file: tuple[str, bytes], hashed: bool) -> None:
    suffix, data = file
    path = tmp_path_factory.mktemp("spool") / f"S1{suffix}"
    path.write_bytes(data)
    assert_refused_or_loaded(path, data, hashed=hashed)


@budget(40)
@given(st.sampled_from(["symlink", "fifo", "directory", "missing", "over the limit", "sparse", "empty"]),
       st.sampled_from([".xde", ".png", ".tif"]))
@fuzzes(INPUT)
def test_what_is_not_a_regular_file_of_a_sane_size_is_refused_unread(
        tmp_path_factory: pytest.TempPathFactory, kind: str, suffix: str) -> None:
    folder = tmp_path_factory.mktemp("spool")
    path = folder / f"S1{suffix}"
    if kind == "symlink":
        (folder / "real").write_bytes(b"XDE1")
        path.symlink_to(folder / "real")
    elif kind == "fifo":
        os.mkfifo(path)  # opened for reading without a writer, it would block the worker for good
    elif kind == "directory":
        path.mkdir()
    elif kind == "over the limit":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * MAX_BYTES)
    elif kind == "sparse":
        with path.open("wb") as f:
            f.truncate(2**40)  # a terabyte that takes no disk
    elif kind == "empty":
        path.write_bytes(b"")
    with pytest.raises(InferenceProblem) as caught:
        detect_file(cast(Detector, Looker()), path, None, max_image_bytes=MAX_BYTES)
    assert caught.value.reason.code == "IMAGE_ERROR" and str(path) in caught.value.reason.detail


def test_the_tiff_page_size_is_the_one_libtiff_decodes() -> None:
    """finding 9: with the width and length given twice, libtiff takes the first; the pixel check read the
    last, so a 30000 x 30000 page passed as 4 x 3 and was allocated before the decode failed."""
    data = grey_tiff(4, 3, first=((256, 30000), (257, 30000)))
    with pytest.raises(ValueError, match="twice"):
        _tiff_pages(data)
