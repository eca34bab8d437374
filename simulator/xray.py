"""Synthetic dual-energy parcel scans with ground-truth threat boxes.

A parcel is a cardboard box of clothes and clutter (confusers included) plus the threats asked
for, each in a random pose, drawn as Beer-Lambert attenuation at two energies, then quantum
noise and detector blur. A close-up is one object (a threat or a benign metal confuser) filling
most of the frame, as real crops and cabinet scans show them. :func:`single_energy` turns either
into a single-energy scanner's greyscale. Same generator state in, same scan out. About 10-20 ms
on one core.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from simulator.clutter import CLUTTER, CONFUSERS
from simulator.materials import Canvas, ellipse_pts, pose
from simulator.shapes import (
    EXTRA_THREAT_BUILDERS,
    THREAT_BUILDERS,
    Part,
    draw,
    part_points,
)

THREAT_CLASSES: tuple[str, ...] = ("gun", "knife", "blade", "shuriken", "battery")


@dataclass(frozen=True)
class Box:
    """A ground-truth box in pixels, x2/y2 exclusive-ish (x1 < x2 <= width)."""

    label: str
    x1: int
    y1: int
    x2: int
    y2: int


@dataclass(frozen=True)
class Scan:
    """Two uint16 HxW transmission planes (65535 = air) and the threats' boxes."""

    high: np.ndarray
    low: np.ndarray
    boxes: tuple[Box, ...]


def _place(rng: np.random.Generator, parts: list[Part], area: tuple[int, int, int, int], ppm: float, tilt: bool) -> tuple[float, float, tuple[float, float], float]:
    """Pick angle, scale, centre and squash so the object's outline fits inside ``area``."""
    angle = rng.uniform(0, 2 * np.pi)
    squash = rng.uniform(0.55, 1.0) if tilt and rng.random() < 0.4 else 1.0
    scale = ppm * rng.uniform(0.85, 1.15)
    local = part_points(parts)
    x0, y0, x1, y1 = area
    posed = pose(local, angle, scale, (0.0, 0.0), squash)
    lo, hi = posed.min(axis=0), posed.max(axis=0)
    span = hi - lo
    shrink = min(1.0, (x1 - x0) / max(span[0], 1e-6), (y1 - y0) / max(span[1], 1e-6))
    if shrink < 1.0:  # too big for the box: scale it down rather than cut it off
        scale *= shrink * 0.98
        lo, hi = lo * shrink * 0.98, hi * shrink * 0.98
    cx = rng.uniform(x0 - lo[0], max(x1 - hi[0], x0 - lo[0] + 1e-3))
    cy = rng.uniform(y0 - lo[1], max(y1 - hi[1], y0 - lo[1] + 1e-3))
    return angle, scale, (cx, cy), squash


def _clothes(rng: np.random.Generator, cv: Canvas, area: tuple[int, int, int, int], ppm: float) -> None:
    """Soft textile layers: overlapping blobs, blurred, with fold texture."""
    x0, y0, x1, y1 = area
    tex = np.zeros((cv.height, cv.width), np.float32)
    for _ in range(int(rng.integers(0, 6))):
        n = 10
        rx, ry = rng.uniform(60, 200) * ppm, rng.uniform(50, 150) * ppm
        pts = ellipse_pts(rng.uniform(x0, x1), rng.uniform(y0, y1), rx, ry, n)
        pts = pts + rng.normal(0, 0.15, (n, 2)) * (rx, ry)
        layer = np.zeros_like(tex)
        cv2.fillPoly(layer, [np.round(pts).astype(np.int32)], float(rng.uniform(1.0, 6.0)))
        tex += layer
    if not tex.any():
        return
    outside = np.ones_like(tex, dtype=bool)
    outside[y0:y1, x0:x1] = False
    tex[outside] = 0.0  # clothes stay inside the box
    folds = cv2.resize(rng.uniform(0.5, 1.5, (cv.height // 16 + 1, cv.width // 16 + 1)).astype(np.float32), (cv.width, cv.height), interpolation=cv2.INTER_CUBIC)
    cv.add_patch(cv2.GaussianBlur(tex, (0, 0), 5.0) * folds, 0, 0, "textile")


def synth_parcel(rng: np.random.Generator, threats: Sequence[str] = (), height: int = 320, width: int = 480) -> Scan:
    """Render one parcel containing exactly the threats named (classes from THREAT_CLASSES).

    Guarantees: planes are uint16 ``height x width``; one box per requested threat, inside the
    image, in request order; the same ``rng`` state gives the same scan.
    """
    return render_parcel(rng, threats, height, width)[0]


def render_parcel(rng: np.random.Generator, threats: Sequence[str] = (), height: int = 320, width: int = 480) -> tuple[Scan, np.ndarray]:
    """As :func:`synth_parcel` (same draws, same scan), plus a uint8 map of where each threat
    is: pixel value k + 1 for the k-th threat (a later one wins where they overlap), else 0.
    Training uses it to put positive anchors on the object, not on the box's background."""
    _check_threats(threats)
    cv = Canvas(height, width)
    ppm = rng.uniform(0.7, 1.0) * min(height / 320, width / 480)
    mx, my = (int(rng.uniform(0.01, 0.08) * width) for _ in range(2))
    area = (mx, my, width - int(rng.uniform(0.01, 0.08) * width), height - int(rng.uniform(0.01, 0.08) * height))
    bx0, by0, bx1, by1 = area
    box_pts = np.array([[bx0, by0], [bx1, by0], [bx1, by1], [bx0, by1]], float)
    cv.poly([box_pts], "paper", rng.uniform(0.6, 1.4))
    cv.line(box_pts, "paper", rng.uniform(6.0, 12.0), 3, closed=True)  # walls seen edge-on
    _clothes(rng, cv, area, ppm)
    inner = (bx0 + 4, by0 + 4, bx1 - 4, by1 - 4)
    for builder, p in CLUTTER:
        for _ in range(2 if rng.random() < p * 0.3 else 1 if rng.random() < p else 0):
            parts = builder(rng)
            angle, scale, centre, squash = _place(rng, parts, inner, ppm, tilt=True)
            draw(cv, parts, angle, scale, centre, squash)
    where = np.zeros((height, width), np.uint8)
    boxes = [_draw_threat(rng, cv, label, k, inner, lambda parts: ppm, where) for k, label in enumerate(threats)]
    return _expose(rng, cv, boxes), where


def render_closeup(rng: np.random.Generator, threat: str | None = None, height: int = 320, width: int = 480) -> tuple[Scan, np.ndarray]:
    """One object filling 25-95 % of the frame (half the guns 70-130 %, cut by the frame; their
    box is clipped to it), as in a crop of a real scan or a small item on a cabinet scanner: the
    threat named, or (``None``) a benign metal confuser (keys, clips, gears,
    wheels, tools...). Behind it: air, a bag's textiles, or parts of other items at the same
    scale; sometimes a second, smaller confuser. Returns the scan and the threat map, as
    :func:`render_parcel` does."""
    if threat is not None:
        _check_threats((threat,))
    cv = Canvas(height, width)
    full = (0, 0, width, height)
    if rng.random() < 0.45:
        _clothes(rng, cv, full, rng.uniform(1.0, 3.0) * min(height / 320, width / 480))
    for _ in range(int(rng.integers(0, 3))):  # neighbours, cut by the frame
        builder = CLUTTER[int(rng.integers(len(CLUTTER)))][0]
        parts = builder(rng)
        angle, scale, centre, squash = _place(rng, parts, (-width // 2, -height // 2, width * 3 // 2, height * 3 // 2), _fill(parts, rng.uniform(0.3, 1.2), height, width), tilt=True)
        draw(cv, parts, angle, scale, centre, squash)
    if rng.random() < 0.3:
        parts = CONFUSERS[int(rng.integers(len(CONFUSERS)))](rng)
        angle, scale, centre, squash = _place(rng, parts, full, _fill(parts, rng.uniform(0.1, 0.4), height, width), tilt=True)
        draw(cv, parts, angle, scale, centre, squash)
    where = np.zeros((height, width), np.uint8)
    margin = (int(width * 0.02), int(height * 0.02), width - int(width * 0.02), height - int(height * 0.02))
    boxes = []
    share = rng.uniform(0.25, 0.95)
    if threat == "gun" and rng.random() < 0.5:  # as real gun crops: filling the frame, often cut by its edge
        share = rng.uniform(0.7, 1.3)
        margin = (-width // 8, -height // 8, width + width // 8, height + height // 8)
    if threat is None:
        parts = CONFUSERS[int(rng.integers(len(CONFUSERS)))](rng)
        angle, scale, centre, squash = _place(rng, parts, margin, _fill(parts, share, height, width), tilt=True)
        draw(cv, parts, angle, scale, centre, squash)
    else:
        boxes.append(_draw_threat(rng, cv, threat, 0, margin, lambda parts: _fill(parts, share, height, width), where))
    return _expose(rng, cv, boxes), where


def single_energy(scan: Scan, low_share: float = 0.5) -> np.ndarray:
    """A single-energy scanner's greyscale view of a scan (uint8, 255 = air): the transmission of
    a broad spectrum, taken as two bins, ``T = w * T_low + (1 - w) * T_high`` with ``w`` the low
    bin's share of the detected photons. Unlike one effective energy this hardens the beam as a
    real tube's does: dense metal looks relatively lighter than thin metal would predict."""
    t = (low_share / 65535.0) * scan.low.astype(np.float32) + ((1.0 - low_share) / 65535.0) * scan.high.astype(np.float32)
    return np.clip(255.0 * t + 0.5, 0, 255).astype(np.uint8)


def _check_threats(threats: Sequence[str]) -> None:
    for label in threats:
        if label not in THREAT_BUILDERS and label not in EXTRA_THREAT_BUILDERS:
            raise ValueError(f"unknown threat class {label!r}; expected one of {THREAT_CLASSES + tuple(EXTRA_THREAT_BUILDERS)}")


def _fill(parts: list[Part], share: float, height: int, width: int) -> float:
    """Pixels per mm at which the object's longest side spans ``share`` of the frame's shorter side."""
    span = np.ptp(part_points(parts), axis=0).max()
    return share * min(height, width) / max(float(span), 1.0)


def _draw_threat(rng: np.random.Generator, cv: Canvas, label: str, k: int, area: tuple[int, int, int, int], ppm_for: Callable[[list[Part]], float], where: np.ndarray) -> Box:
    """Draw the k-th threat inside ``area``, mark its pixels k + 1 in ``where``, return its box."""
    parts = {**THREAT_BUILDERS, **EXTRA_THREAT_BUILDERS}[label](rng)
    angle, scale, centre, squash = _place(rng, parts, area, ppm_for(parts), tilt=True)
    before = cv.att_low.copy()
    pts = draw(cv, parts, angle, scale, centre, squash)
    where[(cv.att_low - before) > 0.05] = k + 1
    lo = np.clip(np.floor(pts.min(axis=0)), 0, (cv.width - 1, cv.height - 1)).astype(int)
    hi = np.clip(np.ceil(pts.max(axis=0)), lo + 1, (cv.width, cv.height)).astype(int)
    return Box(label, int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))


def _expose(rng: np.random.Generator, cv: Canvas, boxes: list[Box]) -> Scan:
    photons = rng.uniform(8000, 40000)
    high, low = cv.transmissions(rng, photons, photons * 0.5, rng.uniform(0.5, 1.0))
    return Scan(high=high, low=low, boxes=tuple(boxes))
