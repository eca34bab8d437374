"""The scan generator: physical material table, close-up views, single-energy output, and every
object builder drawing inside the frame, the same way for the same seed."""

from __future__ import annotations

import numpy as np
import pytest

from simulator import xray
from simulator.clutter import CLUTTER, CONFUSERS
from simulator.materials import MATERIALS
from simulator.shapes import EXTRA_THREAT_BUILDERS, THREAT_BUILDERS, part_points
from simulator.xray import THREAT_CLASSES, single_energy


def _ratio(name: str) -> float:
    m = MATERIALS[name]
    return m.mu_low / m.mu_high


def test_materials_attenuate_more_at_low_energy_and_order_by_atomic_number() -> None:
    for m in MATERIALS.values():
        assert m.mu_low > m.mu_high > 0, m
    organic = max(_ratio(n) for n in ("textile", "paper", "plastic", "water", "food", "organic_dense"))
    assert organic < _ratio("aluminium") < _ratio("steel")
    assert _ratio("aluminium") < _ratio("cell") < _ratio("steel") < _ratio("copper")
    # per centimetre, steel stops far more than water at both energies (NIST: ~68x and ~17x)
    assert MATERIALS["steel"].mu_low / MATERIALS["water"].mu_low == pytest.approx(67.9, rel=0.02)
    assert MATERIALS["steel"].mu_high / MATERIALS["water"].mu_high == pytest.approx(17.1, rel=0.02)


@pytest.mark.parametrize("builder", [*THREAT_BUILDERS.values(), *EXTRA_THREAT_BUILDERS.values(), *CONFUSERS, *(b for b, _ in CLUTTER)], ids=lambda b: b.__name__)
def test_builders_make_finite_outlines_that_draw_the_same_for_a_seed(builder) -> None:  # type: ignore[no-untyped-def]
    for seed in range(20):
        a, b = builder(np.random.default_rng(seed)), builder(np.random.default_rng(seed))
        pts = part_points(a)
        assert np.isfinite(pts).all() and np.ptp(pts, axis=0).max() > 5.0  # at least 5 mm across
        np.testing.assert_array_equal(pts, part_points(b))


@pytest.mark.parametrize("label", [*THREAT_CLASSES, None])
def test_closeup_fills_the_frame_and_its_box_covers_what_is_in_view(label: str | None) -> None:
    for seed in range(8):
        scan, where = xray.render_closeup(np.random.default_rng(seed), label, height=240, width=360)
        assert scan.high.shape == scan.low.shape == where.shape == (240, 360)
        if label is None:
            assert scan.boxes == () and not where.any()
            continue
        (box,) = scan.boxes
        assert box.label == label
        assert 0 <= box.x1 < box.x2 <= 360 and 0 <= box.y1 < box.y2 <= 240
        # the object's pixels in view lie inside its box (give or take a stroke's width) and the box
        # is no wider than the image; a gun may be cut by the frame, its box then ends at the edge
        ys, xs = np.nonzero(where == 1)
        tol = 3
        assert len(xs) and xs.min() >= box.x1 - tol and xs.max() <= box.x2 + tol and ys.min() >= box.y1 - tol and ys.max() <= box.y2 + tol
        assert max(box.x2 - box.x1, box.y2 - box.y1) >= 0.2 * 240, f"{label} seed {seed} is not a close-up"


def test_some_gun_closeups_are_cut_by_the_frame_as_real_crops_are() -> None:
    cut = 0
    for seed in range(40):
        scan, where = xray.render_closeup(np.random.default_rng(seed), "gun", height=240, width=360)
        (box,) = scan.boxes
        ys, xs = np.nonzero(where == 1)
        cut += xs.min() == 0 or ys.min() == 0 or xs.max() == 359 or ys.max() == 239
        assert (box.x1 == 0) == (xs.min() == 0) and (box.x2 == 360) == (xs.max() == 359)
    assert 4 <= cut <= 36, f"{cut} of 40 gun close-ups touch the frame"


def test_closeup_same_seed_same_scan() -> None:
    a, wa = xray.render_closeup(np.random.default_rng(3), "gun")
    b, wb = xray.render_closeup(np.random.default_rng(3), "gun")
    np.testing.assert_array_equal(a.high, b.high)
    np.testing.assert_array_equal(a.low, b.low)
    np.testing.assert_array_equal(wa, wb)
    assert a.boxes == b.boxes


def test_single_energy_lies_between_the_two_planes_and_air_is_white() -> None:
    scan = xray.synth_parcel(np.random.default_rng(11), ("knife", "gun"))
    gray = single_energy(scan, low_share=0.5)
    assert gray.shape == scan.high.shape and gray.dtype == np.uint8
    assert gray[0, 0] >= 250
    t_low, t_high = scan.low / 65535.0 * 255.0, scan.high / 65535.0 * 255.0
    assert np.all(gray >= np.floor(np.minimum(t_low, t_high)) - 1) and np.all(gray <= np.ceil(np.maximum(t_low, t_high)) + 1)
    # more low-energy photons in the spectrum: the same scan looks darker
    assert single_energy(scan, 0.8).mean() < single_energy(scan, 0.2).mean()


def test_dense_organic_block_is_drawn_but_is_no_detector_class() -> None:
    assert "organic_block" not in THREAT_CLASSES
    scan, where = xray.render_parcel(np.random.default_rng(5), ("organic_block",))
    (box,) = scan.boxes
    assert box.label == "organic_block" and (where == 1).any()
    # organic: the low plane loses a similar share to the high one, unlike steel
    region = (slice(box.y1, box.y2), slice(box.x1, box.x2))
    assert scan.low[region].mean() < scan.high[region].mean()
