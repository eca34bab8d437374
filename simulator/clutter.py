"""Benign parcel contents: clothes' companions (books, bottles, food, shoes), electronics (phones,
laptops, boards, chargers, headphones, cables) and confusers, metal that is not a threat (keys,
coins, springs, screws, clips, gears, wheels, scissors, cutlery, tools), so a model learns that
metal is not a threat by itself."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from simulator.materials import ellipse_pts, rect_pts
from simulator.shapes import Cyl, Line, Part, Poly


def book(rng: np.random.Generator) -> list[Part]:
    w, h = rng.uniform(110, 220), rng.uniform(150, 280)
    return [Poly((rect_pts(-w / 2, -h / 2, w / 2, h / 2),), "paper", rng.uniform(1.5, 5.0))]


def bottle(rng: np.random.Generator) -> list[Part]:
    length, r = rng.uniform(140, 260), rng.uniform(28, 45)
    shell = "glass" if rng.random() < 0.4 else "plastic"
    neck = rect_pts(length / 2, -r * 0.35, length / 2 + 35, r * 0.35)
    return [Cyl(0, 0, length, r, 0, "water"), Poly((neck,), shell, 1.0), Line(rect_pts(-length / 2, -r, length / 2, r), shell, 0.6, 2.0, True)]


def food(rng: np.random.Generator) -> list[Part]:
    w, h = rng.uniform(40, 120), rng.uniform(40, 120)
    return [Poly((rect_pts(-w / 2, -h / 2, w / 2, h / 2),), "food", rng.uniform(3, 9))]


def phone(rng: np.random.Generator) -> list[Part]:
    w, h = rng.uniform(65, 80), rng.uniform(140, 165)
    parts: list[Part] = [
        Poly((rect_pts(-w / 2, -h / 2, w / 2, h / 2),), "glass", 0.7),
        Line(rect_pts(-w / 2, -h / 2, w / 2, h / 2), "aluminium", 0.8, 2.0, True),
        Poly((rect_pts(-w / 2 + 4, -h / 2 + 50, w / 2 - 4, h / 2 - 8),), "cell", rng.uniform(0.3, 0.45)),
        Poly((rect_pts(-w / 2 + 4, -h / 2 + 6, w / 2 - 4, -h / 2 + 48),), "pcb", 0.3),
    ]
    for _ in range(int(rng.integers(2, 6))):
        x, y = rng.uniform(-w / 2 + 8, w / 2 - 12), rng.uniform(-h / 2 + 8, -h / 2 + 40)
        parts.append(Poly((rect_pts(x, y, x + rng.uniform(4, 12), y + rng.uniform(4, 10)),), "steel", 0.1))
    parts.append(Line(ellipse_pts(w / 4, -h / 2 + 14, 6, 6, 12), "steel", 0.4, 1.5, True))
    return parts


def charger(rng: np.random.Generator) -> list[Part]:
    w, h = rng.uniform(40, 90), rng.uniform(40, 80)
    parts: list[Part] = [Poly((rect_pts(-w / 2, -h / 2, w / 2, h / 2),), "plastic", rng.uniform(2, 3.5)),
                         Poly((rect_pts(-w / 2 + 3, -h / 2 + 3, w / 2 - 3, h / 2 - 3),), "pcb", 0.2)]
    tw = rng.uniform(12, 22)
    parts.append(Poly((rect_pts(-tw / 2, -tw / 2, tw / 2, tw / 2),), "copper", rng.uniform(0.8, 1.6)))
    for _ in range(int(rng.integers(2, 6))):
        x, y = rng.uniform(-w / 2 + 4, w / 2 - 10), rng.uniform(-h / 2 + 4, h / 2 - 10)
        parts.append(Poly((rect_pts(x, y, x + rng.uniform(3, 9), y + rng.uniform(3, 9)),), "aluminium", rng.uniform(0.5, 1.2)))
    if rng.random() < 0.6:
        parts.append(Poly((rect_pts(-4, -h / 2 - 18, -2, -h / 2), rect_pts(2, -h / 2 - 18, 4, -h / 2)), "copper", 0.15))
    return parts


def cable(rng: np.random.Generator) -> list[Part]:
    n = int(rng.integers(4, 9))
    steps = rng.normal(0, 1, (n, 2)).cumsum(axis=0) * rng.uniform(25, 45)
    pts = steps - steps.mean(axis=0)
    return [Line(pts, "plastic", 0.4, rng.uniform(4, 6)), Line(pts, "copper", rng.uniform(0.05, 0.15), rng.uniform(1, 2.5))]


def keys(rng: np.random.Generator) -> list[Part]:
    parts: list[Part] = [Line(ellipse_pts(0, 0, 12, 12, 14), "steel", 0.2, 1.5, True)]
    for k in range(int(rng.integers(1, 5))):
        a = rng.uniform(0, 2 * np.pi)
        c, s = np.cos(a), np.sin(a)
        length, head = rng.uniform(40, 60), rng.uniform(10, 14)
        bit = np.array([[0, -3.5], [length, -3.5], [length, 0]] + [[length - 5 * i - 2.5, 3.5 + (i % 2) * 2] for i in range(int(length // 10))] + [[0, 3.5]], float)
        bit = bit + (head + 12, 0)
        body = np.concatenate([ellipse_pts(12 + head / 2, 0, head, head * 0.8, 12)], axis=0)
        for poly in (bit, body):
            rot = np.stack([c * poly[:, 0] - s * poly[:, 1], s * poly[:, 0] + c * poly[:, 1]], 1)
            parts.append(Poly((rot,), "brass" if k % 2 else "steel", rng.uniform(0.15, 0.25)))
    return parts


def coins(rng: np.random.Generator) -> list[Part]:
    parts: list[Part] = []
    for _ in range(int(rng.integers(1, 7))):
        r = rng.uniform(8, 14)
        parts.append(Poly((ellipse_pts(rng.uniform(-25, 25), rng.uniform(-25, 25), r, r, 16),), "copper", rng.uniform(0.12, 0.22)))
    return parts


def spring(rng: np.random.Generator) -> list[Part]:
    n, length, r = int(rng.integers(6, 16)), rng.uniform(25, 70), rng.uniform(3, 8)
    xs = np.linspace(-length / 2, length / 2, 2 * n)
    pts = np.stack([xs, np.where(np.arange(2 * n) % 2 == 0, -r, r)], 1)
    return [Line(pts, "steel", rng.uniform(0.08, 0.2), rng.uniform(0.8, 1.5))]


def screws(rng: np.random.Generator) -> list[Part]:
    parts: list[Part] = []
    for _ in range(int(rng.integers(1, 9))):
        x, y, length = rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(10, 45)
        a = rng.uniform(0, np.pi)
        c, s = np.cos(a), np.sin(a)
        parts.append(Line(np.array([[x, y], [x + c * length, y + s * length]]), "steel", rng.uniform(0.3, 0.5), rng.uniform(2, 4)))
        parts.append(Poly((ellipse_pts(x, y, 4, 4, 8),), "steel", 0.3))
    return parts


def scissors(rng: np.random.Generator) -> list[Part]:
    length, spread = rng.uniform(55, 100), rng.uniform(0.05, 0.35)
    parts: list[Part] = []
    for sign in (-1.0, 1.0):
        a = sign * spread
        c, s = np.cos(a), np.sin(a)
        bl = np.array([[0, -3], [length, -1], [length, 1], [0, 4]], float)
        parts.append(Poly((np.stack([c * bl[:, 0] - s * bl[:, 1], s * bl[:, 0] + c * bl[:, 1]], 1),), "steel", rng.uniform(0.15, 0.3)))
        ring = ellipse_pts(-28 * c, -28 * s + sign * 6, 14, 10, 14)
        parts.append(Line(ring, "plastic" if rng.random() < 0.7 else "steel", 0.5, 4.0, True))
        parts.append(Line(np.array([[0, 0], [-16 * c, -16 * s + sign * 4]]), "steel", 0.3, 4.0))
    return parts


def cutlery(rng: np.random.Generator) -> list[Part]:
    """Spoon, fork or table knife with a rounded tip: long flat steel, not a threat."""
    length = rng.uniform(150, 200)
    handle = Poly((np.array([[-length / 2, -5], [length / 6, -3], [length / 6, 3], [-length / 2, 5]], float),), "steel", rng.uniform(0.2, 0.35))
    kind = rng.integers(3)
    if kind == 0:
        head = Poly((ellipse_pts(length / 3, 0, length / 6, 18, 16),), "steel", 0.15)
    elif kind == 1:
        head = Poly(tuple(rect_pts(length / 6, y - 1.2, length / 2, y + 1.2) for y in (-9, -3, 3, 9)) + (rect_pts(length / 6, -10, length / 4, 10),), "steel", 0.25)
    else:
        head = Poly((np.concatenate([rect_pts(length / 6, -8, length / 2 - 8, 8)[:2], ellipse_pts(length / 2 - 8, 0, 8, 8, 8, -np.pi / 2, np.pi / 2), rect_pts(length / 6, -8, length / 2 - 8, 8)[2:]]),), "steel", 0.15)
    return [handle, head]


def tool(rng: np.random.Generator) -> list[Part]:
    """A spanner: a steel bar with open jaws."""
    length = rng.uniform(100, 200)
    jaw = ellipse_pts(length / 2, 0, 14, 14, 14)
    return [Poly((rect_pts(-length / 2, -7, length / 2, 7), jaw, ellipse_pts(-length / 2, 0, 11, 11, 12)), "steel", rng.uniform(0.4, 0.8), (rect_pts(length / 2, -5, length / 2 + 16, 5),))]


def paper_clips(rng: np.random.Generator) -> list[Part]:
    """Paper clips and binder clips: thin steel wire loops, a folded steel sheet."""
    parts: list[Part] = []
    for _ in range(int(rng.integers(1, 6))):
        x, y, length = rng.uniform(-25, 25), rng.uniform(-25, 25), rng.uniform(25, 50)
        w = length * 0.3
        loop = np.array([[0, 0], [length, 0], [length, w], [w * 0.3, w], [w * 0.3, w * 0.25], [length * 0.8, w * 0.25], [length * 0.8, w * 0.7]], float)
        a = rng.uniform(0, 2 * np.pi)
        c, s = np.cos(a), np.sin(a)
        parts.append(Line(np.stack([c * loop[:, 0] - s * loop[:, 1] + x, s * loop[:, 0] + c * loop[:, 1] + y], 1), "steel", 0.1, 1.0))
    if rng.random() < 0.4:
        w = rng.uniform(15, 40)
        parts.append(Poly((rect_pts(-w / 2, -w / 3, w / 2, w / 3),), "steel", rng.uniform(0.2, 0.4), (rect_pts(-w / 2 + 2, -w / 3 + 2, w / 2 - 2, w / 3 - 2),)))
        parts.append(Line(np.array([[-w / 3, w / 3], [-w / 3, w], [w / 3, w], [w / 3, w / 3]]), "steel", 0.15, 1.5))
    return parts


def disc(rng: np.random.Generator) -> list[Part]:
    """Gears, washers, wheels and rims: dense round parts with a hub, spokes or teeth."""
    u = rng.uniform
    r = u(10, 90)
    metal = str(rng.choice(["steel", "aluminium", "zinc", "brass"]))
    t = u(0.2, 0.8) if metal != "aluminium" else u(0.8, 3.0)
    kind = rng.integers(3)
    if kind == 0:  # gear
        n = int(rng.integers(10, 40))
        ang = np.linspace(0, 2 * np.pi, 4 * n, endpoint=False)
        rad = np.where((np.arange(4 * n) // 2) % 2 == 0, r, r * u(0.85, 0.93))
        outline = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1)
        return [Poly((outline,), metal, t, (ellipse_pts(0, 0, r * u(0.1, 0.35), r * u(0.1, 0.35), 16),))]
    if kind == 1:  # washer / bearing ring
        return [Poly((ellipse_pts(0, 0, r, r, 32),), metal, t, (ellipse_pts(0, 0, r * u(0.3, 0.7), r * u(0.3, 0.7), 24),))]
    n = int(rng.integers(3, 7))  # wheel: rim, hub, spokes
    parts: list[Part] = [Line(ellipse_pts(0, 0, r, r, 40), metal, t * 2, max(2.0, r * u(0.05, 0.12)), True),
                         Poly((ellipse_pts(0, 0, r * 0.22, r * 0.22, 16),), metal, t * 2, (ellipse_pts(0, 0, r * 0.08, r * 0.08, 10),))]
    for k in range(n):
        a = 2 * np.pi * k / n
        parts.append(Line(np.array([[0, 0], [r * np.cos(a), r * np.sin(a)]]), metal, t * 1.5, max(2.0, r * u(0.08, 0.2))))
    return parts


def shoe(rng: np.random.Generator) -> list[Part]:
    """A shoe: rubber sole, textile/leather upper, often a steel shank and eyelets or a buckle."""
    u = rng.uniform
    length, width = u(220, 300), u(75, 105)
    outline = np.concatenate([ellipse_pts(length / 2 - width / 2, 0, width / 2, width / 2, 12, -np.pi / 2, np.pi / 2),
                              ellipse_pts(-length / 2 + width * 0.4, 0, width * 0.4, width * 0.42, 12, np.pi / 2, 3 * np.pi / 2)])
    parts: list[Part] = [Poly((outline,), "rubber", u(1.0, 3.0)), Poly((outline * 0.9,), "textile", u(3, 8))]
    if rng.random() < 0.5:
        parts.append(Poly((rect_pts(-length * 0.3, -6, -length * 0.05, 6),), "steel", u(0.1, 0.2)))
    if rng.random() < 0.6:
        for k in range(int(rng.integers(3, 7))):
            for side in (-1, 1):
                parts.append(Line(ellipse_pts(length * 0.05 + 12 * k, side * width * 0.25, 2.5, 2.5, 8), "steel", 0.1, 1.0, True))
    return parts


def laptop(rng: np.random.Generator) -> list[Part]:
    """A laptop or tablet: aluminium shell, display glass, battery pack, board with chips."""
    u = rng.uniform
    w, h = u(180, 340), u(130, 240)
    parts: list[Part] = [Poly((rect_pts(-w / 2, -h / 2, w / 2, h / 2),), "aluminium", u(0.1, 0.3)),
                         Poly((rect_pts(-w / 2, -h / 2, w / 2, h / 2),), "glass", u(0.1, 0.2)),
                         Poly((rect_pts(-w * 0.45, h * 0.05, w * 0.45, h * 0.45),), "cell", u(0.3, 0.6)),
                         Poly((rect_pts(-w * 0.45, -h * 0.45, w * 0.2, 0),), "pcb", 0.15)]
    for _ in range(int(rng.integers(3, 9))):
        x, y = u(-w * 0.43, w * 0.1), u(-h * 0.43, -h * 0.1)
        parts.append(Poly((rect_pts(x, y, x + u(5, 25), y + u(5, 20)),), "copper" if rng.random() < 0.3 else "steel", u(0.05, 0.2)))
    for _ in range(int(rng.integers(4, 12))):  # screws
        x, y = u(-w / 2 + 4, w / 2 - 4), u(-h / 2 + 4, h / 2 - 4)
        parts.append(Poly((ellipse_pts(x, y, 2.5, 2.5, 8),), "steel", 0.3))
    return parts


def circuit_board(rng: np.random.Generator) -> list[Part]:
    """A bare PCB with chips, connectors and a crystal can."""
    u = rng.uniform
    w, h = u(40, 160), u(30, 110)
    parts: list[Part] = [Poly((rect_pts(-w / 2, -h / 2, w / 2, h / 2),), "pcb", 0.16)]
    for _ in range(int(rng.integers(3, 12))):
        x, y = u(-w / 2, w / 2 - 10), u(-h / 2, h / 2 - 8)
        parts.append(Poly((rect_pts(x, y, x + u(3, 20), y + u(3, 15)),), str(rng.choice(["copper", "steel", "plastic"])), u(0.05, 0.4)))
    return parts


def headphones(rng: np.random.Generator) -> list[Part]:
    """Headphones: a steel headband arc and two ear cups with magnets and coils."""
    u = rng.uniform
    r = u(60, 90)
    parts: list[Part] = [Line(ellipse_pts(0, 0, r, r * u(0.9, 1.2), 20, np.pi, 2 * np.pi), "steel", 0.15, u(2, 5))]
    for side in (-1, 1):
        parts.append(Poly((ellipse_pts(side * r, 10, 30, 35, 16),), "plastic", 2.0))
        parts.append(Poly((ellipse_pts(side * r, 10, 10, 10, 12),), "steel", u(0.4, 0.8)))
        parts.append(Line(ellipse_pts(side * r, 10, 15, 15, 16), "copper", 0.2, 1.5, True))
    return parts


def dense_food(rng: np.random.Generator) -> list[Part]:
    """Benign dense organics: cheese, soap, a block of chocolate or dried fruit."""
    w, h = rng.uniform(40, 140), rng.uniform(30, 90)
    return [Poly((rect_pts(-w / 2, -h / 2, w / 2, h / 2),), "organic_dense", rng.uniform(2, 6))]


CONFUSERS: tuple[Callable[[np.random.Generator], list[Part]], ...] = (
    keys, coins, spring, screws, scissors, cutlery, tool, paper_clips, disc, phone, charger, headphones, circuit_board,
)
"""Benign metal that looks like something: drawn alone and large in close-up views, so a model
learns that a big dark object is not a gun by default."""

CLUTTER: tuple[tuple[Callable[[np.random.Generator], list[Part]], float], ...] = (
    (book, 0.6), (bottle, 0.4), (food, 0.4), (phone, 0.35), (charger, 0.35), (cable, 0.8), (keys, 0.45),
    (coins, 0.45), (spring, 0.35), (screws, 0.45), (scissors, 0.3), (cutlery, 0.35), (tool, 0.25),
    (paper_clips, 0.3), (disc, 0.3), (shoe, 0.2), (laptop, 0.15), (circuit_board, 0.2), (headphones, 0.15), (dense_food, 0.15),
)
