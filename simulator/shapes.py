"""Object shapes for synthetic scans, in object-local millimetres, centred near the origin.

Each builder returns a list of parts; :func:`draw` poses them (rotation, scale, tilt) onto a
:class:`~simulator.materials.Canvas`. Threat builders are keyed by detector class name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simulator.materials import Canvas, Points, ellipse_pts, pose, rect_pts


@dataclass(frozen=True)
class Poly:
    polys: tuple[Points, ...]
    material: str
    t_cm: float
    holes: tuple[Points, ...] = ()


@dataclass(frozen=True)
class Line:
    pts: Points
    material: str
    t_cm: float
    width_mm: float
    closed: bool = False


@dataclass(frozen=True)
class Cyl:
    cx: float
    cy: float
    length: float
    radius: float
    angle: float
    material: str


Part = Poly | Line | Cyl


def part_points(parts: list[Part]) -> Points:
    """Every outline point of the parts (local mm), for extents and boxes."""
    pts: list[Points] = []
    for p in parts:
        if isinstance(p, Poly):
            pts.extend(p.polys)
        elif isinstance(p, Line):
            pts.append(p.pts)
        else:
            c, s = np.cos(p.angle), np.sin(p.angle)
            corners = rect_pts(-p.length / 2, -p.radius, p.length / 2, p.radius)
            pts.append(np.stack([c * corners[:, 0] - s * corners[:, 1] + p.cx, s * corners[:, 0] + c * corners[:, 1] + p.cy], 1))
    return np.concatenate(pts, axis=0)


def draw(cv: Canvas, parts: list[Part], angle: float, scale: float, centre: tuple[float, float], squash: float = 1.0) -> Points:
    """Draw posed parts; returns their posed outline points (pixels)."""
    for p in parts:
        if isinstance(p, Poly):
            cv.poly([pose(q, angle, scale, centre, squash) for q in p.polys], p.material, p.t_cm, [pose(h, angle, scale, centre, squash) for h in p.holes])
        elif isinstance(p, Line):
            cv.line(pose(p.pts, angle, scale, centre, squash), p.material, p.t_cm, max(1, round(p.width_mm * scale)), p.closed)
        else:
            c = pose(np.array([[p.cx, p.cy]]), angle, scale, centre, squash)[0]
            cv.cylinder((c[0], c[1]), p.length * scale, p.radius * scale, angle + p.angle, p.material, p.radius / 10)
    return pose(part_points(parts), angle, scale, centre, squash)


# --- threats -------------------------------------------------------------------------------


def gun(rng: np.random.Generator) -> list[Part]:
    """A handgun silhouette: pistol (slide, frame, angled grip) or revolver (barrel, cylinder)."""
    u = rng.uniform
    guard = Line(ellipse_pts(-12, -14, u(18, 24), u(13, 18), 10, 0.0, np.pi), "steel", u(0.6, 1.2), u(4, 6))
    trigger = Poly((np.array([[-15, -18], [-10, -18], [-13, 2], [-18, 0]], float),), "steel", 0.6)
    grip_back = u(-95, -75)
    grip = Poly((np.array([[-78, -30], [-40, -30], [-28 + u(-5, 5), 62], [grip_back + 10, 66], [grip_back, 55]], float),), "steel", u(1.8, 3.0))
    if rng.random() < 0.65:
        length = u(75, 115)
        slide = Poly((rect_pts(-85, -55, length, -30),), "steel", u(2.0, 3.0))
        frame = Poly((rect_pts(-80, -30, length * 0.7, -18),), "steel", u(1.5, 2.5))
        return [slide, frame, grip, guard, trigger]
    barrel_end = u(70, 140)
    barrel = Poly((rect_pts(0, -54, barrel_end, -40),), "steel", u(1.5, 2.2))
    drum = Poly((rect_pts(-32, -60, 4, -26),), "steel", u(3.0, 4.0))
    frame = Poly((rect_pts(-62, -56, 0, -24), np.array([[-62, -56], [-75, -70], [-68, -72], [-52, -56]], float)), "steel", u(1.8, 2.5))
    return [barrel, drum, frame, grip, guard, trigger]


def knife(rng: np.random.Generator) -> list[Part]:
    """A kitchen knife or dagger: tapered steel blade, handle, tang and bolster."""
    u = rng.uniform
    length, width = u(90, 200), u(16, 40)
    xs = np.linspace(length, 0, 12)
    edge = np.stack([xs, -width / 2 + width * (1 - (xs / length) ** 2)], 1)
    if rng.random() < 0.3:  # dagger: symmetric double edge
        top = np.stack([xs[::-1], -(width / 2) * (1 - (xs[::-1] / length) ** 2)], 1)
        edge = np.stack([xs, (width / 2) * (1 - (xs / length) ** 2)], 1)
        blade = np.concatenate([top, edge], axis=0)
    else:
        blade = np.concatenate([np.array([[0, -width / 2], [length * 0.9, -width / 2]]), edge], axis=0)
    hl, hw = u(80, 120), width * u(0.6, 0.9)
    parts: list[Part] = [
        Poly((blade,), "steel", u(0.15, 0.35)),
        Poly((rect_pts(-hl, -hw / 2, 0, hw / 2),), "plastic", u(1.5, 2.5)),
        Poly((rect_pts(-8, -hw / 2 - 2, 0, hw / 2 + 2),), "steel", u(0.6, 1.2)),
    ]
    if rng.random() < 0.6:
        parts.append(Poly((rect_pts(-hl * 0.92, -hw * 0.18, 0, hw * 0.18),), "steel", u(0.2, 0.4)))
    return parts


def blade(rng: np.random.Generator) -> list[Part]:
    """A loose blade: double-edge razor (slotted) or trapezoid utility blade."""
    u = rng.uniform
    t = u(0.08, 0.2)  # thicker than a real razor (0.1 mm): the high plane barely sees those
    if rng.random() < 0.5:
        outer = np.array([[-21.5, -11], [21.5, -11], [21.5, -2], [19, 0], [21.5, 2], [21.5, 11], [-21.5, 11], [-21.5, 2], [-19, 0], [-21.5, -2]], float)
        holes = [rect_pts(-13, -1.2, 13, 1.2)] + [ellipse_pts(x, 0, 3.0, 3.0, 8) for x in (-12.0, 0.0, 12.0)]
        return [Poly((outer,), "steel", t, tuple(holes))]
    outer = np.array([[-30, -9.5], [30, -9.5], [20, 9.5], [-20, 9.5]], float)
    notches = [ellipse_pts(x, -9.5, 2.5, 2.5, 8, 0.0, np.pi) for x in (-8.0, 8.0)]
    return [Poly((outer,), "steel", t, tuple(notches))]


def shuriken(rng: np.random.Generator) -> list[Part]:
    """A throwing star: 4-8 points around a central hole."""
    u = rng.uniform
    n = int(rng.choice([4, 4, 5, 6, 8]))
    big, small = u(35, 60), 0.0
    small = big * u(0.22, 0.42)
    twist = u(-0.25, 0.25) * np.pi / n
    k = np.arange(2 * n)
    ang = k * np.pi / n + np.where(k % 2 == 1, twist, 0.0)
    rad = np.where(k % 2 == 0, big, small)
    star = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
    return [Poly((star,), "steel", u(0.2, 0.7), (ellipse_pts(0, 0, big * 0.12, big * 0.12, 10),))]


def battery(rng: np.random.Generator) -> list[Part]:
    """Lithium cells (18650 / AA size, 1-4 side by side), bare or inside a power bank."""
    u = rng.uniform
    length, dia = (65.0, 18.0) if rng.random() < 0.6 else (50.0, 14.5)
    n = int(rng.integers(1, 5))
    ys = (np.arange(n) - (n - 1) / 2) * dia
    parts: list[Part] = []
    if rng.random() < 0.4:
        parts.append(Poly((rect_pts(-length / 2 - 12, ys[0] - dia / 2 - 4, length / 2 + 14, ys[-1] + dia / 2 + 4),), "plastic", u(1.0, 1.8)))
        parts.append(Poly((rect_pts(length / 2 + 2, ys[0] - dia / 2, length / 2 + 12, ys[-1] + dia / 2),), "pcb", 0.2))
        parts.append(Poly((rect_pts(length / 2 + 9, -4, length / 2 + 14, 4),), "steel", 0.6))
    for y in ys:
        parts.append(Cyl(0.0, float(y), length, dia / 2, 0.0, "cell"))
        parts.append(Line(np.array([[-length / 2, y - dia / 2], [length / 2, y - dia / 2]]), "steel", 0.6, 0.8))
        parts.append(Line(np.array([[-length / 2, y + dia / 2], [length / 2, y + dia / 2]]), "steel", 0.6, 0.8))
        parts.append(Poly((rect_pts(length / 2 - 2, y - dia * 0.3, length / 2 + 1, y + dia * 0.3),), "steel", 0.8))
        parts.append(Line(np.array([[-length / 2 + 3, y], [length / 2 - 3, y]]), "steel", 0.3, 1.2))
    return parts


THREAT_BUILDERS: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    "gun": gun,
    "knife": knife,
    "blade": blade,
    "shuriken": shuriken,
    "battery": battery,
}
