"""The evaluation maths on hand-made detections with known answers, and YOLO label parsing."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from models.evaluate import (
    LabelError,
    average_precision,
    box_curve,
    image_curve,
    read_names,
    read_yolo_labels,
    voc_ap,
)
from station.kernel.detector import Detection

A, B = (10.0, 10.0, 50.0, 50.0), (100.0, 100.0, 140.0, 160.0)


def _results() -> list:
    """Two images, one gun each; detections: a hit (0.9), a miss elsewhere (0.8), a duplicate of
    the first hit (0.6, a false positive), the second hit (0.7)."""
    return [
        ([("gun", A)], [Detection("gun", 0.9, (12.0, 11.0, 50.0, 52.0)), Detection("gun", 0.6, A)]),
        ([("gun", B)], [Detection("gun", 0.8, (300.0, 300.0, 340.0, 340.0)), Detection("gun", 0.7, B)]),
    ]


def test_box_ap_has_the_hand_computed_value() -> None:
    # ranked: hit, miss, hit, duplicate -> precision 1, 1/2, 2/3, 2/4 at recall 1/2, 1/2, 1, 1
    # VOC envelope: 1.0 up to recall 0.5, then 2/3 up to 1.0 -> AP = 0.5 + 0.5 * 2/3
    assert average_precision(_results(), "gun") == pytest.approx(0.5 + 0.5 * 2 / 3)
    c = box_curve(_results(), "gun", lambda d: d.score >= 0.75)
    assert np.allclose(c.precision, [1, 1 / 2, 2 / 3, 2 / 4]) and np.allclose(c.recall, [0.5, 0.5, 1, 1])
    assert (c.op_precision, c.op_recall) == (0.5, 0.5)  # at 0.75: the first hit and the miss


def test_ap_without_detections_or_without_objects() -> None:
    assert average_precision([([("gun", A)], [])], "gun") == 0.0
    assert math.isnan(average_precision([([], [Detection("gun", 0.9, A)])], "gun"))
    assert voc_ap(np.array([]), np.array([])) == 0.0


def test_detections_of_other_labels_only_count_when_asked() -> None:
    results = [([("razor_blade", A)], [Detection("blade", 0.9, A)])]
    assert average_precision(results, "razor_blade") == 0.0
    assert box_curve(results, "razor_blade", lambda d: True, det_labels={"blade", "gun"}).ap == 1.0


def test_image_level_curve() -> None:
    # four images: two threats scored 0.9 and 0 (missed), two benign scored 0.5 and 0.95
    c = image_curve("gun", [0.9, 0.0, 0.5, 0.95], [True, True, False, False], [True, False, False, True])
    assert c.n_pos == 2
    assert np.allclose(c.precision, [0, 1 / 2, 1 / 3]) and np.allclose(c.recall, [0, 0.5, 0.5])
    assert c.ap == pytest.approx(0.25)
    assert (c.op_precision, c.op_recall) == (0.5, 0.5)


def test_yolo_labels_become_pixel_boxes(tmp_path: Path) -> None:
    label = tmp_path / "a.txt"
    label.write_text("1 0.5 0.25 0.2 0.1\n\n0 0.1 0.1 0.1 0.1\n", encoding="utf-8")
    truth = read_yolo_labels(label, ["gun", "knife"], width=400, height=200)
    assert truth == [("knife", pytest.approx((160.0, 40.0, 240.0, 60.0))), ("gun", pytest.approx((20.0, 10.0, 60.0, 30.0)))]
    assert read_yolo_labels(tmp_path / "missing.txt", ["gun"], 10, 10) == []  # no file: a background image


@pytest.mark.parametrize(("text", "problem"), [
    ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n", "expected 5 fields"),
    ("0 0.5 0.5 0.2 0.2\nx 0.5 0.5 0.2 0.2\n", "invalid literal"),
    ("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n", "class id 7 outside"),
    ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5 -0.2 0.2\n", "not a positive normalised box"),
])
def test_a_malformed_label_line_names_file_and_line(tmp_path: Path, text: str, problem: str) -> None:
    label = tmp_path / "scan-7.txt"
    label.write_text(text, encoding="utf-8")
    with pytest.raises(LabelError, match=rf"scan-7\.txt:2: .*{problem}"):
        read_yolo_labels(label, ["gun", "knife"], 100, 100)


@pytest.mark.parametrize("names", [
    "names: [gun, 'razor_blade', shuriken]\n",
    "path: .\nnames:\n  - gun\n  - razor_blade\n  - shuriken\nnc: 3\n",
    "names:\n  0: gun\n  1: razor_blade\n  2: \"shuriken\"\ntrain: images\n",
])
def test_data_yaml_names_in_their_usual_spellings(tmp_path: Path, names: str) -> None:
    path = tmp_path / "data.yaml"
    path.write_text(names, encoding="utf-8")
    assert read_names(path) == ["gun", "razor_blade", "shuriken"]
