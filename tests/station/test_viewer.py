"""The console's image tools: every tool on real files (simulated dual-energy scans, grey images,
GDXray crops), the view's query-string codec, the encoders and the render cache."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qsl

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.xde import encode_xde
from simulator.xray import synth_parcel
from station.kernel.imaging import (
    LoadedImage,
    gray_from_high,
    load_image,
    material_classes,
    render_material,
    render_scan,
)
from station.kernel.viewer import TOOLS, RenderCache, View, ViewError, encode, render_view

GDXRAY = Path(__file__).resolve().parents[3] / "shared" / "data" / "gdxray-objects"

# Where the synthetic scan keeps what (rows, columns), inside the edges the 1-pixel blur touches.
ORGANIC = (slice(24, 96), slice(14, 56))
METAL = (slice(24, 96), slice(84, 126))
DENSE_TOP, DENSE_BOTTOM = (slice(24, 56), slice(154, 186)), (slice(64, 96), slice(154, 186))
AIR = (slice(130, 160), slice(0, 200))


def t16(t: float) -> int:
    return int(t * 65535)


@pytest.fixture
def slabs(tmp_path: Path) -> LoadedImage:
    """A .xde scan of a known organic slab (low/high attenuation ratio 1.4), a metal block (ratio ~5)
    and a dense block that lets 0.3 % through at the top and 2 % at the bottom, on air."""
    high = np.full((160, 200), 65535, np.uint16)
    low = high.copy()
    high[20:100, 10:60], low[20:100, 10:60] = t16(np.exp(-0.5)), t16(np.exp(-0.7))
    high[20:100, 80:130], low[20:100, 80:130] = t16(np.exp(-0.6)), t16(np.exp(-3.1))
    high[20:60, 150:190], high[60:100, 150:190] = t16(0.003), t16(0.02)
    low[20:100, 150:190] = 0
    path = tmp_path / "slabs.xde"
    path.write_bytes(encode_xde(high, low, {}))
    return load_image(path)


@pytest.fixture
def parcel(tmp_path: Path) -> LoadedImage:
    scan = synth_parcel(np.random.default_rng(3), ("gun",))
    path = tmp_path / "parcel.xde"
    path.write_bytes(encode_xde(scan.high, scan.low, {}))
    return load_image(path)


@pytest.fixture
def grey(tmp_path: Path) -> LoadedImage:
    scan = synth_parcel(np.random.default_rng(4), ("knife",))
    path = tmp_path / "grey.png"
    assert cv2.imwrite(str(path), gray_from_high(scan.high))
    return load_image(path)


def _render_material_before_the_shared_classification(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """render_material as it was before material_classes was taken out of it and its colours were
    tabulated, verbatim: float arithmetic on every pixel."""
    organic_c, mixed_c, metal_c = (np.array(c, np.float32) for c in ((0, 140, 255), (40, 180, 0), (255, 90, 0)))
    th = np.clip(high.astype(np.float32) / 65535.0, 1e-5, 1.0)
    tl = np.clip(low.astype(np.float32) / 65535.0, 1e-5, 1.0)
    ah = cv2.GaussianBlur(-np.log(th), (0, 0), 1.0)
    al = cv2.GaussianBlur(-np.log(tl), (0, 0), 1.0)
    ratio = al / np.maximum(ah, 1e-3)
    saturated_low = tl < 2e-3
    metal = (ratio >= 3.6) | (saturated_low & (th > 0.01))
    mixed = ~metal & (ratio >= 2.0)
    colour = np.where(metal[..., None], metal_c, np.where(mixed[..., None], mixed_c, organic_c))
    amount = np.clip((1.0 - th) * 3.0, 0.0, 1.0)[..., None]
    shade = np.clip(np.power(th, 0.35) * 1.2, 0.25, 1.0)[..., None]
    out: np.ndarray = 255.0 * (1.0 - amount) + colour * amount * shade
    out[th < 0.01] = 0.0
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def test_render_material_is_unchanged_by_the_shared_classification_and_the_table(parcel: LoadedImage,
                                                                                 slabs: LoadedImage) -> None:
    rng = np.random.default_rng(0)
    every_high = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    mixed_low = (65535 * (every_high / 65535.0) ** 2.8).astype(np.uint16)  # attenuation ratio 2.8
    cases = [(parcel.high, parcel.low), (slabs.high, slabs.low),
             (rng.integers(0, 65536, (50, 70), dtype=np.uint16), rng.integers(0, 65536, (50, 70), dtype=np.uint16)),
             # every high-plane value as organic, as mixed (most of them) and as metal (most of them)
             (every_high, every_high), (every_high, mixed_low), (every_high, np.zeros_like(every_high))]
    for high, low in cases:
        assert high is not None and low is not None
        before = _render_material_before_the_shared_classification(high, low)
        np.testing.assert_array_equal(render_material(high, low), before)


@pytest.mark.parametrize("colour", ["material", "grey"])
@pytest.mark.parametrize("strip", ["organic", "inorganic"])
@pytest.mark.parametrize("which", ["parcel", "slabs"])
def test_a_strip_is_the_picture_with_the_stripped_matter_as_air(strip: str, colour: str, which: str,
                                                                request: pytest.FixtureRequest) -> None:
    image: LoadedImage = request.getfixturevalue(which)
    assert image.high is not None and image.low is not None
    th, mixed, metal = material_classes(image.high, image.low)
    hidden = ~(mixed | metal) if strip == "organic" else mixed | metal
    expected = render_material(image.high, image.low) if colour == "material" else gray_from_high(image.high)
    expected[hidden & (th >= 0.01)] = 255
    if colour == "grey":
        expected = cv2.cvtColor(expected, cv2.COLOR_GRAY2BGR)
    np.testing.assert_array_equal(render_view(image, View(strip=strip, colour=colour)), expected)


def _shrunk(image: LoadedImage, size: tuple[int, int]) -> LoadedImage:
    if image.high is not None and image.low is not None:
        high, low = (cv2.resize(p, size, interpolation=cv2.INTER_AREA) for p in (image.high, image.low))
        return LoadedImage(image.path, high, image.kind, high, low)
    return LoadedImage(image.path, cv2.resize(image.gray, size, interpolation=cv2.INTER_AREA), image.kind)


@pytest.mark.parametrize("which", ["parcel", "grey"])
def test_the_standard_view_is_render_scan_without_boxes(which: str, request: pytest.FixtureRequest) -> None:
    image: LoadedImage = request.getfixturevalue(which)
    np.testing.assert_array_equal(render_view(image, View()), render_scan(image))
    small = render_view(image, View(), max_side=300)
    assert small.shape == (200, 300, 3)
    np.testing.assert_array_equal(small, render_scan(_shrunk(image, (300, 200))))


SINGLE_TOOLS = [View(negative=True), View(contrast=1), View(contrast=-1), View(gamma=1), View(gamma=-1),
                View(edges=True), View(strip="organic"), View(strip="inorganic"), View(penetration="high"),
                View(penetration="low"), View(colour="grey"), View(colour="pseudo")]


@pytest.mark.parametrize("view", SINGLE_TOOLS, ids=lambda v: v.query())
@pytest.mark.parametrize("which", ["parcel", "slabs"])
def test_every_tool_visibly_changes_a_dual_energy_scan(view: View, which: str, request: pytest.FixtureRequest) -> None:
    image: LoadedImage = request.getfixturevalue(which)
    standard, changed = render_view(image, View()), render_view(image, view)
    assert changed.dtype == np.uint8 and changed.shape == standard.shape
    changed_pixels = np.abs(changed.astype(int) - standard).max(axis=2) > 8
    assert changed_pixels.mean() > 0.01, f"{view.query()} changes {changed_pixels.mean():.2%} of the picture"


def test_negative_turns_white_air_black(slabs: LoadedImage) -> None:
    assert render_view(slabs, View())[AIR].min() == 255
    assert render_view(slabs, View(negative=True))[AIR].max() == 0


def _is_white(region: np.ndarray) -> bool:
    return bool(region.min() >= 250)


def _is_coloured(region: np.ndarray) -> bool:
    return bool((region.astype(int).max(axis=2) - region.min(axis=2)).mean() > 60)


def test_organic_strip_keeps_the_metal_and_inorganic_strip_keeps_the_organic(slabs: LoadedImage) -> None:
    standard = render_view(slabs, View())
    assert _is_coloured(standard[ORGANIC]) and _is_coloured(standard[METAL])
    no_organic = render_view(slabs, View(strip="organic"))
    assert _is_white(no_organic[ORGANIC]), "the organic slab is gone"
    np.testing.assert_array_equal(no_organic[METAL], standard[METAL])  # the metal keeps its colour
    only_organic = render_view(slabs, View(strip="inorganic"))
    assert _is_white(only_organic[METAL])
    np.testing.assert_array_equal(only_organic[ORGANIC], standard[ORGANIC])
    for stripped in (no_organic, only_organic):  # what nothing gets through is never hidden
        assert stripped[DENSE_TOP].max() == 0


def test_penetration_high_sees_into_dense_objects_and_low_shows_organics_darker(slabs: LoadedImage) -> None:
    grey = render_view(slabs, View(colour="grey"))
    high = render_view(slabs, View(penetration="high"))
    low = render_view(slabs, View(penetration="low"))
    assert grey[DENSE_BOTTOM].mean() - grey[DENSE_TOP].mean() < 15, "the standard grey view: both nearly black"
    assert high[DENSE_BOTTOM].mean() - high[DENSE_TOP].mean() > 30, "high penetration tells them apart"
    assert high[DENSE_TOP].mean() > 60
    assert low[ORGANIC].mean() < high[ORGANIC].mean() - 50
    assert low[ORGANIC].mean() < grey[ORGANIC].mean() - 20


def test_gamma_brightens_dark_detail_and_contrast_stretches(parcel: LoadedImage) -> None:
    grey = render_view(parcel, View(colour="grey"))[..., 0].astype(float)
    dark = (grey > 20) & (grey < 120)
    brighter = render_view(parcel, View(colour="grey", gamma=2))[..., 0]
    darker = render_view(parcel, View(colour="grey", gamma=-2))[..., 0]
    assert brighter[dark].mean() > grey[dark].mean() + 15 > darker[dark].mean() + 30
    mid = (grey > 50) & (grey < 205)  # where a stretch by 1.25**2 around mid grey does not clip
    assert render_view(parcel, View(colour="grey", contrast=2))[..., 0][mid].std() > grey[mid].std() * 1.4
    assert render_view(parcel, View(colour="grey", contrast=-2))[..., 0][mid].std() < grey[mid].std() * 0.7


def _sharpness(img: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def test_edges_are_visibly_crisper(parcel: LoadedImage) -> None:
    assert _sharpness(render_view(parcel, View(edges=True))) > 2 * _sharpness(render_view(parcel, View()))


@pytest.mark.parametrize("which", ["parcel", "grey"])
def test_contrast_and_gamma_extremes_stay_uint8(which: str, request: pytest.FixtureRequest) -> None:
    image: LoadedImage = request.getfixturevalue(which)
    for contrast in (-3, 3):
        for gamma in (-3, 3):
            for view in (View(contrast=contrast, gamma=gamma), View(contrast=contrast, gamma=gamma, edges=True,
                                                                   negative=True, colour="pseudo")):
                out = render_view(image, view)
                assert out.dtype == np.uint8 and out.shape == (320, 480, 3)


def test_dual_energy_tools_are_dropped_on_a_grey_scan(grey: LoadedImage) -> None:
    dual_only = View(strip="organic", penetration="low", colour="grey", negative=True)
    assert dual_only.usable_on("grey8") == View(negative=True)
    assert dual_only.usable_on("dual-energy") == dual_only
    assert View(colour="pseudo", strip="inorganic").usable_on("colour") == View(colour="pseudo")
    standard = render_view(grey, View())
    for view in (View(strip="organic"), View(strip="inorganic"), View(penetration="high"), View(colour="grey")):
        assert view.usable_on(grey.kind) == View()
        np.testing.assert_array_equal(render_view(grey, view), standard)
    assert not np.array_equal(render_view(grey, View(colour="pseudo")), standard)


def test_a_large_scan_is_shrunk_to_max_side(tmp_path: Path) -> None:
    wide = np.tile(np.linspace(0, 255, 3000).astype(np.uint8), (1200, 1))
    assert cv2.imwrite(str(tmp_path / "wide.png"), wide)
    image = load_image(tmp_path / "wide.png")
    assert render_view(image, View(edges=True)).shape == (819, 2048, 3)  # 1200 * 2048 / 3000 = 819.2
    assert render_view(image, View(), max_side=500).shape == (200, 500, 3)
    high = np.full((600, 2500), 30000, np.uint16)
    (tmp_path / "long.xde").write_bytes(encode_xde(high, high // 2, {}))
    out = render_view(load_image(tmp_path / "long.xde"), View(strip="organic", penetration="low"), max_side=1000)
    assert out.shape == (240, 1000, 3)
    with pytest.raises(ViewError, match="max_side"):
        render_view(image, View(), max_side=0)


# ---- the view as URL query parameters ---------------------------------------------------------

views = st.builds(View, negative=st.booleans(), contrast=st.integers(-3, 3), gamma=st.integers(-3, 3),
                  edges=st.booleans(), strip=st.sampled_from(["none", "organic", "inorganic"]),
                  penetration=st.sampled_from(["normal", "high", "low"]),
                  colour=st.sampled_from(["material", "grey", "pseudo"]))
NAMES = ["negative", "contrast", "gamma", "edges", "strip", "penetration", "colour"]
VALUES = ["0", "1", "true", "false", "-3", "3", "4", "-1", "+2", "02", "organic", "inorganic", "none", "high",
          "low", "normal", "material", "grey", "pseudo", "", " 1", "١", "1_0", "9" * 5000]


def test_query_strings() -> None:
    assert View().query() == "" and View.parse({}) == View()
    assert View(negative=True, contrast=-2, strip="organic").query() == "contrast=-2&negative=1&strip=organic"
    assert View.parse({"negative": "true", "edges": "0", "gamma": "+3", "colour": "pseudo"}) == \
        View(negative=True, gamma=3, colour="pseudo")


@given(views)
def test_query_round_trips(view: View) -> None:
    assert View.parse(dict(parse_qsl(view.query()))) == view


@given(st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=12), st.sampled_from(VALUES) | st.text(max_size=8)))
def test_parse_raises_only_view_error(query: dict[str, str]) -> None:
    try:
        view = View.parse(query)
    except ViewError as err:
        assert len(str(err)) < 400
        unknown = [name for name in query if name not in NAMES]
        if unknown:
            assert str(err).startswith("unknown view parameter") and any(repr(n)[:30] in str(err) for n in unknown)
        else:
            assert any(str(err).startswith(f"{name}=") for name in query)
    else:
        assert isinstance(view, View) and set(query) <= set(NAMES)


@pytest.mark.parametrize(("query", "named", "allowed"), [
    ({"zoom": "2"}, "'zoom'", "contrast"), ({"contrast": "4"}, "contrast='4'", "-3 to 3"),
    ({"gamma": "x"}, "gamma='x'", "-3 to 3"), ({"negative": "yes"}, "negative='yes'", "0 or 1"),
    ({"strip": "metal"}, "strip='metal'", "none, organic, inorganic"),
    ({"penetration": "max"}, "penetration='max'", "normal, high, low"),
    ({"colour": "jet"}, "colour='jet'", "material, grey, pseudo")])
def test_parse_errors_name_the_parameter_and_the_allowed_values(query: dict[str, str], named: str,
                                                                 allowed: str) -> None:
    with pytest.raises(ViewError) as caught:
        View.parse(query)
    assert named in str(caught.value) and allowed in str(caught.value)


def test_a_view_cannot_be_built_with_values_it_cannot_render() -> None:
    for bad in ({"contrast": 4}, {"gamma": 1.0}, {"negative": 1}, {"strip": "metal"}, {"colour": "Grey"}):
        with pytest.raises(ViewError):
            View(**bad)


@settings(max_examples=40)
@given(views)
def test_every_view_renders(view: View) -> None:
    out = render_view(_SMALL, view)
    assert out.dtype == np.uint8 and out.shape == (40, 60, 3) and out.flags.c_contiguous


_HIGH = np.tile(np.linspace(200, 65535, 60).astype(np.uint16), (40, 1))
_SMALL = LoadedImage("small", _HIGH, "dual-energy", _HIGH, (_HIGH // 3).astype(np.uint16))


# ---- the keys --------------------------------------------------------------------------------

def test_the_keys_of_the_help_overlay() -> None:
    keys = [t.key for t in TOOLS]
    assert sorted(keys) == sorted("NKLGHEOIPV") and not set(keys) & set("BCTRF+-0?")
    assert {t.parameter for t in TOOLS} == set(NAMES)
    assert {t.parameter for t in TOOLS if t.dual_energy_only} == {"strip", "penetration"}
    for tool in TOOLS:
        after = View().press(tool.key)
        assert after != View() and View().press(tool.key.lower()) == after
        assert [f for f in NAMES if getattr(after, f) != getattr(View(), f)] == [tool.parameter]


def test_pressing_keys() -> None:
    v = View()
    assert v.press("L").press("L").press("L").press("L").contrast == 3
    assert v.press("G").press("G").press("G").press("G").gamma == -3
    assert v.press("O").strip == "organic" and v.press("O").press("O").strip == "none"
    assert v.press("O").press("I").strip == "inorganic"
    assert [v := v.press("P") for _ in range(3)][-1].penetration == "normal"
    assert View().press("V").colour == "grey" and View().press("V").press("V").press("V").colour == "material"
    assert View().press("B") == View() and View().press("N").press("N") == View()


@given(views, st.lists(st.sampled_from([t.key for t in TOOLS] + ["x", "+"]), max_size=20))
def test_any_keys_give_a_view_that_renders(view: View, keys: list[str]) -> None:
    for key in keys:
        view = view.press(key)
    assert View.parse(dict(parse_qsl(view.query()))) == view


# ---- encoding ----------------------------------------------------------------------------------

def _decoded(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "cv2 cannot decode what encode() made"
    return img


@pytest.mark.parametrize("fmt", ["webp", "png"])
def test_encoded_images_decode_at_their_size(fmt: str, parcel: LoadedImage) -> None:
    img = render_view(parcel, View(colour="pseudo"))
    data = encode(img, fmt)
    assert data[:4] == (b"RIFF" if fmt == "webp" else b"\x89PNG")
    back = _decoded(data)
    assert back.shape == img.shape
    if fmt == "png":
        np.testing.assert_array_equal(back, img)
    else:
        assert np.abs(back.astype(int) - img).mean() < 8
    assert len(encode(img, "webp", 30)) < len(encode(img, "webp", 95))


def test_encoding_errors() -> None:
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ViewError, match=r"fmt='jpeg'.*webp, png"):
        encode(img, "jpeg")
    for quality in (0, 101):
        with pytest.raises(ViewError, match="quality"):
            encode(img, "webp", quality)
    with pytest.raises(ViewError, match="cannot encode"):
        encode(np.zeros((0, 10, 3), np.uint8), "png")


# ---- the cache ---------------------------------------------------------------------------------

def test_cache_evicts_the_least_recently_used_by_bytes() -> None:
    cache = RenderCache(max_bytes=100)
    cache.put("a", b"a" * 40)
    cache.put("b", b"b" * 40)
    assert cache.get("a") == b"a" * 40  # a is now the most recent
    cache.put("c", b"c" * 40)  # 120 bytes: b goes
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert cache.size == 80 and (cache.hits, cache.misses) == (3, 1)
    cache.put("a", b"A" * 10)  # replacing counts the new size only
    assert cache.size == 50 and cache.get("a") == b"A" * 10
    cache.put("huge", b"h" * 101)  # larger than the whole cache: not kept, nothing dropped for it
    assert cache.get("huge") is None and cache.size == 50


def test_get_or_render_counts_hits_and_keeps_no_failure() -> None:
    cache = RenderCache(max_bytes=1000)
    calls: list[str] = []

    def make() -> bytes:
        calls.append("made")
        return b"png"

    assert cache.get_or_render(("scan.xde", 1, 2, "negative=1", "png"), make) == (b"png", False)
    assert cache.get_or_render(("scan.xde", 1, 2, "negative=1", "png"), make) == (b"png", True)
    assert calls == ["made"] and (cache.hits, cache.misses) == (1, 1)

    def broken() -> bytes:
        raise ViewError("cannot encode")

    with pytest.raises(ViewError):
        cache.get_or_render("other", broken)
    assert cache.get_or_render("other", make) == (b"png", False) and calls == ["made", "made"]


def test_two_threads_asking_for_one_cold_key_render_it_once() -> None:
    cache = RenderCache()
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []
    results: list[tuple[bytes, bool]] = []

    def slow() -> bytes:
        calls.append(1)
        started.set()
        assert release.wait(10)
        return b"webp"

    first = threading.Thread(target=lambda: results.append(cache.get_or_render("k", slow)))
    second = threading.Thread(target=lambda: results.append(cache.get_or_render("k", slow)))
    first.start()
    assert started.wait(10)
    second.start()
    release.set()
    first.join(10)
    second.join(10)
    assert len(calls) == 1 and sorted(results, key=lambda r: r[1]) == [(b"webp", False), (b"webp", True)]


def test_the_viewer_loads_only_the_imaging_kernel() -> None:
    code = ("import sys, station.kernel.viewer; print(' '.join(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('station', 'drivers', 'simulator', 'models'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert set(loaded) == {"drivers", "drivers.xde", "station", "station.kernel", "station.kernel.imaging",
                           "station.kernel.viewer"}


# ---- real scans --------------------------------------------------------------------------------

@pytest.mark.skipif(not GDXRAY.is_dir(), reason="shared/data/gdxray-objects absent (real GDXray crops are kept "
                    "outside the repository; a fresh clone outside CI has no ../shared)")
@pytest.mark.parametrize("folder", ["gun", "other"])
def test_a_real_gdxray_image_renders_with_every_tool(folder: str) -> None:
    image = load_image(sorted((GDXRAY / folder).glob("*.jpg"))[0])
    standard = render_view(image, View())
    np.testing.assert_array_equal(standard, cv2.cvtColor(image.gray, cv2.COLOR_GRAY2BGR))
    for view in SINGLE_TOOLS:
        out = render_view(image, view)
        assert out.dtype == np.uint8 and out.shape == (*image.gray.shape, 3)
        if view.usable_on(image.kind) == View():
            np.testing.assert_array_equal(out, standard)
        elif view.edges:
            assert _sharpness(out) > 2 * _sharpness(standard)
        else:
            assert np.abs(out.astype(int) - standard).max(axis=2).mean() > 2, view.query()
        assert _decoded(encode(out)).shape == out.shape
