"""Materials and the attenuation canvas the synthetic scans are drawn on.

Physics: Beer-Lambert at two effective energies, ``T(E) = exp(-sum_m mu_m(E) * t_m)``. The canvas
accumulates the exponent (attenuation) per energy, so stacking objects is adding thicknesses and
projecting a threat into a clean scan is multiplying transmissions, as a real beam does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Material:
    """Linear attenuation coefficients (1/cm) at the low (~50 keV) and high (~100 keV) energies."""

    name: str
    mu_low: float
    mu_high: float


# Effective-energy values from NIST XCOM mass attenuation x density, rounded; porous goods
# (textiles, cardboard) use a bulk density with air gaps. The low/high ratio is what
# material rendering keys on: ~1.4 organic, ~3 light metal, ~5-6 iron and copper.
MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        Material("textile", 0.085, 0.060),
        Material("paper", 0.200, 0.125),
        Material("plastic", 0.250, 0.170),
        Material("water", 0.230, 0.170),
        Material("food", 0.260, 0.180),
        Material("glass", 1.100, 0.450),
        Material("pcb", 0.800, 0.350),
        Material("aluminium", 1.600, 0.500),
        Material("cell", 4.000, 1.000),  # Li-ion jelly roll: Cu/Al foils, oxides, electrolyte
        Material("steel", 15.00, 2.900),
        Material("copper", 23.00, 4.100),
    )
}

Points = np.ndarray  # float (N, 2) array of x, y in pixels


def pose(local: Points, angle: float, scale: float, centre: tuple[float, float], squash: float = 1.0) -> Points:
    """Map object-local points (mm, centred) to image pixels: squash y, scale, rotate, translate.

    ``squash`` < 1 foreshortens the object as an out-of-plane tilt would.
    """
    c, s = np.cos(angle), np.sin(angle)
    x = local[:, 0] * scale
    y = local[:, 1] * scale * squash
    return np.stack([c * x - s * y + centre[0], s * x + c * y + centre[1]], axis=1)


def ellipse_pts(cx: float, cy: float, rx: float, ry: float, n: int = 20, a0: float = 0.0, a1: float = 2 * np.pi) -> Points:
    t = np.linspace(a0, a1, n, endpoint=(a1 - a0) < 2 * np.pi - 1e-6)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def rect_pts(x0: float, y0: float, x1: float, y1: float) -> Points:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


class Canvas:
    """Attenuation accumulators for one scan (float32, HxW, one per energy).

    Every drawing call clips to the image, so objects may hang over the edge.
    """

    _SHIFT = 3  # fixed-point bits for sub-pixel polygon vertices

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.att_low = np.zeros((height, width), np.float32)
        self.att_high = np.zeros((height, width), np.float32)

    def _roi(self, pts: Points, pad: float) -> tuple[int, int, int, int] | None:
        x0 = max(int(np.floor(pts[:, 0].min() - pad)), 0)
        y0 = max(int(np.floor(pts[:, 1].min() - pad)), 0)
        x1 = min(int(np.ceil(pts[:, 0].max() + pad)) + 1, self.width)
        y1 = min(int(np.ceil(pts[:, 1].max() + pad)) + 1, self.height)
        return None if x1 <= x0 or y1 <= y0 else (x0, y0, x1, y1)

    def _fixed(self, pts: Points, x0: int, y0: int) -> np.ndarray:
        return np.round((pts - (x0, y0)) * (1 << self._SHIFT)).astype(np.int32)

    def add_patch(self, patch: np.ndarray, x0: int, y0: int, material: str) -> None:
        """Add a thickness patch (cm) whose top-left corner sits at (x0, y0)."""
        m = MATERIALS[material]
        self.att_low[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]] += m.mu_low * patch
        self.att_high[y0 : y0 + patch.shape[0], x0 : x0 + patch.shape[1]] += m.mu_high * patch

    def poly(self, polys: Sequence[Points], material: str, thickness_cm: float, holes: Sequence[Points] = ()) -> None:
        """Fill polygons of uniform thickness, minus holes, and add them to the scan."""
        allpts = np.concatenate(list(polys), axis=0)
        roi = self._roi(allpts, 1.0)
        if roi is None:
            return
        x0, y0, x1, y1 = roi
        patch = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.fillPoly(patch, [self._fixed(p, x0, y0) for p in polys], float(thickness_cm), cv2.LINE_8, self._SHIFT)
        if holes:
            cv2.fillPoly(patch, [self._fixed(h, x0, y0) for h in holes], 0.0, cv2.LINE_8, self._SHIFT)
        self.add_patch(patch, x0, y0, material)

    def line(self, pts: Points, material: str, thickness_cm: float, width_px: int, closed: bool = False) -> None:
        """Draw a polyline of a given pixel width (cables, wires, springs, rings)."""
        roi = self._roi(pts, width_px + 1.0)
        if roi is None:
            return
        x0, y0, x1, y1 = roi
        patch = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.polylines(patch, [self._fixed(pts, x0, y0)], closed, float(thickness_cm), max(int(width_px), 1), cv2.LINE_8, self._SHIFT)
        self.add_patch(patch, x0, y0, material)

    def cylinder(self, centre: tuple[float, float], length: float, radius: float, angle: float, material: str, radius_cm: float) -> None:
        """A solid cylinder seen side-on: the chord thickness 2*sqrt(r^2 - d^2) across its axis."""
        half = np.hypot(length, 2 * radius) / 2 + 2
        cx, cy = centre
        x0, y0 = max(int(cx - half), 0), max(int(cy - half), 0)
        x1, y1 = min(int(cx + half) + 1, self.width), min(int(cy + half) + 1, self.height)
        if x1 <= x0 or y1 <= y0:
            return
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xx - cx, yy - cy
        c, s = np.cos(angle), np.sin(angle)
        along, across = dx * c + dy * s, -dx * s + dy * c
        inside = (np.abs(along) <= length / 2) & (np.abs(across) < radius)
        chord = np.sqrt(np.clip(1.0 - (across / radius) ** 2, 0.0, 1.0)) * (2 * radius_cm)
        self.add_patch(np.where(inside, chord, 0.0).astype(np.float32), x0, y0, material)

    def transmissions(self, rng: np.random.Generator, photons_high: float, photons_low: float, blur_sigma: float) -> tuple[np.ndarray, np.ndarray]:
        """Render both planes: exp(-att), quantum noise (Gaussian approximation of Poisson,
        variance T/I0 for transmission T), detector blur; uint16 with 65535 = air."""
        out = []
        for att, photons in ((self.att_high, photons_high), (self.att_low, photons_low)):
            t = np.exp(-att)
            noise = rng.standard_normal(t.shape, dtype=np.float32)
            t = t + noise * np.sqrt(t / photons, dtype=np.float32)
            t = cv2.GaussianBlur(t, (0, 0), blur_sigma)
            out.append(np.clip(t * 65535.0 + 0.5, 0, 65535).astype(np.uint16))
        return out[0], out[1]
