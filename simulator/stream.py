"""The simulated item stream: what each item is, seeded so a run repeats exactly.

Item `i` of seed `s` is always the same item (its own generator is seeded with (s, i)), however many
items came before it and in whatever order they are asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from simulator.ead_feed import DEFECTS, make_record
from simulator.xray import THREAT_CLASSES
from station.config import SimulatorSection
from station.ead.s10 import make_s10

SERVICES = ("RR", "RX", "CP", "CX", "EE", "LX", "UA")
COUNTRIES = ("GB", "FR", "DE", "NL", "CN", "US", "JP", "CH", "IT", "ES", "PL", "CA")
# Declaration defects central's feed carries (simulator/ead_feed.py); a wrong S10 in the record itself is
# left out: the record would name another item, which the lane sees as a missing declaration.
FEED_DEFECTS = tuple(d for d in DEFECTS if d != "s10_invalid")


@dataclass(frozen=True)
class SimTruth:
    """The simulator's ground truth for one item: what it is and what the station should learn."""

    index: int
    scan_id: str
    barcode: str | None  # what the reader sends; None = no-read
    s10_valid: bool
    threats: tuple[str, ...]
    length_mm: float
    weight_kg: float  # what the checkweigher reads
    has_ead: bool
    ead_late: bool  # central sends the declaration only after the item has passed the gate
    ead_defect: str | None  # a simulator/ead_feed.py DEFECTS name: what is wrong with the declaration
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
        ead_late = has_ead and rng.random() < c.ead_late_share
        weight_kg = float(rng.uniform(0.3, 5.0))
        ead_defect = None
        if has_ead and rng.random() < c.ead_defect_share:
            choices = [d for d in FEED_DEFECTS if threats or d != "content_mismatch"]
            ead_defect = choices[int(rng.integers(len(choices)))]
        return SimTruth(index=index, scan_id=f"scan-{index:06d}", barcode=barcode, s10_valid=valid, threats=threats,
                        length_mm=length_mm, weight_kg=weight_kg, has_ead=has_ead, ead_late=ead_late,
                        ead_defect=ead_defect, image_fault=image_fault)

    def ead_record(self, truth: SimTruth) -> dict[str, object] | None:
        """The CN 23 record central sends for this item (None when it has none): one that agrees with
        the parcel (its weight, its threats declared), or one with the item's seeded defect."""
        if not truth.has_ead or truth.barcode is None:
            return None
        return make_record(self._rng(truth.index, 1), truth.barcode, defect=truth.ead_defect,
                           gross_weight_kg=truth.weight_kg, threats=truth.threats,
                           declared_at=self.epoch + timedelta(minutes=truth.index))
