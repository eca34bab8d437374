"""Materials and the attenuation canvas the synthetic scans are drawn on.

Physics: Beer-Lambert at two effective energies (50 and 100 keV), ``T(E) = exp(-sum_m mu_m(E) * t_m)``. The canvas
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
    """Linear attenuation coefficients (1/cm) at the low (50 keV) and high (100 keV) effective
    energies: mass attenuation coefficient (cm^2/g) x density (g/cm^3)."""

    name: str
    mu_low: float
    mu_high: float


def _nist(name: str, density: float, mass_mu_50kev: float, mass_mu_100kev: float) -> Material:
    return Material(name, round(mass_mu_50kev * density, 4), round(mass_mu_100kev * density, 4))


# Mass attenuation coefficients mu/rho (cm^2/g, total with coherent scattering) at 50 and 100 keV,
# near the effective energies of a dual-energy belt scanner's low and high channels (~140 kV tube),
# from NIST Standard Reference Database 126, "X-Ray Mass Attenuation Coefficients" (J. H. Hubbell
# and S. M. Seltzer, NISTIR 5632; https://physics.nist.gov/PhysRefData/XrayMassCoef/): Table 3
# for the elements (Al, Fe, Cu, Zn), Table 4 for water; compounds and mixtures (cellulose,
# polycarbonate, glass, FR-4, a Li-ion jelly roll, brass, filled rubber) by the weight-fraction
# mixture rule over the same elemental values (as NIST XCOM computes them; cross-checked with
# XrayDB). Densities are bulk: textiles and paper include their air gaps. The low/high ratio is
# what material rendering keys on: ~1.2-1.4 organic, ~2-2.7 glass, light metal and PCB, ~4 for a
# cell, 5-6 for iron, zinc and copper.
MATERIALS: dict[str, Material] = {
    m.name: m
    for m in (
        _nist("textile", 0.40, 0.2092, 0.1621),  # cotton (cellulose), loosely packed
        _nist("paper", 0.80, 0.2092, 0.1621),  # cellulose
        _nist("plastic", 1.20, 0.2003, 0.1600),  # polycarbonate / ABS
        _nist("water", 1.00, 0.2269, 0.1707),
        _nist("food", 1.10, 0.2201, 0.1674),  # 60 % water, 30 % sugar, 10 % starch
        _nist("organic_dense", 1.65, 0.2102, 0.1626),  # sucrose-like dense organic block
        _nist("rubber", 1.20, 0.3355, 0.1814),  # polyisoprene, 20 % silica, 5 % ZnO filler (soles)
        _nist("glass", 2.50, 0.3517, 0.1721),  # soda-lime
        _nist("pcb", 1.85, 0.5217, 0.1966),  # FR-4 (55 % glass, 35 % epoxy) with 10 % copper
        _nist("aluminium", 2.699, 0.3681, 0.1704),
        _nist("cell", 2.60, 1.0812, 0.2637),  # Li-ion jelly roll: LiCoO2, graphite, Cu/Al foils, electrolyte
        _nist("zinc", 7.13, 2.8931, 0.4974),  # die-cast (zamak) parts
        _nist("steel", 7.874, 1.958, 0.3717),  # iron
        _nist("brass", 8.50, 2.7166, 0.4729),  # 63 % Cu, 37 % Zn (keys)
        _nist("copper", 8.96, 2.613, 0.4584),
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
