"""Measure a detector, and calibrate its per-class thresholds: the maths every evaluation shares.

Precision-recall curves and VOC all-point AP, box-level (a detection counts when it overlaps an
unmatched ground-truth box with IoU >= 0.5) and image-level (an image's score is its best
detection), each with the operating point the manifest's thresholds give. The synthetic sets run
through the station's own path (each scan's high-energy plane into
``station.kernel.detector.Detector``), so the figures are the ones the lane will see; they are seeded
and disjoint from training by seed offset, and the same seed gives the same figures. YOLO-format
labels (``class cx cy w h``, normalised) are read, and the precision-recall figure drawn (with
OpenCV: no plotting library), here too, so that every mode of ``station model eval`` computes and
shows its figures with the same code.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from simulator.xray import THREAT_CLASSES, synth_parcel
from station.kernel.detector import Detection, Detector, write_manifest

FLOOR = 0.01  # keep low-scoring boxes for AP
VAL_OFFSET, EVAL_OFFSET = 1_000_003, 2_000_003
FALSE_ALARM_BUDGET = 0.04  # benign parcels flagged, shared equally by the classes

Truth = list[tuple[str, tuple[float, ...]]]  # (label, (x1, y1, x2, y2)) per ground-truth object
Result = tuple[Truth, list[Detection]]  # one image: its ground truth and its detections


@dataclass(frozen=True)
class Curve:
    """A precision-recall curve (points in falling score order), its AP, and the operating
    point: precision and recall of the detections at or above the manifest's thresholds
    (precision NaN when none is; AP NaN when there is nothing to find)."""

    label: str
    precision: np.ndarray
    recall: np.ndarray
    n_pos: int
    ap: float
    op_precision: float
    op_recall: float


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def voc_ap(precision: np.ndarray, recall: np.ndarray) -> float:
    """VOC all-point AP: area under the precision envelope (precision made non-increasing)."""
    if not len(precision):
        return 0.0
    prec = np.concatenate([[0.0], precision, [0.0]])
    rec = np.concatenate([[0.0], recall, [recall[-1]]])
    prec = np.maximum.accumulate(prec[::-1])[::-1]
    return float(np.sum((rec[1:] - rec[:-1]) * prec[1:]))


def _pr(hits: np.ndarray, n_pos: int) -> tuple[np.ndarray, np.ndarray]:
    tp = np.cumsum(hits)
    return tp / np.arange(1, len(hits) + 1), tp / max(n_pos, 1)


def _op(hits: np.ndarray, n_pos: int) -> tuple[float, float]:
    tp = float(np.sum(hits))
    return (tp / len(hits) if len(hits) else float("nan")), tp / max(n_pos, 1)


def curve(label: str, scores: Sequence[float], hits: Sequence[bool], n_pos: int, op_hits: Sequence[bool]) -> Curve:
    """Build a curve from scored candidates (``hits``: true positive or not) among ``n_pos``
    positives; ``op_hits`` are the hits among the candidates kept at the operating point."""
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    h = np.asarray(hits, float)[order]
    precision, recall = _pr(h, n_pos)
    op_precision, op_recall = _op(np.asarray(op_hits, float), n_pos)
    ap = voc_ap(precision, recall) if n_pos else float("nan")
    return Curve(label, precision, recall, n_pos, ap, op_precision, op_recall)


def _match(results: Sequence[Result], label: str, det_labels: Collection[str], keep: Callable[[Detection], bool], threshold: float) -> tuple[list[float], list[bool]]:
    """Greedy VOC matching in falling score order of detections (labels in ``det_labels``,
    accepted by ``keep``) against unmatched ``label`` boxes of the same image."""
    scored = sorted(((d.score, k, d.box) for k, (_, dets) in enumerate(results) for d in dets
                     if d.label in det_labels and keep(d)), key=lambda s: -s[0])
    used: set[tuple[int, int]] = set()
    hits = []
    for _, k, box in scored:
        gts = [(j, b) for j, (lab, b) in enumerate(results[k][0]) if lab == label and (k, j) not in used]
        best = max(gts, key=lambda g: iou(box, g[1]), default=None)
        hit = best is not None and iou(box, best[1]) >= threshold
        if hit:
            used.add((k, best[0]))  # type: ignore[index]
        hits.append(hit)
    return [s for s, _, _ in scored], hits


def box_curve(results: Sequence[Result], label: str, at_op: Callable[[Detection], bool],
              det_labels: Collection[str] | None = None, min_iou: float = 0.5) -> Curve:
    """Box-level curve for ground-truth ``label``, from detections whose label is in
    ``det_labels`` (default: the same label). ``at_op`` says whether a detection passes its
    threshold; the operating point re-matches only those, as the lane would see them."""
    want = {label} if det_labels is None else set(det_labels)
    n_pos = sum(1 for truth, _ in results for lab, _ in truth if lab == label)
    scores, hits = _match(results, label, want, lambda d: True, min_iou)
    _, op_hits = _match(results, label, want, at_op, min_iou)
    return curve(label, scores, hits, n_pos, op_hits)


def image_curve(label: str, scores: Sequence[float], positive: Sequence[bool], flagged: Sequence[bool]) -> Curve:
    """Image-level curve: each image scored by its best relevant detection (0: none, left out),
    ``positive`` images are the ones to find, ``flagged`` those over the operating threshold."""
    kept = [(s, p, f) for s, p, f in zip(scores, positive, flagged) if s > 0]
    return curve(label, [s for s, _, _ in kept], [p for _, p, _ in kept], sum(positive),
                 [p for _, p, f in kept if f])


def average_precision(results: Sequence[Result], label: str, iou_min: float = 0.5) -> float:
    """VOC all-point box AP for one class (the detections of that class)."""
    return box_curve(results, label, lambda d: True, min_iou=iou_min).ap


def run_set(det: Detector, seed: int, n: int, benign_share: float = 0.5) -> list[Result]:
    """Render n parcels (the first ``benign_share`` clean, the rest one threat each, classes in
    turn) and detect with a low floor. Returns (ground truth, detections) per parcel."""
    rng = np.random.default_rng(seed)
    n_benign = int(n * benign_share)
    floor = dict.fromkeys(det.manifest.classes, FLOOR)
    out: list[Result] = []
    for i in range(n):
        threats = () if i < n_benign else (THREAT_CLASSES[(i - n_benign) % len(THREAT_CLASSES)],)
        scan = synth_parcel(rng, threats)
        truth: Truth = [(b.label, (float(b.x1), float(b.y1), float(b.x2), float(b.y2))) for b in scan.boxes]
        out.append((truth, det.detect(scan.high, floor)))  # the high plane, as the lane sees it
    return out


def calibrate(det: Detector, seed: int, n_benign: int = 1000) -> dict[str, float]:
    """Per-class thresholds so each threat class flags at most budget/n_classes of benign val parcels."""
    results = run_set(det, seed + VAL_OFFSET, n_benign, benign_share=1.0)
    per_class = FALSE_ALARM_BUDGET / len(det.manifest.threat_classes)
    thresholds = {}
    for c in det.manifest.classes:
        top = np.sort([max((d.score for d in dets if d.label == c), default=0.0) for _, dets in results])[::-1]
        allowed = int(np.floor(per_class * len(top)))
        thresholds[c] = round(float(max(0.25, top[allowed] + 1e-4 if allowed < len(top) else 0.25)), 4)
    return thresholds


def operating_thresholds(det: Detector) -> dict[str, float]:
    m = det.manifest
    return {c: m.thresholds.get(c, m.default_threshold) for c in m.classes}


def measure(det: Detector, seed: int, n: int = 600) -> dict[str, Any]:
    """Per-class AP@0.5, threat recall (parcels flagged, and objects found with IoU >= 0.5 at
    the operating thresholds), false-alarm rate on benign parcels, and p50/p95 latency."""
    results = run_set(det, seed + EVAL_OFFSET, n)
    thr = operating_thresholds(det)
    threats = set(det.manifest.threat_classes)

    def flagged(dets: list[Detection]) -> bool:
        return any(d.label in threats and d.score >= thr[d.label] for d in dets)

    benign = [r for r in results if not r[0]]
    bearing = [r for r in results if r[0]]
    found = sum(1 for truth, dets in bearing for lab, box in truth if any(d.label == lab and d.score >= thr[lab] and iou(d.box, box) >= 0.5 for d in dets))
    n_obj = sum(len(t) for t, _ in bearing)
    per_class_recall = {}
    for c in THREAT_CLASSES:
        rows = [r for r in bearing if r[0][0][0] == c]
        per_class_recall[c] = round(sum(flagged(d) for _, d in rows) / max(len(rows), 1), 4)
    ap = {c: average_precision(results, c) for c in THREAT_CLASSES}
    rng = np.random.default_rng(seed)
    high = synth_parcel(rng, ("gun",)).high
    times = []
    for _ in range(100):
        t0 = time.perf_counter()
        det.detect(high)
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "eval_set": f"fresh synthetic parcels, seed {seed + EVAL_OFFSET}, {len(benign)} benign + {len(bearing)} with one threat",
        "ap50": {c: round(v, 4) for c, v in ap.items()},
        "map50": round(float(np.nanmean(list(ap.values()))), 4),
        "threat_recall_parcels": round(sum(flagged(d) for _, d in bearing) / max(len(bearing), 1), 4),
        "threat_recall_parcels_by_class": per_class_recall,
        "threat_recall_objects_iou50": round(found / max(n_obj, 1), 4),
        "false_alarm_rate_benign": round(sum(flagged(d) for _, d in benign) / max(len(benign), 1), 4),
        "inference_ms_p50": round(float(np.percentile(times, 50)), 2),
        "inference_ms_p95": round(float(np.percentile(times, 95)), 2),
        "inference_threads": det.session.get_session_options().intra_op_num_threads,
    }


def measure_dir(model_dir: Path, seed: int, n: int = 600, threads: int = 2) -> dict[str, Any]:
    return measure(Detector.load(model_dir, threads=threads), seed, n)


def finish_manifest(out: Path, sha: str, *, training_data: str, input_hw: tuple[int, int], pad: int, seed: int, eval_images: int) -> dict[str, Any]:
    """Write manifest.json: provisional, then with calibrated thresholds and measured metrics,
    pinned to the ONNX file at each step (``station.kernel.detector.write_manifest``)."""
    manifest: dict[str, Any] = {
        "name": "parcel-threats-tiny",
        "version": f"0.1.0+seed{seed}",
        "classes": list(THREAT_CLASSES),
        "input_size": list(input_hw),
        "normalisation": "scale_0_1",
        "thresholds": dict.fromkeys(THREAT_CLASSES, 0.5),
        "threat_classes": list(THREAT_CLASSES),
        "sha256": sha,
        "training_data": training_data,
        "metrics": {},
        "onnx_file": "model.onnx",
        "letterbox_pad": pad,
        "nms_iou": 0.45,
    }
    write_manifest(out, manifest)
    manifest["thresholds"] = calibrate(Detector.load(out, threads=1), seed)
    write_manifest(out, manifest)
    manifest["metrics"] = measure(Detector.load(out, threads=2), seed, eval_images)
    manifest["metrics"]["calibration"] = f"per-class thresholds: <= {FALSE_ALARM_BUDGET:.0%} benign parcels flagged in total on seed {seed + VAL_OFFSET} (1000 benign parcels)"
    return {**manifest, "pin": write_manifest(out, manifest)}


def measure_folders(model_dir: Path, root: Path, threads: int = 2) -> dict[str, Any]:
    """Share of images flagged (any threat detection over its threshold) per sub-folder of
    ``root``, e.g. the GDXray crops: a sim-to-real check, never training data."""
    from station.kernel.imaging import ImageError, load_image

    det = Detector.load(model_dir, threads=threads)
    threats = set(det.manifest.threat_classes)
    report: dict[str, Any] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        flagged, total, errors, labels = 0, 0, 0, dict.fromkeys(det.manifest.classes, 0)
        for path in sorted(folder.iterdir()):
            try:
                dets = [d for d in det.detect(load_image(path).plane) if d.label in threats]
            except ImageError:
                errors += 1
                continue
            total += 1
            flagged += bool(dets)
            if dets:
                labels[max(dets, key=lambda d: d.score).label] += 1
        report[folder.name] = {"images": total, "flagged_share": round(flagged / max(total, 1), 4), "top_label_counts": labels, "load_errors": errors}
    return report


# ---- precision-recall figure ------------------------------------------------------------------


_COLOURS = [(200, 60, 30), (40, 140, 40), (30, 30, 200), (160, 40, 160), (0, 140, 200), (120, 120, 0), (90, 90, 90), (0, 0, 0)]


def draw_pr_curves(curves: list[Curve], out: Path, title: str) -> None:
    """Precision (y) against recall (x), one line per curve, its operating point as a dot;
    drawn with OpenCV so that no plotting library is needed."""
    w, h, left, top, size = 720, 560, 70, 50, 440
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX

    def at(recall: float, precision: float) -> tuple[int, int]:
        return left + round(recall * size), top + round((1 - precision) * size)

    for k in range(6):
        v = k / 5
        cv2.line(img, at(v, 0), at(v, 1), (225, 225, 225), 1)
        cv2.line(img, at(0, v), at(1, v), (225, 225, 225), 1)
        cv2.putText(img, f"{v:.1f}", (at(v, 0)[0] - 12, top + size + 18), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, f"{v:.1f}", (left - 32, at(0, v)[1] + 4), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.rectangle(img, at(0, 1), at(1, 0), (0, 0, 0), 1)
    cv2.putText(img, "recall", (left + size // 2 - 20, h - 12), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "precision", (4, top - 12), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, title[:90], (4, 18), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    for i, c in enumerate(curves):
        colour = _COLOURS[i % len(_COLOURS)]
        if len(c.recall):
            pts = [at(0.0, float(c.precision[0]))] + [at(float(r), float(p)) for r, p in zip(c.recall, c.precision)]
            cv2.polylines(img, [np.array(pts, np.int32)], False, colour, 2, cv2.LINE_AA)
        if not math.isnan(c.op_precision):
            cv2.circle(img, at(c.op_recall, c.op_precision), 6, colour, -1, cv2.LINE_AA)
            cv2.circle(img, at(c.op_recall, c.op_precision), 6, (0, 0, 0), 1, cv2.LINE_AA)
        ap = "-" if math.isnan(c.ap) else f"{c.ap:.3f}"
        y = top + 14 + 20 * i
        cv2.line(img, (left + size + 15, y - 4), (left + size + 40, y - 4), colour, 3)
        cv2.putText(img, f"{c.label[:18]} AP {ap}", (left + size + 45, y), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    y = top + 14 + 20 * len(curves) + 10
    cv2.circle(img, (left + size + 27, y - 4), 6, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "operating point", (left + size + 45, y), font, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), img):
        raise OSError(f"{out}: cannot write the image")


# ---- YOLO-format labels ----------------------------------------------------------------------


class LabelError(Exception):
    """A label file cannot be used; str() names the file and the line."""


def read_yolo_labels(path: Path, names: Sequence[str], width: int, height: int) -> Truth:
    """Objects of one YOLO label file (``class cx cy w h`` per line, normalised to 0..1) as
    pixel boxes in an image of ``width`` x ``height``. A missing file means no objects."""
    if not path.exists():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise LabelError(f"{path}: cannot read: {err}") from err
    truth: Truth = []
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words:
            continue
        try:
            if len(words) != 5:
                raise ValueError(f"expected 5 fields 'class cx cy w h', got {len(words)}")
            cls = int(words[0])
            cx, cy, w, h = (float(v) for v in words[1:])
        except ValueError as err:
            raise LabelError(f"{path}:{lineno}: {err}") from err
        if not 0 <= cls < len(names):
            raise LabelError(f"{path}:{lineno}: class id {cls} outside the {len(names)} names {list(names)}")
        if not all(np.isfinite(v) for v in (cx, cy, w, h)) or w <= 0 or h <= 0:
            raise LabelError(f"{path}:{lineno}: box {cx} {cy} {w} {h} is not a positive normalised box")
        truth.append((names[cls], ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)))
    return truth


def read_names(path: Path) -> list[str]:
    """The ``names:`` of a YOLO data.yaml, in any of its usual spellings: ``[a, b]``, a block
    list (``- a``) or a block mapping (``0: a``). No YAML library needed."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^names\s*:\s*(.*?)\s*(#.*)?$", line)
        if not m:
            continue
        inline = m.group(1)
        if inline.startswith("["):
            return [w.strip().strip("'\"") for w in inline.strip("[]").split(",") if w.strip()]
        names: dict[int, str] = {}
        for item in lines[i + 1:]:
            if item.strip() and not item.startswith((" ", "\t", "-")):
                break
            if (b := re.match(r"^\s*-\s*(.+?)\s*$", item)) is not None:
                names[len(names)] = b.group(1).strip("'\"")
            elif (k := re.match(r"^\s*(\d+)\s*:\s*(.+?)\s*$", item)) is not None:
                names[int(k.group(1))] = k.group(2).strip("'\"")
        return [names[k] for k in sorted(names)]
    raise LabelError(f"{path}: no 'names:' entry")


def write_data_yaml(root: Path, names: Sequence[str]) -> Path:
    path = root / "data.yaml"
    path.write_text(f"path: .\nimages: images\nlabels: labels\nnames: [{', '.join(names)}]\n", encoding="utf-8")
    return path
