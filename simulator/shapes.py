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


def _rounded(pts: Points, passes: int = 2) -> Points:
    """A closed outline with its corners cut round (Chaikin), as cast and machined steel is."""
    for _ in range(passes):
        nxt = np.roll(pts, -1, axis=0)
        pts = np.stack([0.75 * pts + 0.25 * nxt, 0.25 * pts + 0.75 * nxt], 1).reshape(-1, 2)
    return pts


def _grip(x_back: float, x_front: float, top: float, length: float, rake: float) -> Points:
    """A handgun grip: a raked quadrilateral hanging below the frame, rounded at the butt."""
    dx = np.tan(rake) * length
    return _rounded(np.array([[x_back, top], [x_front, top], [x_front - dx + 4, top + length], [x_back - dx + 6, top + length + 4], [x_back - dx, top + length - 6]], float), 1)


def _trigger_guard(x: float, y: float, width: float, depth: float, rng: np.random.Generator, metal: str = "steel") -> list[Part]:
    """The trigger guard, a bold steel loop under the frame (the ring a real gun's silhouette
    shows), and the trigger curling inside it."""
    u = rng.uniform
    return [
        Line(ellipse_pts(x, y, width, depth, 14, 0.0, np.pi), metal, u(0.8, 1.5), u(4, 8)),
        Poly((np.array([[x - 4, y], [x + 3, y], [x - 1, y + depth * 0.8], [x - 6, y + depth * 0.7]], float),), "steel", u(0.6, 1.0)),
    ]


def pistol(rng: np.random.Generator) -> list[Part]:
    """A semi-automatic pistol: slide, frame, raked grip with magazine, trigger guard."""
    u = rng.uniform
    length, height = u(150, 215), u(26, 40)
    metal = "zinc" if rng.random() < 0.1 else "steel"
    parts: list[Part] = [Poly((rect_pts(-length / 2, -height, length / 2, 0),), metal, u(2.5, 4.0))]  # slide
    if rng.random() < 0.5:  # sights
        parts.append(Poly((rect_pts(length / 2 - 10, -height - 4, length / 2 - 5, -height), rect_pts(-length / 2 + 4, -height - 4, -length / 2 + 12, -height)), metal, 1.0))
    frame_end = length / 2 - u(0, 30)
    parts.append(Poly((rect_pts(-length / 2 + 5, 0, frame_end, u(10, 16)),), "plastic" if rng.random() < 0.15 else metal, u(2.0, 3.2)))
    grip_len, grip_w = u(70, 105), u(30, 45)
    x_back = -length / 2 + u(0, 15)
    grip = _grip(x_back, x_back + grip_w, 8.0, grip_len, u(0.15, 0.4))
    parts.append(Poly((grip,), "plastic" if rng.random() < 0.15 else metal, u(2.5, 3.8)))
    parts.append(Poly((grip * (0.8, 0.95) + (x_back * 0.2 + 4, 2),), "steel", u(0.8, 1.4)))  # magazine inside
    gx = x_back + grip_w + u(2, 10)
    parts += _trigger_guard(gx + 14, 10, u(14, 22), u(13, 20), rng, metal)
    return parts


def revolver(rng: np.random.Generator) -> list[Part]:
    """A revolver: barrel (with or without underlug), the thick cylinder, a bulky frame, hammer
    and a raked grip (mostly steel, or a steel frame inside wood or plastic panels, sometimes
    with the panels' openings showing); snub-nosed to long-barrelled."""
    u = rng.uniform
    barrel = u(35, 150)
    bore = u(13, 20)
    parts: list[Part] = [Poly((rect_pts(0, -bore, barrel, 0),), "steel", u(2.0, 3.0))]
    if rng.random() < 0.5:  # ejector-rod housing / underlug
        parts.append(Poly((rect_pts(0, 0, barrel * u(0.5, 1.0), u(7, 12)),), "steel", u(1.5, 2.5)))
    cyl_len, cyl_h = u(36, 48), u(38, 50)
    cyl_y = -bore / 2 + u(2, 6)
    parts.append(Poly((_rounded(rect_pts(-cyl_len, cyl_y - cyl_h / 2, 0, cyl_y + cyl_h / 2)),), "steel", u(3.5, 5.0)))
    top, bottom = -bore - u(5, 10), u(18, 28)
    parts.append(Poly((_rounded(rect_pts(-cyl_len - 22, top, 6, bottom), 1),), "steel", u(2.2, 3.2)))
    parts.append(Poly((np.array([[-cyl_len - 22, top], [-cyl_len - 34, top - u(8, 16)], [-cyl_len - 26, top - 14], [-cyl_len - 8, top]], float),), "steel", 1.6))
    grip_len, grip_w = u(65, 95), u(0, 12)
    grip = _rounded(np.array([[-cyl_len - 22, bottom - 6], [-cyl_len + 2 + grip_w, bottom], [-cyl_len - 8 - u(10, 25) + grip_w, bottom + grip_len], [-cyl_len - 30 - u(10, 25), bottom + grip_len - 6], [-cyl_len - 40 - grip_w, bottom + 10]], float), 1)
    holes: tuple[Points, ...] = ()
    if rng.random() < 0.35:  # openings in the grip frame between the panels
        c = grip.mean(axis=0)
        holes = (ellipse_pts(c[0], c[1], u(5, 9), grip_len * u(0.2, 0.3), 12),)
    parts.append(Poly((grip,), "steel" if rng.random() < 0.75 else "plastic", u(2.5, 3.8), holes))
    parts.append(Poly((grip * 0.85 + (-cyl_len * 0.15 - 4, 6),), "steel", u(0.6, 1.4), holes))  # frame inside wood/plastic panels
    parts += _trigger_guard(-cyl_len + 4, bottom, u(12, 20), u(12, 19), rng)
    return parts


def _oblique(rng: np.random.Generator, parts: list[Part]) -> list[Part]:
    """The gun turned out of the image plane: its length foreshortened (0.35-1.0) and sheared, so
    grip and barrel overlap as a 3-D rotation would make them; the steel seen along a longer
    path gets thicker. Keeps the parts' order; only polygons and lines (what guns are made of)."""
    fx, shear = rng.uniform(0.35, 1.0), rng.uniform(-0.6, 0.6)
    m = np.array([[fx, shear * (1 - fx)], [0.0, 1.0]])
    thicker = min(1.0 / fx, 2.0)
    out: list[Part] = []
    for p in parts:
        if isinstance(p, Poly):
            out.append(Poly(tuple(q @ m.T for q in p.polys), p.material, p.t_cm * thicker, tuple(h @ m.T for h in p.holes)))
        elif isinstance(p, Line):
            out.append(Line(p.pts @ m.T, p.material, p.t_cm * thicker, p.width_mm, p.closed))
        else:
            out.append(p)
    return out


def gun(rng: np.random.Generator) -> list[Part]:
    """A handgun: pistol or revolver, varied in size and proportions; half of them seen obliquely."""
    parts = pistol(rng) if rng.random() < 0.45 else revolver(rng)
    return _oblique(rng, parts) if rng.random() < 0.5 else parts


def knife(rng: np.random.Generator) -> list[Part]:
    """A kitchen knife, dagger or folding knife: tapered steel blade, handle, tang and bolster."""
    u = rng.uniform
    length, width = u(70, 200), u(14, 40)
    xs = np.linspace(length, 0, 12)
    edge = np.stack([xs, -width / 2 + width * (1 - (xs / length) ** 2)], 1)
    if rng.random() < 0.3:  # dagger: symmetric double edge
        top = np.stack([xs[::-1], -(width / 2) * (1 - (xs[::-1] / length) ** 2)], 1)
        edge = np.stack([xs, (width / 2) * (1 - (xs / length) ** 2)], 1)
        blade = np.concatenate([top, edge], axis=0)
    else:
        blade = np.concatenate([np.array([[0, -width / 2], [length * 0.9, -width / 2]]), edge], axis=0)
    hl, hw = u(70, 120), width * u(0.6, 0.9)
    handle_metal = rng.random() < 0.25  # all-steel or folding-knife liners
    parts: list[Part] = [
        Poly((blade,), "steel", u(0.15, 0.4)),
        Poly((rect_pts(-hl, -hw / 2, 0, hw / 2),), "steel" if handle_metal else "plastic", u(0.3, 0.6) if handle_metal else u(1.5, 2.5)),
        Poly((rect_pts(-8, -hw / 2 - 2, 0, hw / 2 + 2),), "steel", u(0.6, 1.2)),
    ]
    if rng.random() < 0.6:
        parts.append(Poly((rect_pts(-hl * 0.92, -hw * 0.18, 0, hw * 0.18),), "steel", u(0.2, 0.4)))
    return parts


def blade(rng: np.random.Generator) -> list[Part]:
    """A loose blade: a double-edge safety-razor blade (43 x 22 mm, end notches, the central slot
    with its round and cross-shaped openings) or a trapezoid utility blade, often in a stack."""
    u = rng.uniform
    t = u(0.06, 0.2)  # thicker than one razor (0.1 mm): stacks, and the high plane barely sees one
    if rng.random() < 0.6:
        w, h, n = u(42, 44), u(21, 23), u(1.5, 3.5)
        outer = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, -n], [w / 2 - n, 0], [w / 2, n], [w / 2, h / 2], [-w / 2, h / 2], [-w / 2, n], [-w / 2 + n, 0], [-w / 2, -n]], float)
        slot = u(11, 15)
        holes = [rect_pts(-slot, -u(0.8, 1.5), slot, u(0.8, 1.5))] + [ellipse_pts(x, 0, r, r, 10) for x, r in ((-slot, u(2.0, 3.2)), (0.0, u(2.5, 4.0)), (slot, u(2.0, 3.2)))]
        if rng.random() < 0.5:  # cross-shaped openings either side of centre
            holes += [rect_pts(x - 1.0, -3.5, x + 1.0, 3.5) for x in (-slot / 2, slot / 2)]
        parts: list[Part] = [Poly((outer,), "steel", t, tuple(holes))]
        if rng.random() < 0.3:  # paper wrapper
            parts.append(Poly((rect_pts(-w / 2 - 3, -h / 2 - 3, w / 2 + 3, h / 2 + 3),), "paper", 0.05))
        return parts
    length = u(55, 62)
    outer = np.array([[-length / 2, -9.5], [length / 2, -9.5], [length / 2 - 10, 9.5], [-length / 2 + 10, 9.5]], float)
    notches = [ellipse_pts(x, -9.5, 2.5, 2.5, 8, 0.0, np.pi) for x in (-8.0, 8.0)]
    return [Poly((outer,), "steel", t * 2, tuple(notches))]


def shuriken(rng: np.random.Generator) -> list[Part]:
    """A throwing star: 4-8 straight or hooked points around a central hole."""
    u = rng.uniform
    n = int(rng.choice([4, 4, 5, 6, 6, 8]))
    big = u(30, 60)
    small = big * u(0.18, 0.45)
    twist = u(-0.3, 0.3) * np.pi / n
    k = np.arange(2 * n)
    ang = k * np.pi / n + np.where(k % 2 == 1, twist, 0.0)
    rad = np.where(k % 2 == 0, big * u(0.9, 1.0, 2 * n), small)
    star = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
    holes = (ellipse_pts(0, 0, big * u(0.06, 0.16), big * u(0.06, 0.16), 12),)
    return [Poly((star,), "steel", u(0.2, 0.7), holes)]


def battery(rng: np.random.Generator) -> list[Part]:
    """Lithium cells (18650 / AA size, 1-4 side by side), bare or inside a power bank, or a
    power bank built on flat pouch cells. Never a bare laminate: a phone holds one of those, and
    a phone is not what the class is for (see ``phone`` in simulator/clutter.py)."""
    u = rng.uniform
    if rng.random() < 0.15:  # pouch power bank: 1-2 stacked laminates, a board with its USB ports, a case
        w, h = u(55, 75), u(80, 130)
        return [Poly((rect_pts(-w / 2 - 3, -h / 2 - 3, w / 2 + 3, h / 2 + 22),), "plastic", u(1.0, 1.8)),
                Poly((rect_pts(-w / 2, -h / 2, w / 2, h / 2),), "cell", u(0.5, 0.9) * int(rng.integers(1, 3))),
                Poly((rect_pts(-w / 2, h / 2 + 2, w / 2, h / 2 + 18),), "pcb", 0.2),
                Poly((rect_pts(-w / 4 - 2, h / 2 - 6, -w / 4 + 2, h / 2 + 4), rect_pts(w / 4 - 2, h / 2 - 6, w / 4 + 2, h / 2 + 4)), "aluminium", 0.4),
                Poly(tuple(rect_pts(x - 6, h / 2 + 14, x + 6, h / 2 + 20) for x in (-w / 4, w / 4)), "steel", 0.5)]
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
        # the ends a screener knows a cell by: the positive cap and button, the crimped negative can
        parts.append(Poly((rect_pts(length / 2 - 2, y - dia * 0.3, length / 2 + 1, y + dia * 0.3),), "steel", 0.8))
        parts.append(Poly((rect_pts(length / 2 - 4, y - dia / 2, length / 2 - 2, y + dia / 2),), "steel", 0.5))
        parts.append(Poly((rect_pts(-length / 2, y - dia / 2, -length / 2 + 2, y + dia / 2),), "steel", 0.6))
        parts.append(Line(np.array([[-length / 2 + 3, y], [length / 2 - 3, y]]), "steel", 0.3, 1.2))
    return parts


def organic_block(rng: np.random.Generator) -> list[Part]:
    """A dense organic block (wrapped slab, 5-15 cm): invisible to a shape detector on one
    plane, a job for dual-energy material rules; drawn, never a detector class."""
    u = rng.uniform
    w, h = u(50, 150), u(40, 100)
    parts: list[Part] = [Poly((rect_pts(-w / 2, -h / 2, w / 2, h / 2),), "organic_dense", u(2.5, 6.0)),
                         Line(rect_pts(-w / 2, -h / 2, w / 2, h / 2), "plastic", 0.3, 2.0, True)]
    if rng.random() < 0.5:  # wires taped to it
        parts.append(Line(np.array([[-w / 2, 0], [-w / 2 - u(20, 60), u(-30, 30)], [-w / 2 - u(40, 90), u(-40, 40)]]), "copper", 0.1, 1.2))
    return parts


THREAT_BUILDERS: dict[str, Callable[[np.random.Generator], list[Part]]] = {
    "gun": gun,
    "knife": knife,
    "blade": blade,
    "shuriken": shuriken,
    "battery": battery,
}
"""Builders keyed by detector class name (the manifest's classes)."""

EXTRA_THREAT_BUILDERS: dict[str, Callable[[np.random.Generator], list[Part]]] = {"organic_block": organic_block}
"""Threats the generator can draw that are not detector classes (for material rules)."""
