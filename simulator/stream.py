"""The simulated item stream: what each item is, seeded so a run repeats exactly.

Item `i` of seed `s` is always the same item (its own generator is seeded with (s, i)), however many
items came before it and in whatever order they are asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from simulator.xray import THREAT_CLASSES
from station.config import SimulatorSection
from station.ead.s10 import make_s10

SERVICES = ("RR", "RX", "CP", "CX", "EE", "LX", "UA")
COUNTRIES = ("GB", "FR", "DE", "NL", "CN", "US", "JP", "CH", "IT", "ES", "PL", "CA")
GOODS = (  # description, HS code, net weight range kg, value range
    ("cotton T-shirts", "610910", (0.2, 1.0), (10, 60)),
    ("paperback novels", "490199", (0.3, 2.0), (8, 40)),
    ("wireless headphones", "851830", (0.2, 0.5), (30, 200)),
    ("leather shoes", "640399", (0.6, 1.5), (40, 150)),
    ("ceramic mug", "691200", (0.3, 0.8), (5, 25)),
    ("USB cables", "854442", (0.1, 0.4), (5, 20)),
    ("children's toy car", "950300", (0.2, 1.0), (10, 50)),
    ("phone case", "392690", (0.05, 0.2), (5, 30)),
)
NAMES = ("A. Martin", "J. Smith", "L. Chen", "M. Rossi", "K. Tanaka", "S. Novak", "P. Dubois", "E. Garcia")


@dataclass(frozen=True)
class SimTruth:
    """The simulator's ground truth for one item: what it is and what the station should learn."""

    index: int
    scan_id: str
    barcode: str | None  # what the reader sends; None = no-read
    s10_valid: bool
    threats: tuple[str, ...]
    length_mm: float
    weight_kg: float  # what the checkweigher reads: the declared gross weight within 2 % when declared
    has_ead: bool
    image_fault: bool  # the scanner writes a corrupt image for this item


class ItemStream:
    def __init__(self, config: SimulatorSection, epoch: datetime | None = None) -> None:
        self.config = config
        self.epoch = epoch or datetime(2026, 1, 1, tzinfo=timezone.utc)

    def _rng(self, index: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, index, purpose])

    def item(self, index: int) -> SimTruth:
        c, rng = self.config, self._rng(index, 0)
        valid_id = make_s10(str(rng.choice(SERVICES)), int(rng.integers(0, 10**8)), str(rng.choice(COUNTRIES)))
        roll = rng.random()
        if roll < c.noread_share:
            barcode, valid = None, False
        elif roll < c.noread_share + c.invalid_s10_share:
            wrong = (int(valid_id[10]) + 1 + int(rng.integers(0, 9))) % 10  # any digit but the right one
            barcode, valid = valid_id[:10] + str(wrong) + valid_id[11:], False
        else:
            barcode, valid = valid_id, True
        threats: tuple[str, ...] = ()
        if rng.random() < c.threat_share:
            threats = (str(rng.choice(THREAT_CLASSES)),)
        length_mm = float(rng.uniform(250.0, 450.0))
        has_ead = valid and rng.random() >= c.ead_missing_share
        image_fault = rng.random() < c.unreadable_image_share
        weight_kg = float(rng.uniform(0.3, 5.0))
        if has_ead and barcode is not None:
            declared = float(self._record(index, barcode)["total_gross_weight_kg"])  # type: ignore[arg-type]
            weight_kg = declared * float(rng.uniform(0.98, 1.02))
        return SimTruth(index=index, scan_id=f"scan-{index:06d}", barcode=barcode, s10_valid=valid, threats=threats,
                        length_mm=length_mm, weight_kg=weight_kg, has_ead=has_ead, image_fault=image_fault)

    def ead_record(self, truth: SimTruth) -> dict[str, object] | None:
        """The CN 23 record central sends for this item (None when it has none)."""
        if not truth.has_ead or truth.barcode is None:
            return None
        return self._record(truth.index, truth.barcode)

    def _record(self, index: int, item_id: str) -> dict[str, object]:
        rng = self._rng(index, 1)
        pieces = []
        for _ in range(int(rng.integers(1, 4))):
            description, hs, weight, value = GOODS[int(rng.integers(0, len(GOODS)))]
            quantity = int(rng.integers(1, 4))
            pieces.append({
                "description": description, "quantity": quantity,
                "net_weight_kg": round(float(rng.uniform(*weight)) * quantity, 3),
                "value": round(float(rng.uniform(*value)) * quantity, 2), "currency": "EUR",
                "hs_code": hs, "origin_country": item_id[-2:],
            })
        net = sum(float(p["net_weight_kg"]) for p in pieces)  # type: ignore[arg-type]
        return {
            "item_id": item_id,
            "version": 1,
            "sender": {"name": str(rng.choice(NAMES)), "address": f"{int(rng.integers(1, 200))} High Street",
                       "postcode": f"{int(rng.integers(10000, 99999))}", "country": item_id[-2:]},
            "addressee": {"name": str(rng.choice(NAMES)), "address": f"{int(rng.integers(1, 200))} Station Road",
                          "postcode": f"{int(rng.integers(10000, 99999))}", "country": "GB"},
            "category": str(rng.choice(["gift", "sale_of_goods", "commercial_sample"])),
            "contents": pieces,
            "total_gross_weight_kg": round(net + float(rng.uniform(0.1, 0.4)), 3),
            "total_value": round(sum(float(p["value"]) for p in pieces), 2),  # type: ignore[arg-type]
            "currency": "EUR",
            "declared_at": (self.epoch + timedelta(minutes=index)).isoformat(),
        }

