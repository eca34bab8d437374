"""Synthetic dual-energy parcel scans with ground-truth threat boxes.

A parcel is a cardboard box of clothes and clutter (confusers included) plus the threats asked
for, each in a random pose, drawn as Beer-Lambert attenuation at two energies, then quantum
noise and detector blur. Same generator state in, same scan out. About 10-20 ms on one core.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from simulator.clutter import CLUTTER
from simulator.materials import Canvas, ellipse_pts, pose
from simulator.shapes import THREAT_BUILDERS, Part, draw, part_points

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
    for label in threats:
        if label not in THREAT_BUILDERS:
            raise ValueError(f"unknown threat class {label!r}; expected one of {THREAT_CLASSES}")
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
    boxes = []
    where = np.zeros((height, width), np.uint8)
    for k, label in enumerate(threats):
        parts = THREAT_BUILDERS[label](rng)
        angle, scale, centre, squash = _place(rng, parts, inner, ppm, tilt=True)
        before = cv.att_low.copy()
        pts = draw(cv, parts, angle, scale, centre, squash)
        where[(cv.att_low - before) > 0.05] = k + 1
        lo = np.clip(np.floor(pts.min(axis=0)), 0, (width - 1, height - 1)).astype(int)
        hi = np.clip(np.ceil(pts.max(axis=0)), lo + 1, (width, height)).astype(int)
        boxes.append(Box(label, int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])))
    photons = rng.uniform(8000, 40000)
    high, low = cv.transmissions(rng, photons, photons * 0.5, rng.uniform(0.5, 1.0))
    return Scan(high=high, low=low, boxes=tuple(boxes)), where
