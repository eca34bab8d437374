"""The operator console's image tools, on the server: a stored scan drawn for one :class:`View`.

A View is what the operator's keys (:data:`TOOLS`) have set; it travels as URL query parameters and
its canonical query string goes into the cache key. Zoom, pan and the detector's boxes are drawn by
the browser, not here. Pure: nothing here reads a file or knows the lane.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, fields, replace
from typing import NamedTuple
from urllib.parse import urlencode

import cv2
import numpy as np

from station.kernel.imaging import LoadedImage, gray_from_high, material_classes, material_colours, render_material

_STEPS = range(-3, 4)
_STEP_FACTOR = 1.25  # one contrast or gamma step
_CHOICES = {"strip": ("none", "organic", "inorganic"), "penetration": ("normal", "high", "low"),
            "colour": ("material", "grey", "pseudo")}
_FLAGS = ("negative", "edges")
_BOOL = {"0": False, "false": False, "1": True, "true": True}


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class ViewError(ValueError):
    """A view or encoding parameter that cannot be used; str() names it and the allowed values."""


@dataclass(frozen=True)
class View:
    """One way of looking at a scan; the defaults are the standard view. Invalid values raise
    :class:`ViewError` at construction, so a View that exists can always be rendered."""

    negative: bool = False
    contrast: int = 0  # steps: a stretch around mid grey by 1.25**step
    gamma: int = 0  # steps: exponent 1 / 1.25**step, so a positive step brightens dark detail
    edges: bool = False  # unsharp mask
    strip: str = "none"  # "organic": hide organic matter; "inorganic": hide all but organic (dual energy)
    penetration: str = "normal"  # "high" / "low": that energy's plane alone, in grey (dual energy)
    colour: str = "material"  # "material" (grey unless dual energy), "grey", "pseudo" (a false-colour LUT)

    def __post_init__(self) -> None:
        for name in _FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise ViewError(f"{name}={_shown(getattr(self, name))}: expected 0 or 1")
        for name in ("contrast", "gamma"):
            if type(getattr(self, name)) is not int or getattr(self, name) not in _STEPS:
                raise ViewError(f"{name}={_shown(getattr(self, name))}: expected an integer step from -3 to 3")
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ViewError(f"{name}={_shown(getattr(self, name))}: expected one of {', '.join(allowed)}")

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> View:
        """The view that URL query parameters name; a missing parameter keeps its default. Raises
        ViewError, and nothing else, for an unknown name or a value that is not allowed."""
        unknown = sorted(_shown(name) for name in query if name not in _STANDARD)
        if unknown:
            more = f" and {len(unknown) - 3} more" if len(unknown) > 3 else ""
            raise ViewError(f"unknown view parameter {', '.join(unknown[:3])}{more}: "
                            f"expected {', '.join(sorted(_STANDARD))}")
        values: dict[str, bool | int | str] = {}
        for name, raw in query.items():
            if name in _FLAGS:
                if raw.lower() not in _BOOL:
                    raise ViewError(f"{name}={_shown(raw)}: expected 0 or 1 (or false, true)")
                values[name] = _BOOL[raw.lower()]
            elif name in _CHOICES:
                values[name] = raw  # checked by __post_init__
            elif re.fullmatch(r"[+-]?0*[0-3]", raw, re.ASCII):
                values[name] = int(raw)
            else:
                raise ViewError(f"{name}={_shown(raw)}: expected an integer step from -3 to 3")
        return cls(**values)  # type: ignore[arg-type]

    def query(self) -> str:
        """The canonical query string: the values that differ from the standard view, sorted by
        name ("" for the standard view); ``View.parse(dict(parse_qsl(v.query()))) == v``."""
        values = {name: getattr(self, name) for name in sorted(_STANDARD)}
        return urlencode([(k, int(v) if isinstance(v, bool) else v) for k, v in values.items() if v != _STANDARD[k]])

    def usable_on(self, kind: str) -> View:
        """The view a scan of this ``kind`` really shows: on a scan that is not dual energy the
        dual-energy tools are off and "grey" is "material", so one picture has one cache key."""
        if kind == "dual-energy":
            return self
        return replace(self, strip="none", penetration="normal",
                       colour="material" if self.colour == "grey" else self.colour)

    def press(self, key: str) -> View:
        """The view after the operator presses one of :data:`TOOLS`' keys (either case): steps stop
        at their ends, O and I toggle their strip, P and V cycle; any other key changes nothing."""
        change = _PRESS.get(key.upper())
        return change(self) if change is not None else self


_STANDARD = {f.name: f.default for f in fields(View)}


class Tool(NamedTuple):
    """One key of the console's help overlay."""

    key: str
    parameter: str
    description: str
    dual_energy_only: bool


TOOLS: tuple[Tool, ...] = (
    Tool("N", "negative", "negative: invert the picture", False),
    Tool("K", "contrast", "contrast down one step", False),
    Tool("L", "contrast", "contrast up one step", False),
    Tool("G", "gamma", "gamma down one step: darker dark detail", False),
    Tool("H", "gamma", "gamma up one step: brighter dark detail", False),
    Tool("E", "edges", "edge enhancement: crisper outlines", False),
    Tool("O", "strip", "organic strip: hide organic matter, show inorganic and metal only", True),
    Tool("I", "strip", "inorganic strip: hide inorganic and metal, show organic only", True),
    Tool("P", "penetration", "penetration: normal, high (see through dense objects), low (thin organics)", True),
    Tool("V", "colour", "colour: material, grey, pseudo-colour", False),
)


def _next(name: str, value: str) -> str:
    allowed = _CHOICES[name]
    return allowed[(allowed.index(value) + 1) % len(allowed)]


_PRESS: dict[str, Callable[[View], View]] = {
    "N": lambda v: replace(v, negative=not v.negative),
    "K": lambda v: replace(v, contrast=max(-3, v.contrast - 1)),
    "L": lambda v: replace(v, contrast=min(3, v.contrast + 1)),
    "G": lambda v: replace(v, gamma=max(-3, v.gamma - 1)),
    "H": lambda v: replace(v, gamma=min(3, v.gamma + 1)),
    "E": lambda v: replace(v, edges=not v.edges),
    "O": lambda v: replace(v, strip="none" if v.strip == "organic" else "organic"),
    "I": lambda v: replace(v, strip="none" if v.strip == "inorganic" else "inorganic"),
    "P": lambda v: replace(v, penetration=_next("penetration", v.penetration)),
    "V": lambda v: replace(v, colour=_next("colour", v.colour)),
}

# High penetration: the high plane on a log scale down to T = 1e-4, so the grey steps go to the
# dense end, where the standard view (T**0.75) is nearly black.
_LOG_OF_HIGH = np.clip(255.0 * (1.0 + np.log(np.maximum(np.arange(65536) / 65535.0, 1e-4)) / np.log(1e4)) + 0.5,
                       0, 255).astype(np.uint8)


def _fit(plane: np.ndarray, max_side: int) -> np.ndarray:
    height, width = plane.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1.0:
        return plane
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(plane, size, interpolation=cv2.INTER_AREA)


def _grey_plane(high: np.ndarray, low: np.ndarray, penetration: str) -> np.ndarray:
    if penetration == "high":
        return np.take(_LOG_OF_HIGH, high)
    return gray_from_high(low if penetration == "low" else high)


def _dual_energy(high: np.ndarray, low: np.ndarray, view: View) -> np.ndarray:
    """The chosen plane (grey uint8) or the material colours (BGR), with the stripped matter as air."""
    material = view.penetration == "normal" and view.colour == "material"
    if view.strip == "none":
        return render_material(high, low) if material else _grey_plane(high, low, view.penetration)
    th, mixed, metal = material_classes(high, low)  # once, for both the colours and the strip
    out = material_colours(high, mixed, metal) if material else _grey_plane(high, low, view.penetration)
    inorganic = mixed | metal
    hidden = ~inorganic if view.strip == "organic" else inorganic
    air = hidden & (th >= 0.01)  # what nothing gets through stays black: it must be opened
    for channel in np.moveaxis(np.atleast_3d(out), 2, 0):  # views of out; one channel at a time is
        channel[air] = 255  # 7x faster than out[air] = 255 across the BGR axis
    return out


def _tone_curve(contrast: int, gamma: int) -> np.ndarray:
    x = np.arange(256) / 255.0
    y = 0.5 + (x ** (1.0 / _STEP_FACTOR**gamma) - 0.5) * _STEP_FACTOR**contrast
    return np.clip(255.0 * y + 0.5, 0, 255).astype(np.uint8)


def render_view(image: LoadedImage, view: View, max_side: int = 2048) -> np.ndarray:
    """The scan as ``view`` shows it (BGR uint8), its longer side at most ``max_side``. The scan
    is shrunk first (INTER_AREA), then: plane and strip, colour, contrast and gamma, edges,
    negative. The standard view is exactly :func:`render_scan` of the shrunk scan, without boxes."""
    if max_side < 1:
        raise ViewError(f"max_side={max_side!r}: expected a positive number of pixels")
    view = view.usable_on(image.kind)
    if image.high is not None and image.low is not None:
        out = _dual_energy(_fit(image.high, max_side), _fit(image.low, max_side), view)
    else:
        out = _fit(image.gray, max_side)
    if out.ndim == 2:  # inferno: dense stays dark and air light, as operators read X-rays, and its
        # lightness rises evenly, so unlike jet it draws no edges of its own
        out = cv2.applyColorMap(out, cv2.COLORMAP_INFERNO) if view.colour == "pseudo" else \
            cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
    if view.contrast or view.gamma:
        out = cv2.LUT(out, _tone_curve(view.contrast, view.gamma))
    if view.edges:
        out = cv2.addWeighted(out, 2.5, cv2.GaussianBlur(out, (0, 0), 2.0), -1.5, 0)  # unsharp mask
    if view.negative:
        out = cv2.bitwise_not(out)
    return np.ascontiguousarray(out)


def encode(img: np.ndarray, fmt: str = "webp", quality: int = 85) -> bytes:
    """``img`` as WebP (lossy at ``quality`` 1..100) or PNG (lossless; fast compression, and
    ``quality`` is not used). Raises ViewError for another format or quality, or an image that
    OpenCV cannot encode."""
    if fmt not in ("webp", "png"):
        raise ViewError(f"fmt={_shown(fmt)}: expected one of webp, png")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ViewError(f"quality={_shown(quality)}: expected an integer from 1 to 100")
    params = [cv2.IMWRITE_WEBP_QUALITY, quality] if fmt == "webp" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    try:
        ok, buf = cv2.imencode(f".{fmt}", img, params)
    except cv2.error as err:
        raise ViewError(f"cannot encode a {img.dtype} image of shape {img.shape} as {fmt}: {err}") from err
    if not ok:
        raise ViewError(f"cannot encode a {img.dtype} image of shape {img.shape} as {fmt}")
    return bytes(buf.tobytes())


class RenderCache:
    """A thread-safe LRU of encoded images, bounded by their total size in bytes. Keys are the
    caller's (any hashable: path, mtime, size, view query, format). An image larger than the
    whole cache is returned but not kept."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self.size = 0  # bytes kept
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._rendering: dict[Hashable, threading.Lock] = {}  # one per key being made

    def _take(self, key: Hashable) -> bytes | None:
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
            return data

    def _count(self, hit: bool) -> None:
        with self._lock:
            self.hits += hit
            self.misses += not hit

    def get(self, key: Hashable) -> bytes | None:
        """The bytes kept for ``key`` (now the most recently used), counted as a hit or a miss."""
        data = self._take(key)
        self._count(data is not None)
        return data

    def put(self, key: Hashable, data: bytes) -> None:
        """Keep ``data`` for ``key``, dropping the least recently used entries to stay in bounds."""
        with self._lock:
            old = self._entries.pop(key, None)
            self.size -= len(old) if old is not None else 0
            if len(data) > self.max_bytes:
                return
            self._entries[key] = data
            self.size += len(data)
            while self.size > self.max_bytes:
                self.size -= len(self._entries.popitem(last=False)[1])

    def get_or_render(self, key: Hashable, make: Callable[[], bytes]) -> tuple[bytes, bool]:
        """``(bytes, hit)``: the kept bytes, or ``make()``'s, now kept. A thread asking for a key
        that another is making waits for it rather than making it again; ``make``'s exceptions
        propagate and nothing is kept."""
        with self._lock:
            mine = self._rendering.setdefault(key, threading.Lock())
        try:
            with mine:
                data = self._take(key)
                hit = data is not None
                if data is None:
                    data = make()
                    self.put(key, data)
        finally:
            with self._lock:
                if self._rendering.get(key) is mine:
                    del self._rendering[key]
        self._count(hit)
        return data, hit
