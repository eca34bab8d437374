"""The shipped default model through the station's detector: loads, finds a gun, refuses a
tampered model file, a manifest out of bounds, and a manifest changed since it was pinned."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.evaluate import iou
from simulator.xray import synth_parcel
from station.config import Config, ModelSection
from station.daemon import load_detector
from station.kernel.detector import (
    DEFAULT_MODEL,
    Detection,
    Detector,
    ModelError,
    ModelIntegrityError,
    fit,
    letterbox,
    manifest_pin,
)
from station.kernel.imaging import gray_from_high

DEFAULT = DEFAULT_MODEL
GUN_SEED = 3  # a parcel the default model flags (checked: gun box IoU > 0.5)


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.load(DEFAULT, threads=1)


def test_default_model_loads_with_its_manifest(detector: Detector) -> None:
    m = detector.manifest
    assert m.classes == ["gun", "knife", "blade", "shuriken", "battery"]
    assert set(m.threat_classes) == set(m.classes)
    content = json.loads((DEFAULT / "manifest.json").read_text())
    assert detector.model_hash == m.pin == manifest_pin(m.sha256, content) != m.sha256  # the pin, not the file's hash
    assert m.normalisation == "scale_0_1"
    assert (DEFAULT / m.onnx_file).stat().st_size < 5_000_000


@pytest.mark.parametrize("view", ["high plane", "grey view"])
def test_gun_parcel_is_flagged_with_a_gun_box(detector: Detector, view: str) -> None:
    """Through the lane's input (the uint16 high-energy plane) and through its full-size grey view."""
    scan = synth_parcel(np.random.default_rng(GUN_SEED), ("gun",))
    truth = scan.boxes[0]
    dets = detector.detect(scan.high if view == "high plane" else gray_from_high(scan.high))
    guns = [d for d in dets if d.label == "gun"]
    assert guns, f"no gun found in seed {GUN_SEED}: {dets}"
    assert detector.is_threat(guns[0])
    assert iou(guns[0].box, (truth.x1, truth.y1, truth.x2, truth.y2)) > 0.5
    assert all(0 <= v <= 480 for d in dets for v in d.box)


def test_a_plane_mapped_after_resizing_gives_the_view_of_its_grey_image(detector: Detector) -> None:
    """The detector maps a 16-bit plane to grey after resizing it (cheaper); the network sees
    what it would from the full-size grey view, within a grey level or so at edges, and the
    letterbox border is the same."""
    scan = synth_parcel(np.random.default_rng(5), ("blade", "battery"))
    tall = np.ascontiguousarray(scan.high[:, :200])  # a narrow scan: letterboxed with side bars
    for plane in (scan.high, tall):
        from_plane, lb = detector.preprocess(plane)
        from_grey, lb_grey = detector.preprocess(gray_from_high(plane))
        assert lb == lb_grey
        diff = np.abs(from_plane - from_grey) * 255
        assert diff.mean() < 0.6 and np.percentile(diff, 99) < 2.5
        assert from_plane[0, 0, :, : lb.dx].tolist() == from_grey[0, 0, :, : lb.dx].tolist()


def test_detector_input_must_be_grey_or_a_transmission_plane(detector: Detector) -> None:
    with pytest.raises(ModelError, match="uint8 or uint16"):
        detector.preprocess(np.zeros((10, 10, 3), np.uint8))
    with pytest.raises(ModelError, match="uint8 or uint16"):
        detector.preprocess(np.zeros((10, 10), np.float32))


def test_empty_sky_has_no_threats(detector: Detector) -> None:
    assert detector.detect(np.full((320, 480), 250, np.uint8)) == []


def test_decoding_maps_boxes_back_and_suppresses_per_class(detector: Detector) -> None:
    """A hand-made YOLOv8 output: two overlapping guns (one kept), one knife on top of them
    (kept: NMS is per class), and a weak blade under its threshold (dropped)."""
    src = np.zeros((500, 250), np.uint8)  # tall image: letterboxed with side bars
    _, lb = letterbox(src, detector.manifest.input_size, detector.manifest.letterbox_pad)
    out = np.zeros((1, 9, 4), np.float32)
    cx, cy = 100 * lb.scale + lb.dx, 200 * lb.scale + lb.dy  # source point (100, 200)
    out[0, :4, 0] = [cx, cy, 40 * lb.scale, 60 * lb.scale]
    out[0, :4, 1] = [cx + 1, cy, 40 * lb.scale, 60 * lb.scale]
    out[0, :4, 2] = [cx, cy, 40 * lb.scale, 60 * lb.scale]
    out[0, :4, 3] = [cx, cy, 10, 10]
    thr = detector.manifest.thresholds
    gun_a, gun_b, knife = 0.99, 0.98, (0.98 + thr["knife"]) / 2  # over the model's own thresholds, in this order
    out[0, 4, 0], out[0, 4, 1], out[0, 5, 2], out[0, 6, 3] = gun_a, gun_b, knife, thr["blade"] / 2
    dets = detector.postprocess(out, lb)
    assert [d.label for d in dets] == ["gun", "knife"]
    assert dets[0].score == pytest.approx(gun_a)
    assert dets[0].box == pytest.approx((80.0, 170.0, 120.0, 230.0), abs=0.01)


_ANCHOR = st.tuples(st.floats(0, 384), st.floats(0, 256), st.floats(1, 200), st.floats(1, 200),  # cx, cy, w, h
                    st.integers(0, 4), st.floats(0, 1, width=32))  # class, score


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(anchors=st.lists(_ANCHOR, max_size=40), src=st.sampled_from([(320, 480), (500, 250), (1000, 3000)]))
def test_decoding_keeps_exactly_what_greedy_class_wise_nms_keeps(detector: Detector, anchors: list, src: tuple[int, int]) -> None:
    """For any network output: every detection clears its class's threshold; the list is sorted
    by score; no two of one class overlap by more than nms_iou; and every anchor that cleared its
    threshold but is missing was dropped by a kept box of its class scoring at least as high."""
    m = detector.manifest
    lb = fit(*src, m.input_size)
    out = np.zeros((1, 4 + len(m.classes), max(1, len(anchors))), np.float32)
    for j, (cx, cy, w, h, c, score) in enumerate(anchors):
        out[0, :4, j] = cx, cy, w, h
        out[0, 4 + c, j] = score
    dets = detector.postprocess(out, lb)

    def source_box(cx: float, cy: float, w: float, h: float) -> tuple[float, ...]:
        x1, y1, x2, y2 = ((v - d) / lb.scale for v, d in zip((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), (lb.dx, lb.dy) * 2))
        return (min(max(x1, 0), lb.src_w), min(max(y1, 0), lb.src_h), min(max(x2, 0), lb.src_w), min(max(y2, 0), lb.src_h))

    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    for i, d in enumerate(dets):
        assert d.score >= m.thresholds.get(d.label, m.default_threshold) - 1e-7
        assert all(iou(d.box, e.box) <= m.nms_iou + 1e-4 for e in dets[i + 1 :] if e.label == d.label)
    for cx, cy, w, h, c, score in anchors:
        label, box = m.classes[c], source_box(cx, cy, w, h)
        score = float(np.float32(score))
        if score < m.thresholds.get(label, m.default_threshold):
            continue
        if any(d.label == label and d.score == score and np.allclose(d.box, box, rtol=0, atol=0.05) for d in dets):
            continue  # kept (boxes computed in float32 there, float64 here)
        assert len(dets) == m.max_detections or any(d.label == label and d.score >= score and iou(d.box, box) > m.nms_iou - 1e-4 for d in dets)


def test_letterbox_geometry() -> None:
    img, lb = letterbox(np.zeros((100, 50), np.uint8), (256, 384), 255)
    assert img.shape == (256, 384) and lb.scale == pytest.approx(2.56)
    assert img[:, 0].min() == 255 and img[128, 192] == 0 and lb.dy == 0


@pytest.mark.parametrize("src_width", [480, 1000, 3000])  # scales 0.8 (bilinear), 0.38 and 0.13 (area)
def test_a_one_pixel_wire_survives_the_letterbox(src_width: int) -> None:
    """A thin wire (a detonator's lead, a blade seen edge-on) at any column of a large scan still
    darkens the network's input: shrinking never skips a source column."""
    height = src_width * 2 // 3
    faintest = 255
    for col in range(src_width // 2, src_width // 2 + 16):
        src = np.full((height, src_width), 255, np.uint8)
        src[:, col] = 0
        img, _ = letterbox(src, (256, 384), 255)
        faintest = min(faintest, 255 - int(img.min()))  # how dark its darkest trace is
    assert faintest >= 255 * (384 / src_width) / 3  # a third of its share of an input pixel, or better


def edited(tmp_path: Path, edit: Callable[[dict[str, Any]], object]) -> Path:
    """A copy of the default model whose manifest ``edit`` changed in place (and nobody re-pinned)."""
    model = tmp_path / "model"
    shutil.copytree(DEFAULT, model)
    manifest = json.loads((model / "manifest.json").read_text())
    edit(manifest)
    (model / "manifest.json").write_text(json.dumps(manifest))
    return model


def test_wrong_sha256_is_refused(tmp_path: Path) -> None:
    model = edited(tmp_path, lambda m: m.update(sha256="0" * 64))
    with pytest.raises(ModelIntegrityError, match="model.onnx: hash mismatch"):
        Detector.load(model, threads=1)


# Each edit makes the manifest useless for screening, or ambiguous; the field the error must name.
_OUT_OF_BOUNDS: dict[str, tuple[Callable[[dict[str, Any]], object], str]] = {
    "threshold over 1": (lambda m: m["thresholds"].update(shuriken=1.5), "thresholds.shuriken"),
    "threshold under 0": (lambda m: m["thresholds"].update(gun=-0.1), "thresholds.gun"),
    "threshold NaN": (lambda m: m["thresholds"].update(knife=float("nan")), "thresholds.knife"),
    "default_threshold over 1": (lambda m: m.update(default_threshold=2), "default_threshold"),
    "no threat classes": (lambda m: m.update(threat_classes=[]), "threat_classes"),
    "a class twice": (lambda m: m.update(classes=["gun", "knife", "blade", "gun", "battery"]), "classes"),
    "a threat class twice": (lambda m: m.update(threat_classes=["gun", "gun"]), "threat_classes"),
    "a threshold for no class": (lambda m: m["thresholds"].update(grenade=0.5), "thresholds"),
    "a threat that is no class": (lambda m: m.update(threat_classes=["gun", "grenade"]), "threat_classes"),
}


@pytest.mark.parametrize("case", list(_OUT_OF_BOUNDS))
def test_a_manifest_out_of_bounds_is_refused_naming_the_file_and_the_field(tmp_path: Path, case: str) -> None:
    edit, field = _OUT_OF_BOUNDS[case]
    model = edited(tmp_path, edit)
    with pytest.raises(ModelError) as err:
        Detector.load(model, threads=1)
    assert str(err.value).startswith(f"{model / 'manifest.json'}: bad manifest: ")
    assert field in str(err.value) and "pin" not in str(err.value)


def test_the_audits_manifest_is_refused_naming_both_fields(tmp_path: Path) -> None:
    """The audit's case: every threshold 1.5 and no threat class, so a 0.998 shuriken would clear."""
    model = edited(tmp_path, lambda m: m.update(thresholds=dict.fromkeys(m["classes"], 1.5), threat_classes=[]))
    with pytest.raises(ModelError, match=r"thresholds\.shuriken: Input should be less than or equal to 1 \(got 1\.5\)") as err:
        Detector.load(model, threads=1)
    assert "threat_classes: List should have at least 1 item" in str(err.value)


def test_an_edit_within_bounds_that_was_not_pinned_is_an_integrity_error(tmp_path: Path) -> None:
    """A threshold raised (0.25 -> 0.99) without `station model pin`: refused as the model store's
    integrity, so the lane starts MANUAL_ONLY on it (a swap to it goes MANUAL_ONLY too)."""
    model = edited(tmp_path, lambda m: m["thresholds"].update(gun=0.99))
    with pytest.raises(ModelIntegrityError, match="manifest.json: pin mismatch: manifest says pin [0-9a-f]{64}, "):
        Detector.load(model, threads=1)
    detector, why = load_detector(Config(model=ModelSection(path=model)))
    assert detector is None and why is not None and "pin mismatch" in why


def test_a_manifest_without_a_pin_is_an_integrity_error(tmp_path: Path) -> None:
    model = edited(tmp_path, lambda m: m.pop("pin", None))
    with pytest.raises(ModelIntegrityError, match="no pin: .*station model pin"):
        Detector.load(model, threads=1)


def test_the_pin_ignores_the_files_layout_and_key_order(tmp_path: Path, detector: Detector) -> None:
    """The same manifest written with its keys (nested ones too) in reverse and another indent."""

    def reverse(value: Any) -> Any:
        return {k: reverse(value[k]) for k in reversed(value)} if isinstance(value, dict) else value

    model = tmp_path / "model"
    shutil.copytree(DEFAULT, model)
    content = json.loads((model / "manifest.json").read_text())
    (model / "manifest.json").write_text(json.dumps(reverse(content), indent=7))
    assert Detector.load(model, threads=1).model_hash == detector.model_hash == content["pin"]


DEFAULT_CONTENT: dict[str, Any] = json.loads((DEFAULT / "manifest.json").read_text())
ONNX_SHA = DEFAULT_CONTENT["sha256"]
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
                     max_leaves=5)


def _key_paths(value: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path into the nested objects of ``value``, except the pin."""
    if not isinstance(value, dict):
        return []
    paths = [(*prefix, k) for k in value if (*prefix, k) != ("pin",)]
    return paths + [p for k, v in value.items() for p in _key_paths(v, (*prefix, k))]


def _at(content: dict[str, Any], path: tuple[str, ...]) -> tuple[dict[str, Any], str]:
    for key in path[:-1]:
        content = content[key]
    return content, path[-1]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_the_pin_changes_when_any_field_but_the_pin_changes(data: st.DataObject) -> None:
    """Any one edit of the default manifest (a value replaced, a key removed or added, anywhere in
    it) gives another pin; shuffling keys or rewriting the pin itself does not."""
    content = copy.deepcopy(DEFAULT_CONTENT)
    base = manifest_pin(ONNX_SHA, content)
    path = data.draw(st.sampled_from(_key_paths(content)), label="path")
    parent, key = _at(content, path)
    how = data.draw(st.sampled_from(["replace", "remove", "add"]), label="how")
    if how == "replace":
        parent[key] = data.draw(_JSON.filter(lambda v: v != parent[key]), label="value")
    elif how == "remove":
        del parent[key]
    else:
        parent[data.draw(st.text(max_size=8).filter(lambda k: k not in parent and k != "pin"), label="key")] = data.draw(_JSON)
    assert manifest_pin(ONNX_SHA, content) != base
    shuffled = dict(data.draw(st.permutations(list(content.items())), label="order"))
    shuffled["pin"] = data.draw(st.text(max_size=64), label="pin")
    assert manifest_pin(ONNX_SHA, shuffled) == manifest_pin(ONNX_SHA, content)


def test_the_pin_covers_the_onnx_file_hash() -> None:
    assert manifest_pin("0" * 64, DEFAULT_CONTENT) != manifest_pin(ONNX_SHA, DEFAULT_CONTENT)
    assert manifest_pin(ONNX_SHA.upper(), DEFAULT_CONTENT) == manifest_pin(ONNX_SHA, DEFAULT_CONTENT)


def test_tampered_model_file_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(DEFAULT, model)
    with (model / "model.onnx").open("ab") as f:
        f.write(b"\x00")
    with pytest.raises(ModelError, match="hash mismatch"):
        Detector.load(model, threads=1)


def test_missing_or_bad_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="manifest"):
        Detector.load(tmp_path, threads=1)
    (tmp_path / "manifest.json").write_text('{"name": "x"}')
    with pytest.raises(ModelError, match="manifest"):
        Detector.load(tmp_path, threads=1)


def test_detection_is_a_frozen_value() -> None:
    d = Detection("gun", 0.9, (1.0, 2.0, 3.0, 4.0))
    with pytest.raises(AttributeError):
        d.score = 0.1  # type: ignore[misc]
