"""The station's whole per-image pipeline versus bare ``session.run``: same model, same run.

The pipeline is what the inference worker does for each scan (``station.inference.detect_file``):
read the file, check its SHA-256, decode it, derive the grey image, letterbox, run, decode the YOLO
output, NMS. The baseline is the same onnxruntime session, called bare on the same, already
prepared input tensor. The two alternate image by image, round after round, so that they
share the machine's noise; figures are medians (p50) and 99th percentiles over every image of every
round. Budgets (docs/models.md): inference p50 <= 25 ms; pipeline / bare <= 1.15 at the median.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from drivers.xde import encode_xde
from simulator.xray import THREAT_CLASSES, synth_parcel
from station.kernel.detector import Detector
from station.kernel.imaging import ImageError, load_image
from station.inference import detect_file

TARGET_RATIO = 1.15
TARGET_P50_MS = 25.0
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".xde"}


def synthetic_scans(folder: Path, count: int, seed: int = 20261128) -> list[Path]:
    """Write ``count`` synthetic dual-energy scans (.xde, every other one with a threat)."""
    rng = np.random.default_rng(seed)
    files = []
    for i in range(count):
        threats = (str(rng.choice(THREAT_CLASSES)),) if i % 2 else ()
        scan = synth_parcel(rng, threats)
        path = folder / f"bench-{i:03d}.xde"
        path.write_bytes(encode_xde(scan.high, scan.low))
        files.append(path)
    return files


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _stats(ms: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(ms), 3), "p99": round(float(np.percentile(ms, 99)), 3),
            "images_per_s": round(1000.0 * len(ms) / sum(ms), 1)}


def measure(model_dir: Path, threads: int, files: Sequence[tuple[Path, str]], tensors: Sequence[np.ndarray], rounds: int) -> dict[str, Any]:
    """Time pipeline and bare run, interleaved per image, at ``threads`` intra-op threads."""
    detector = Detector.load(model_dir, threads=threads)
    # The baseline calls the detector's own session directly. A second session would not do: two
    # onnxruntime sessions used in turn at 2 threads slow each other (each one's pool threads spin
    # on after a run), which doubled the figures and hid what the pipeline itself costs.
    session = detector.session
    name = session.get_inputs()[0].name
    session.run(None, {name: tensors[0]})  # warm-up (the detector warmed itself up on load)
    pipeline_ms: list[float] = []
    bare_ms: list[float] = []
    for _ in range(rounds):
        for (path, sha), tensor in zip(files, tensors):
            t0 = time.perf_counter()
            detect_file(detector, path, sha)
            t1 = time.perf_counter()
            session.run(None, {name: tensor})
            t2 = time.perf_counter()
            pipeline_ms.append((t1 - t0) * 1000)
            bare_ms.append((t2 - t1) * 1000)
    pipe, bare = _stats(pipeline_ms), _stats(bare_ms)
    return {"threads": threads, "pipeline_ms": pipe, "bare_ms": bare,
            "ratio_p50": round(pipe["p50"] / bare["p50"], 3), "ratio_p99": round(pipe["p99"] / bare["p99"], 3),
            "ratio_throughput": round(pipe["images_per_s"] / bare["images_per_s"], 3)}


def run_bench(model_dir: Path, files: Sequence[Path], rounds: int, threads: Sequence[int] = (1, 2)) -> dict[str, Any]:
    """Benchmark on ``files``; an image that does not load is listed under ``errors`` and left out
    (ImageError when none loads). ``ok`` compares the last thread count's run with the budgets."""
    loader = Detector.load(model_dir, threads=1)
    usable: list[tuple[Path, str]] = []
    tensors: list[np.ndarray] = []
    errors = []
    for path in files:
        try:
            tensors.append(loader.preprocess(load_image(path).plane)[0])
        except ImageError as err:
            errors.append({"path": str(path), "error": str(err)})
            continue
        usable.append((path, hashlib.sha256(path.read_bytes()).hexdigest()))
    if not usable:
        raise ImageError("no image could be loaded: " + "; ".join(e["error"] for e in errors[:3]))
    results = [measure(model_dir, n, usable, tensors, rounds) for n in threads]
    top = results[-1]
    ok = top["ratio_p50"] <= TARGET_RATIO and top["bare_ms"]["p50"] <= TARGET_P50_MS
    return {"model": f"{loader.manifest.name} {loader.manifest.version}", "images": len(usable), "rounds": rounds,
            "samples_per_figure": len(usable) * rounds, "results": results, "errors": errors,
            "target_ratio_p50": TARGET_RATIO, "target_p50_ms": TARGET_P50_MS, "ok": bool(ok)}


def format_table(report: dict[str, Any]) -> list[str]:
    """Aligned lines for people: one row per thread count, ratios pipeline / bare."""
    title = (f"per-image pipeline vs bare session.run, {report['images']} images x {report['rounds']} rounds "
             f"(medians and p99 over {report['samples_per_figure']} runs each), model {report['model']}")
    header = (f"{'threads':>7} {'pipe p50':>9} {'p99':>8} {'img/s':>7} {'bare p50':>9} {'p99':>8} {'img/s':>7} "
              f"{'ratio p50':>9} {'p99':>6} {'img/s':>6}")
    lines = [title, header]
    for r in report["results"]:
        p, b = r["pipeline_ms"], r["bare_ms"]
        lines.append(f"{r['threads']:>7} {p['p50']:>9.2f} {p['p99']:>8.2f} {p['images_per_s']:>7.1f} {b['p50']:>9.2f} "
                     f"{b['p99']:>8.2f} {b['images_per_s']:>7.1f} {r['ratio_p50']:>9.3f} {r['ratio_p99']:>6.3f} {r['ratio_throughput']:>6.3f}")
    for e in report["errors"]:
        lines.append(f"skipped {e['error']}")
    lines.append(f"budgets at {report['results'][-1]['threads']} threads: "
                 f"ratio p50 <= {TARGET_RATIO}, bare p50 <= {TARGET_P50_MS} ms: {'ok' if report['ok'] else 'MISSED'}")
    return lines
