"""Synthetic parcels: determinism, boxes, and threats that attenuate."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.xray import THREAT_CLASSES, synth_parcel


def test_same_seed_same_scan() -> None:
    a = synth_parcel(np.random.default_rng(42), ("gun", "battery"))
    b = synth_parcel(np.random.default_rng(42), ("gun", "battery"))
    np.testing.assert_array_equal(a.high, b.high)
    np.testing.assert_array_equal(a.low, b.low)
    assert a.boxes == b.boxes
    c = synth_parcel(np.random.default_rng(43), ("gun", "battery"))
    assert not np.array_equal(a.high, c.high)


@pytest.mark.parametrize("label", THREAT_CLASSES)
def test_boxes_inside_image_and_threat_darkens_its_box(label: str) -> None:
    for seed in range(5):
        scan = synth_parcel(np.random.default_rng(seed), (label,), height=240, width=360)
        assert scan.high.shape == scan.low.shape == (240, 360)
        assert scan.high.dtype == np.uint16
        (box,) = scan.boxes
        assert box.label == label
        assert 0 <= box.x1 < box.x2 <= 360 and 0 <= box.y1 < box.y2 <= 240
        # the same parcel without the threat: same generator state up to the threat draws
        with_threat = scan.high[box.y1 : box.y2, box.x1 : box.x2].astype(np.float64)
        clean = synth_parcel(np.random.default_rng(seed), (), height=240, width=360).high[box.y1 : box.y2, box.x1 : box.x2]
        assert with_threat.mean() < clean.astype(np.float64).mean() - 300, f"{label} seed {seed} does not attenuate"


def test_low_energy_attenuates_more_than_high() -> None:
    scan = synth_parcel(np.random.default_rng(1), ("knife",))
    assert scan.low.astype(np.float64).mean() < scan.high.astype(np.float64).mean()


def test_clean_parcel_has_no_boxes_and_air_is_bright() -> None:
    scan = synth_parcel(np.random.default_rng(7))
    assert scan.boxes == ()
    assert scan.high[0, 0] > 60000  # the corner is outside the box: air


def test_unknown_threat_refused() -> None:
    with pytest.raises(ValueError, match="unknown threat class 'bomb'"):
        synth_parcel(np.random.default_rng(0), ("bomb",))
