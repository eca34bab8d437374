"""Measure a detector on fresh synthetic parcels, and calibrate its per-class thresholds.

Everything runs through the station's own path (``station.imaging.gray_from_high`` and
``station.detector.Detector``), so the figures are the ones the lane will see. Sets are seeded
and disjoint from training by seed offset; the same seed gives the same figures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from simulator.xray import THREAT_CLASSES, synth_parcel
from station.detector import Detection, Detector
from station.imaging import gray_from_high

FLOOR = 0.01  # keep low-scoring boxes for AP
VAL_OFFSET, EVAL_OFFSET = 1_000_003, 2_000_003
FALSE_ALARM_BUDGET = 0.04  # benign parcels flagged, shared equally by the classes


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def run_set(det: Detector, seed: int, n: int, benign_share: float = 0.5) -> list[tuple[list[tuple[str, tuple[float, ...]]], list[Detection]]]:
    """Render n parcels (the first ``benign_share`` clean, the rest one threat each, classes in
    turn) and detect with a low floor. Returns (ground truth, detections) per parcel."""
    rng = np.random.default_rng(seed)
    n_benign = int(n * benign_share)
    floor = dict.fromkeys(det.manifest.classes, FLOOR)
    out = []
    for i in range(n):
        threats = () if i < n_benign else (THREAT_CLASSES[(i - n_benign) % len(THREAT_CLASSES)],)
        scan = synth_parcel(rng, threats)
        truth = [(b.label, (float(b.x1), float(b.y1), float(b.x2), float(b.y2))) for b in scan.boxes]
        out.append((truth, det.detect(gray_from_high(scan.high), floor)))
    return out


def average_precision(results: list[tuple[list[tuple[str, tuple[float, ...]]], list[Detection]]], label: str, iou: float = 0.5) -> float:
    """VOC all-point AP for one class."""
    n_gt = sum(1 for truth, _ in results for lab, _ in truth if lab == label)
    if n_gt == 0:
        return float("nan")
    scored = []
    for k, (truth, dets) in enumerate(results):
        scored.extend((d.score, k, d.box) for d in dets if d.label == label)
    scored.sort(key=lambda s: -s[0])
    used: set[tuple[int, int]] = set()
    tp = np.zeros(len(scored))
    for i, (_, k, box) in enumerate(scored):
        gts = [(j, b) for j, (lab, b) in enumerate(results[k][0]) if lab == label and (k, j) not in used]
        best = max(gts, key=lambda g: _iou(box, g[1]), default=None)
        if best is not None and _iou(box, best[1]) >= iou:
            used.add((k, best[0]))
            tp[i] = 1
    if not len(scored):
        return 0.0
    ctp = np.cumsum(tp)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, len(scored) + 1)
    prec = np.concatenate([[0.0], precision, [0.0]])
    rec = np.concatenate([[0.0], recall, [recall[-1]]])
    for i in range(len(prec) - 2, -1, -1):
        prec[i] = max(prec[i], prec[i + 1])
    return float(np.sum((rec[1:] - rec[:-1]) * prec[1:]))


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


def measure(det: Detector, seed: int, n: int = 600) -> dict[str, Any]:
    """Per-class AP@0.5, threat recall (parcels flagged, and objects found with IoU >= 0.5 at
    the operating thresholds), false-alarm rate on benign parcels, and p50/p95 latency."""
    results = run_set(det, seed + EVAL_OFFSET, n)
    thr = {c: det.manifest.thresholds.get(c, det.manifest.default_threshold) for c in det.manifest.classes}
    threats = set(det.manifest.threat_classes)

    def flagged(dets: list[Detection]) -> bool:
        return any(d.label in threats and d.score >= thr[d.label] for d in dets)

    benign = [r for r in results if not r[0]]
    bearing = [r for r in results if r[0]]
    found = sum(1 for truth, dets in bearing for lab, box in truth if any(d.label == lab and d.score >= thr[lab] and _iou(d.box, box) >= 0.5 for d in dets))
    n_obj = sum(len(t) for t, _ in bearing)
    per_class_recall = {}
    for c in THREAT_CLASSES:
        rows = [r for r in bearing if r[0][0][0] == c]
        per_class_recall[c] = round(sum(flagged(d) for _, d in rows) / max(len(rows), 1), 4)
    rng = np.random.default_rng(seed)
    gray = gray_from_high(synth_parcel(rng, ("gun",)).high)
    times = []
    for _ in range(100):
        t0 = time.perf_counter()
        det.detect(gray)
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "eval_set": f"fresh synthetic parcels, seed {seed + EVAL_OFFSET}, {len(benign)} benign + {len(bearing)} with one threat",
        "ap50": {c: round(average_precision(results, c), 4) for c in THREAT_CLASSES},
        "map50": round(float(np.nanmean([average_precision(results, c) for c in THREAT_CLASSES])), 4),
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
    """Write manifest.json: provisional, then with calibrated thresholds and measured metrics."""
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
    path = out / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    manifest["thresholds"] = calibrate(Detector.load(out, threads=1), seed)
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    manifest["metrics"] = measure(Detector.load(out, threads=2), seed, eval_images)
    manifest["metrics"]["calibration"] = f"per-class thresholds: <= {FALSE_ALARM_BUDGET:.0%} benign parcels flagged in total on seed {seed + VAL_OFFSET} (1000 benign parcels)"
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def measure_folders(model_dir: Path, root: Path, threads: int = 2) -> dict[str, Any]:
    """Share of images flagged (any threat detection over its threshold) per sub-folder of
    ``root``, e.g. the GDXray crops: a sim-to-real check, never training data."""
    from station.imaging import ImageError, load_image

    det = Detector.load(model_dir, threads=threads)
    threats = set(det.manifest.threat_classes)
    report: dict[str, Any] = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        flagged, total, errors, labels = 0, 0, 0, dict.fromkeys(det.manifest.classes, 0)
        for path in sorted(folder.iterdir()):
            try:
                dets = [d for d in det.detect(load_image(path).gray) if d.label in threats]
            except ImageError:
                errors += 1
                continue
            total += 1
            flagged += bool(dets)
            if dets:
                labels[max(dets, key=lambda d: d.score).label] += 1
        report[folder.name] = {"images": total, "flagged_share": round(flagged / max(total, 1), 4), "top_label_counts": labels, "load_errors": errors}
    return report
