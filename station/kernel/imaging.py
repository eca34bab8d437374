"""Image loading and rendering for the station.

``load_image`` accepts dual-energy scans (the simulator's .xde container, or a two-page 16-bit TIFF
of the high and low planes) and PNG, JPEG or TIFF images (8 or 16 bit, grey or pseudo-colour). It
sniffs the content, refuses a file whose extension lies, reads the declared width x height from the
header and refuses decompression bombs *before* decoding, and turns every failure into
:class:`ImageError` naming the file and the problem.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import cv2
import numpy as np

from drivers.xde import XdeError, decode_xde

_EXT_KIND = {".xde": "xde", ".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".tif": "tiff", ".tiff": "tiff"}
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageError(Exception):
    """An image file cannot be used; str() names the file and the problem."""


@dataclass(frozen=True)
class LoadedImage:
    """A decoded scan. ``plane`` is what the model view is made of: the uint16 transmission plane
    (65535 = air) of a dual-energy (its high plane) or 16-bit grey scan, else the uint8 grey image
    itself; ``high``/``low`` are a dual-energy scan's planes, else None."""

    path: str
    plane: np.ndarray
    kind: str  # "dual-energy" | "grey8" | "grey16" | "colour"
    high: np.ndarray | None = None
    low: np.ndarray | None = None

    @cached_property
    def gray(self) -> np.ndarray:
        """The model view at full size (uint8 HxW, 255 = air, dark = dense), for people and tools;
        the detector makes its own from ``plane`` at the network's size, which costs less."""
        return self.plane if self.plane.dtype == np.uint8 else gray_from_high(self.plane)


def transmission_view(plane: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Model view of a 16-bit transmission plane, 0..1 float32: ``T**0.75``, T = value / 65535.

    The mild gamma keeps thin metal visible while dense metal stays near black, so dual-energy
    scans look like single-energy greyscale scans (the detector is trained on this mapping).
    Computed as two square roots rather than a power, in place in ``out``."""
    t: np.ndarray = np.multiply(plane, np.float32(1.0 / 65535.0), out=out, dtype=np.float32, casting="unsafe")
    root = np.sqrt(t)
    np.sqrt(root, out=t)
    np.multiply(t, root, out=t)
    return t


def gray_from_high(high: np.ndarray) -> np.ndarray:
    """:func:`transmission_view` as uint8 grey 0..255, by a 64k lookup table built from it
    (``take`` is twice as fast as indexing)."""
    return np.take(_GRAY_OF_HIGH, high)


_GRAY_OF_HIGH = np.clip(255.0 * transmission_view(np.arange(65536, dtype=np.uint16)) + 0.5, 0, 255).astype(np.uint8)


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"XDE1"):
        return "xde"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return None


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise ValueError("PNG header (IHDR) missing or truncated")
    width, height = struct.unpack(">II", data[16:24])
    if b"IEND" not in data[-12:]:
        raise ValueError("PNG is truncated (no IEND chunk at the end)")
    return width, height


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        (seg_len,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
                raise ValueError("JPEG is truncated (no end-of-image marker)")
            return width, height
        i += 2 + seg_len
    raise ValueError("JPEG frame header (SOF) missing or truncated")


def _tiff_pages(data: bytes, most: int = 16) -> list[tuple[int, int]]:
    """Width and height of every page (IFD) of a TIFF, read from the directory chain."""
    endian = "<" if data[:2] == b"II" else ">"
    if len(data) < 8:
        raise ValueError("TIFF header truncated")
    (ifd,) = struct.unpack(endian + "I", data[4:8])
    if not ifd:
        raise ValueError("no page (the first directory's offset is 0)")
    pages: list[tuple[int, int]] = []
    while ifd:
        if len(pages) == most:
            raise ValueError(f"more than {most} pages")
        if ifd + 2 > len(data):
            raise ValueError(f"directory of page {len(pages) + 1} points past the end of the file")
        (count,) = struct.unpack(endian + "H", data[ifd : ifd + 2])
        dims: dict[int, int] = {}
        for k in range(count):
            off = ifd + 2 + 12 * k
            if off + 12 > len(data):
                raise ValueError(f"directory of page {len(pages) + 1} truncated")
            tag, typ = struct.unpack(endian + "HH", data[off : off + 4])
            if tag in dims:  # libtiff decodes the first of two; the check must judge the same one
                raise ValueError(f"page {len(pages) + 1} gives its {'width' if tag == 256 else 'length'} twice")
            if tag in (256, 257):
                fmt = endian + ("H" if typ == 3 else "I")
                dims[tag] = struct.unpack(fmt, data[off + 8 : off + 8 + struct.calcsize(fmt)])[0]
        if 256 not in dims or 257 not in dims:
            raise ValueError(f"page {len(pages) + 1} has no width/length tags")
        pages.append((dims[256], dims[257]))
        next_at = ifd + 2 + 12 * count
        if next_at + 4 > len(data):
            raise ValueError(f"directory of page {len(pages)} truncated")
        (ifd,) = struct.unpack(endian + "I", data[next_at : next_at + 4])
    return pages


def _to_plane(img: np.ndarray) -> tuple[np.ndarray, str]:
    """A decoded image's model-view source and kind: uint8 grey, or a 16-bit grey image as a
    transmission plane (12-bit detector data scaled to 16 bits)."""
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3:
        colour = img[:, :, :3]
        spread = int(np.abs(colour.astype(np.int32) - colour[:, :, :1]).max())
        tol = 2 if img.dtype == np.uint8 else 2 * 257
        kind = "grey8" if spread <= tol else "colour"  # greyscale stored as 3 channels (GDXray)
        if img.dtype == np.uint16:
            kind = "grey16" if kind == "grey8" else kind
        gray = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    elif img.ndim == 2:
        gray = img
        kind = "grey16" if img.dtype == np.uint16 else "grey8"
    else:
        raise ValueError(f"unsupported layout {img.shape}")
    if gray.dtype == np.uint16:
        if kind == "grey16" and int(gray.max()) <= 4095:  # 12-bit detector data in 16-bit words
            gray = (gray.astype(np.uint32) * 16).astype(np.uint16)
        return (np.ascontiguousarray(gray) if kind == "grey16" else (gray // 257).astype(np.uint8)), kind
    if gray.dtype != np.uint8:
        raise ValueError(f"unsupported sample type {gray.dtype}")
    return np.ascontiguousarray(gray), kind


def load_image(path: str | Path, max_pixels: int = 50_000_000, data: bytes | None = None) -> LoadedImage:
    """Load a scan for the detector and the console (``data``: the file's bytes, when the caller
    has already read them). Raises ImageError, and nothing else, for unreadable, empty,
    truncated, mislabelled, undecodable or oversized files."""
    p = Path(path)
    want = _EXT_KIND.get(p.suffix.lower())
    if want is None:
        raise ImageError(f"{p}: unsupported extension {p.suffix!r} (expected .xde, .png, .jpg, .tif)")
    if data is None:
        try:
            data = p.read_bytes()
        except OSError as err:
            raise ImageError(f"{p}: cannot read: {err}") from err
    if not data:
        raise ImageError(f"{p}: empty file (0 bytes)")
    got = _sniff(data)
    if got is None:
        raise ImageError(f"{p}: not an image (unrecognised content, first bytes {data[:8]!r})")
    if got != want:
        raise ImageError(f"{p}: extension says {want} but the content is {got}")
    if got == "xde":
        try:
            high, low, _ = decode_xde(data, max_pixels)
        except XdeError as err:
            raise ImageError(f"{p}: bad dual-energy file: {err}") from err
        return LoadedImage(str(p), high, "dual-energy", high, low)
    try:
        pages = _tiff_pages(data) if got == "tiff" else [{"png": _png_size, "jpeg": _jpeg_size}[got](data)]
    except (ValueError, struct.error) as err:
        raise ImageError(f"{p}: bad {got} header: {err}") from err
    for width, height in pages:
        if width <= 0 or height <= 0:
            raise ImageError(f"{p}: {got} header declares an empty image {width} x {height}")
        if width * height * len(pages) > max_pixels:
            raise ImageError(f"{p}: too many pixels: {len(pages)} x {width} x {height} = {width * height * len(pages)} "
                             f"exceeds {max_pixels} (decompression bomb?)")
    if len(pages) == 2:
        return _dual_energy_tiff(p, data, pages)
    if len(pages) > 2:
        raise ImageError(f"{p}: TIFF has {len(pages)} pages; expected 1 (an image) or 2 (high- and low-energy planes)")
    width, height = pages[0]
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ImageError(f"{p}: {got} cannot be decoded: {err}") from err
    if img is None or img.size == 0:
        raise ImageError(f"{p}: {got} cannot be decoded (corrupt or truncated)")
    if img.shape[0] != height or img.shape[1] != width:
        raise ImageError(f"{p}: decoded size {img.shape[1]} x {img.shape[0]} differs from the header's "
                         f"{width} x {height}")
    try:
        plane, kind = _to_plane(img)
    except (ValueError, cv2.error) as err:
        raise ImageError(f"{p}: {got} {err}") from err
    return LoadedImage(str(p), plane, kind)


def _dual_energy_tiff(p: Path, data: bytes, pages: list[tuple[int, int]]) -> LoadedImage:
    """Two 16-bit grey pages of one size: the high- and low-energy transmission planes, in either
    order (the low-energy plane is the darker one: every material attenuates more at low energy)."""
    if pages[0] != pages[1]:
        raise ImageError(f"{p}: two-page TIFF with pages of different sizes {pages[0]} and {pages[1]}; "
                         "expected high and low planes of one scan")
    try:
        ok, planes = cv2.imdecodemulti(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ImageError(f"{p}: tiff cannot be decoded: {err}") from err
    if not ok or len(planes) != 2:
        raise ImageError(f"{p}: tiff cannot be decoded (corrupt or truncated)")
    for k, plane in enumerate(planes, 1):
        if plane.dtype != np.uint16 or plane.ndim != 2:
            raise ImageError(f"{p}: page {k} is {plane.dtype} with shape {plane.shape}; "
                             "a dual-energy TIFF has two 16-bit grey pages")
    a, b = planes
    high, low = (a, b) if float(a.mean()) >= float(b.mean()) else (b, a)
    return LoadedImage(str(p), high, "dual-energy", high, low)


_PALETTE = np.array([(0, 140, 255), (40, 180, 0), (255, 90, 0)], np.float32)  # organic, mixed, metal (BGR)


def material_classes(high: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(th, mixed, metal)``: the high plane's transmission (float32, 1e-5..1) and the masks of
    mixed / light metal and of metal, from the ratio of low- to high-energy attenuation; every
    other pixel is organic (or air). The one classification that rendering and stripping share."""
    th = np.clip(high.astype(np.float32) / 65535.0, 1e-5, 1.0)
    tl = np.clip(low.astype(np.float32) / 65535.0, 1e-5, 1.0)
    ah = cv2.GaussianBlur(-np.log(th), (0, 0), 1.0)
    al = cv2.GaussianBlur(-np.log(tl), (0, 0), 1.0)
    ratio = al / np.maximum(ah, 1e-3)
    saturated_low = tl < 2e-3  # low plane at the noise floor: the ratio understates metal
    metal = (ratio >= 3.6) | (saturated_low & (th > 0.01))
    mixed = ~metal & (ratio >= 2.0)
    return th, mixed, metal


@functools.cache  # two threads may both build it on the first render: the same table, so harmless
def _material_table() -> np.ndarray:
    """Every colour :func:`material_colours` can give, row ``65536 * class + high`` (class 0
    organic, 1 mixed, 2 metal): the colour depends on nothing else, so 3 x 65536 rows computed
    once replace the float arithmetic on every pixel. The formula, in float32 as it always was:
    the thicker the object, the more of its colour and the darker; what lets less than 1 %
    through is black (impenetrable: the operator must open it)."""
    th = np.clip(np.arange(65536, dtype=np.float32) / 65535.0, 1e-5, 1.0)
    amount = np.clip((1.0 - th) * 3.0, 0.0, 1.0)[..., None]
    shade = np.clip(np.power(th, 0.35) * 1.2, 0.25, 1.0)[..., None]
    out: np.ndarray = 255.0 * (1.0 - amount) + _PALETTE[:, None, :] * amount * shade
    out[:, th < 0.01] = 0.0
    return np.clip(out + 0.5, 0, 255).astype(np.uint8).reshape(-1, 3)


def material_colours(high: np.ndarray, mixed: np.ndarray, metal: np.ndarray) -> np.ndarray:
    """:func:`render_material` of the uint16 plane ``high`` from the masks that
    :func:`material_classes` made of it, bit for bit; a new BGR uint8 array the caller may write to."""
    row = np.left_shift(metal, 17, dtype=np.int32)  # 2 * 65536 for metal (mixed excludes metal)
    row |= np.left_shift(mixed, 16, dtype=np.int32)
    row |= high
    colours: np.ndarray = np.take(_material_table(), row, axis=0)  # take: 2.5x faster than indexing
    return colours


def render_material(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Operators' pseudo-colour (BGR uint8): orange organic, green mixed / light metal, blue
    metal, black impenetrable, from the ratio of low- to high-energy attenuation; the thicker
    the object, the deeper and darker the colour; air stays white."""
    _, mixed, metal = material_classes(high, low)
    return material_colours(high, mixed, metal)


def render_scan(image: LoadedImage,
                boxes: Sequence[tuple[str, float, tuple[float, float, float, float], bool]] = ()) -> np.ndarray:
    """What the operator looks at (BGR uint8): material colours for a dual-energy scan, the grey
    image otherwise, with each (label, score, box, threat) drawn on it, threats in red."""
    if image.high is not None and image.low is not None:
        out = render_material(image.high, image.low)
    else:
        out = cv2.cvtColor(image.gray, cv2.COLOR_GRAY2BGR)
    thick = max(1, round(max(out.shape[:2]) / 400))
    for label, score, (x1, y1, x2, y2), threat in boxes:
        colour = (0, 0, 230) if threat else (0, 170, 0)
        cv2.rectangle(out, (int(x1), int(y1)), (int(x2), int(y2)), colour, thick)
        cv2.putText(out, f"{label} {score:.2f}", (int(x1), max(int(y1) - 4, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thick, colour, thick)
    return out
