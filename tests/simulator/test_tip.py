"""Threat Image Projection: crops written by our own generator (and GDXray's, where present)
projected into synthetic parcels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from simulator.materials import Canvas
from simulator.tip import Crop, load_crop, main, project
from simulator.xray import synth_parcel
from station.kernel.imaging import ImageError

GDXRAY = Path(__file__).resolve().parents[3] / "shared" / "data" / "gdxray-objects"


def write_crop(path: Path, seed: int) -> None:
    """A 16-bit X-ray crop of a steel blade on air, as a scanner would export it."""
    rng = np.random.default_rng(seed)
    cv = Canvas(120, 160)
    blade = np.array([[30, 50], [130, 40], [140, 60], [35, 75]], float) + rng.uniform(-5, 5, (4, 2))
    cv.poly([blade], "steel", 0.15)
    cv.poly([np.array([[70, 52], [90, 50], [90, 60], [70, 62]], float)], "steel", 0.0)  # nothing: a slot
    high, _ = cv.transmissions(rng, 20000, 10000, 0.7)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), high)


@pytest.fixture
def crops(tmp_path: Path) -> Path:
    for i in range(3):
        write_crop(tmp_path / "crops" / "blade" / f"b{i}.png", i)
    return tmp_path / "crops"


def test_projection_only_darkens_and_the_box_holds_the_object(crops: Path) -> None:
    crop = load_crop(crops / "blade" / "b0.png")
    assert crop.label == "blade" and crop.att.max() > 0.2 and crop.att[0, 0] == 0.0  # background -> T = 1
    for seed in range(5):
        rng = np.random.default_rng(seed)
        scan = synth_parcel(rng)
        done = project(scan.high, scan.low, crop, rng)
        assert (done.high <= scan.high).all() and done.low is not None and (done.low <= scan.low).all()
        changed = (scan.high.astype(np.int64) - done.high) > 0.05 * scan.high
        b = done.box
        assert b.label == "blade" and 0 <= b.x1 < b.x2 <= scan.high.shape[1] and 0 <= b.y1 < b.y2 <= scan.high.shape[0]
        ys, xs = np.nonzero(changed)
        assert len(xs) > 50, "the blade should visibly darken the scan"
        assert b.x1 <= xs.min() and xs.max() < b.x2 and b.y1 <= ys.min() and ys.max() < b.y2
        # steel darkens the low plane more than the high one (k = mu_low / mu_high > 1)
        inside = changed & (scan.low > 5000) & (done.low > 50)  # the low plane well above its floor
        att_high = -np.log(done.high[inside] / scan.high[inside])
        att_low = -np.log(done.low[inside] / scan.low[inside])
        assert np.median(att_low) > 2 * np.median(att_high)


def test_single_energy_projection_leaves_no_low_plane() -> None:
    rng = np.random.default_rng(1)
    scan = synth_parcel(rng)
    att = np.zeros((20, 20), np.float32)
    att[5:15, 8:12] = 2.0
    done = project(scan.high, None, Crop("bar", att, "made here"), rng, size=(0.2, 0.2))
    assert done.low is None and (done.high <= scan.high).all()


def test_same_seed_same_files(crops: Path, tmp_path: Path) -> None:
    outs = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        assert main(["--crops", str(crops), "--out", str(tmp_path / name), "--count", "3", "--seed", str(seed), "--benign-share", "0.34"]) == 0
        outs.append({p.relative_to(tmp_path / name): p.read_bytes() for p in (tmp_path / name).rglob("*") if p.is_file()})
    assert outs[0] == outs[1] and outs[0] != outs[2]
    a = tmp_path / "a"
    assert (a / "data.yaml").read_text().strip().endswith("names: [blade]")
    assert sorted(p.name for p in (a / "images").iterdir()) == ["tip-00000.xde", "tip-00001.xde", "tip-00002.xde"]
    assert (a / "labels" / "tip-00000.txt").read_text() == ""  # the benign share: clean parcels
    cls, *box = (a / "labels" / "tip-00001.txt").read_text().split()
    assert cls == "0" and all(0 < float(v) < 1 for v in box)


def test_single_energy_output_is_16_bit_png(crops: Path, tmp_path: Path) -> None:
    assert main(["--crops", str(crops), "--out", str(tmp_path / "out"), "--count", "1", "--single-energy"]) == 0
    img = cv2.imread(str(tmp_path / "out" / "images" / "tip-00000.png"), cv2.IMREAD_UNCHANGED)
    assert img.dtype == np.uint16 and img.ndim == 2


def test_a_truncated_crop_is_reported_and_the_rest_used(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crops = tmp_path / "crops"
    write_crop(crops / "blade" / "good.png", 0)
    good = (crops / "blade" / "good.png").read_bytes()
    (crops / "blade" / "broken.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageError, match=r"broken\.png: bad png header: PNG is truncated"):
        load_crop(crops / "blade" / "broken.png")
    assert main(["--crops", str(crops), "--out", str(tmp_path / "out"), "--count", "8"]) == 1
    err = capsys.readouterr().err
    assert err.count("skipped crop:") == 1 and "broken.png" in err  # reported once, then left out
    assert len(list((tmp_path / "out" / "images").iterdir())) == 8


def test_a_folder_of_broken_crops_cannot_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "crops" / "gun").mkdir(parents=True)
    (tmp_path / "crops" / "gun" / "g.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    assert main(["--crops", str(tmp_path / "crops"), "--out", str(tmp_path / "out"), "--count", "1"]) == 2
    assert "no usable crop left" in capsys.readouterr().err
    assert main(["--crops", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]) == 2


@pytest.mark.skipif(not GDXRAY.is_dir(), reason="shared/data/gdxray-objects absent (fresh clone outside CI): no real crops to project")
def test_real_gdxray_crops_project_into_synthetic_parcels() -> None:
    rng = np.random.default_rng(0)
    for folder in ("gun", "shuriken", "razor_blade"):
        for path in sorted((GDXRAY / folder).glob("*.jpg"))[:2]:
            crop = load_crop(path)
            assert crop.label == folder
            scan = synth_parcel(rng)
            done = project(scan.high, scan.low, crop, rng)
            assert (done.high <= scan.high).all() and done.low is not None and (done.low <= scan.low).all()
            changed = (scan.high.astype(np.int64) - done.high) > 0.1 * scan.high
            ys, xs = np.nonzero(changed)
            b = done.box
            assert len(xs) > 100, f"{path.name}: the object should show"
            assert b.x1 <= xs.min() and xs.max() < b.x2 and b.y1 <= ys.min() and ys.max() < b.y2
            # the box is the object, not the crop's background: most of it is visibly darker
            assert changed[b.y1 : b.y2, b.x1 : b.x2].mean() > 0.15, f"{path.name}: box mostly background"
