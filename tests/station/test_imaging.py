"""Image loading: every accepted format, every refused file, and material rendering."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from drivers.xde import encode_xde
from simulator.xray import synth_parcel
from station.kernel.imaging import ImageError, load_image, render_material

GDXRAY = Path(__file__).resolve().parents[3] / "shared" / "data" / "gdxray-objects"


def _ramp(dtype: type, colour: bool) -> np.ndarray:
    top = 255 if dtype == np.uint8 else 65535
    img = np.tile(np.linspace(0, top, 64).astype(dtype), (40, 1))
    return np.dstack([img, img // 2, img]) if colour else img


FORMATS = [(ext, dtype, colour) for ext in (".png", ".tif", ".jpg") for dtype in (np.uint8, np.uint16) for colour in (False, True) if not (ext == ".jpg" and dtype == np.uint16)]  # no 16-bit JPEG


@pytest.mark.parametrize(("ext", "dtype", "colour"), FORMATS)
def test_loads_grey_and_colour_8_and_16_bit(tmp_path: Path, ext: str, dtype: type, colour: bool) -> None:
    path = tmp_path / f"scan{ext}"
    assert cv2.imwrite(str(path), _ramp(dtype, colour))
    img = load_image(path)
    assert img.gray.dtype == np.uint8 and img.gray.shape == (40, 64)
    assert img.kind == ("colour" if colour else "grey16" if dtype == np.uint16 else "grey8")
    assert img.gray[:, -1].mean() > img.gray[:, 0].mean() + 100  # bright stays bright
    assert img.high is None and img.path == str(path)


def test_three_channel_greyscale_jpeg_is_grey(tmp_path: Path) -> None:
    path = tmp_path / "grey3.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(_ramp(np.uint8, False), cv2.COLOR_GRAY2BGR))
    assert load_image(path).kind == "grey8"


def test_dual_energy_container(tmp_path: Path) -> None:
    scan = synth_parcel(np.random.default_rng(0), ("gun",))
    path = tmp_path / "item.xde"
    path.write_bytes(encode_xde(scan.high, scan.low, {"item": "RR123456785GB"}))
    img = load_image(path)
    assert img.kind == "dual-energy"
    assert img.high is not None and img.low is not None
    np.testing.assert_array_equal(img.high, scan.high)
    assert img.gray[0, 0] > 240  # air is bright
    b = scan.boxes[0]
    assert img.gray[b.y1 : b.y2, b.x1 : b.x2].min() < 40  # the gun is dark


@pytest.mark.parametrize("low_first", [False, True])
def test_two_page_16_bit_tiff_is_a_dual_energy_scan_in_either_page_order(tmp_path: Path, low_first: bool) -> None:
    scan = synth_parcel(np.random.default_rng(1), ("knife",))
    path = tmp_path / "item.tif"
    assert cv2.imwritemulti(str(path), [scan.low, scan.high] if low_first else [scan.high, scan.low])
    img = load_image(path)
    assert img.kind == "dual-energy"
    np.testing.assert_array_equal(img.high, scan.high)
    np.testing.assert_array_equal(img.low, scan.low)
    np.testing.assert_array_equal(render_material(img.high, img.low), render_material(scan.high, scan.low))


def test_multi_page_tiffs_that_are_not_one_dual_energy_scan_are_refused(tmp_path: Path) -> None:
    plane = np.full((40, 60), 50000, np.uint16)
    cases = {
        "sizes.tif": ([plane, plane[:20]], "pages of different sizes"),
        "three.tif": ([plane, plane, plane], "3 pages"),
        "eight.tif": ([plane, (plane // 257).astype(np.uint8)], "page 2 is uint8"),
    }
    for name, (pages, problem) in cases.items():
        assert cv2.imwritemulti(str(tmp_path / name), pages)
        with pytest.raises(ImageError, match=rf"{name}: .*{problem}"):
            load_image(tmp_path / name)


def test_pseudo_colour_scans_load_with_metal_darker_than_organic(tmp_path: Path) -> None:
    """An operator's pseudo-colour export (orange organic, blue metal) still reads dense-is-dark."""
    scan = synth_parcel(np.random.default_rng(2), ("gun",))
    path = tmp_path / "colour.png"
    assert cv2.imwrite(str(path), render_material(scan.high, scan.low))
    img = load_image(path)
    assert img.kind == "colour"
    b = scan.boxes[0]
    gun = img.gray[b.y1 : b.y2, b.x1 : b.x2]
    assert gun.min() < 60 and img.gray[0, 0] > 240


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_png_bomb_refused_from_its_header(tmp_path: Path) -> None:
    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 1000)  # far too little data: never decoded
    path = tmp_path / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b""))
    with pytest.raises(ImageError, match=r"bomb\.png.*60000 x 60000"):
        load_image(path)


def test_refused_files_raise_image_error_naming_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), _ramp(np.uint8, False))
    data = good.read_bytes()
    cases = {
        "empty.png": b"",
        "text.png": b"this is not an image\n",
        "truncated.png": data[: len(data) // 2],
        "short.png": data[:20],
        "liar.jpg": data,  # a PNG wearing a .jpg extension
        "junk.xde": b"XDE1\x05\x00\x00\x00{bad}",
        "scan.bmp": data,
    }
    for name, payload in cases.items():
        path = tmp_path / name
        path.write_bytes(payload)
        with pytest.raises(ImageError, match=name.replace(".", r"\.")):
            load_image(path)
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "missing.png")


def test_every_truncation_of_a_jpeg_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.jpg"
    cv2.imwrite(str(path), _ramp(np.uint8, False))
    data = path.read_bytes()
    for n in range(0, len(data) - 2, max(1, len(data) // 60)):
        path.write_bytes(data[:n])
        with pytest.raises(ImageError):
            load_image(path)


def test_render_material_colours() -> None:
    air = np.full((8, 8), 65535, np.uint16)
    def plane(t: float) -> np.ndarray:
        return np.full((8, 8), int(t * 65535), np.uint16)
    organic = render_material(plane(np.exp(-0.5)), plane(np.exp(-0.7)))[4, 4]  # ratio 1.4
    metal = render_material(plane(np.exp(-0.6)), plane(np.exp(-3.1)))[4, 4]  # ratio ~5
    mixed = render_material(plane(np.exp(-0.5)), plane(np.exp(-1.4)))[4, 4]  # ratio 2.8
    dense = render_material(plane(0.001), plane(0.0))[4, 4]
    b, g, r = (int(v) for v in organic)
    assert r > g > b  # orange
    assert metal[0] > metal[1] and metal[0] > metal[2]  # blue
    assert mixed[1] > mixed[0] and mixed[1] > mixed[2]  # green
    assert dense.max() == 0  # impenetrable is black
    assert render_material(air, air).min() >= 250  # air is white


@pytest.mark.skipif(not GDXRAY.is_dir(), reason="shared/data/gdxray-objects absent (fresh clone outside CI)")
def test_real_gdxray_crops_load_as_grey() -> None:
    for folder in ("gun", "other"):
        path = sorted((GDXRAY / folder).glob("*.jpg"))[0]
        img = load_image(path)
        assert img.kind == "grey8" and img.gray.ndim == 2
