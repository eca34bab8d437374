"""Benchmark: the station's whole per-image pipeline versus bare `session.run`, same model, same run.

The pipeline is what the inference worker does for each scan (`station.inference.detect_file`):
read the file, check its SHA-256, decode the dual-energy container, derive the grey image,
letterbox, run, decode the YOLO output, NMS. The baseline is a plain onnxruntime session with the
same options running the same, already prepared input tensor. Both run on the same synthetic scans,
alternating in rounds so that they share the machine's noise, at 1 and 2 threads. Budgets
(DESIGN.md): inference p50 <= 25 ms; pipeline / bare <= 1.15 at the median.

    .venv/bin/python -m bench.inference [--images 20] [--rounds 15]

Prints a readable table, then one JSON line (the last line of output).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from drivers.xde import encode_xde
from simulator.xray import THREAT_CLASSES, synth_parcel
from station.daemon import DEFAULT_MODEL
from station.detector import Detector
from station.imaging import load_image
from station.inference import detect_file

TARGET_RATIO = 1.15
TARGET_P50_MS = 25.0


def scans(folder: Path, count: int) -> list[tuple[Path, str]]:
    rng = np.random.default_rng(20261128)
    files = []
    for i in range(count):
        threats = (str(rng.choice(THREAT_CLASSES)),) if i % 2 else ()
        scan = synth_parcel(rng, threats)
        data = encode_xde(scan.high, scan.low)
        path = folder / f"bench-{i:03d}.xde"
        path.write_bytes(data)
        files.append((path, hashlib.sha256(data).hexdigest()))
    return files


def bare_session(model: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def measure(threads: int, files: list[tuple[Path, str]], rounds: int) -> dict[str, object]:
    detector = Detector.load(DEFAULT_MODEL, threads=threads)
    session = bare_session(detector.path, threads)
    name = session.get_inputs()[0].name
    tensors = [detector.preprocess(load_image(path).gray)[0] for path, _ in files]
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
    p50_pipe, p50_bare = statistics.median(pipeline_ms), statistics.median(bare_ms)
    return {
        "threads": threads,
        "pipeline_ms": {"p50": round(p50_pipe, 3), "p99": round(percentile(pipeline_ms, 99), 3)},
        "bare_ms": {"p50": round(p50_bare, 3), "p99": round(percentile(bare_ms, 99), 3)},
        "ratio_p50": round(p50_pipe / p50_bare, 3),
        "throughput_per_s": round(1000.0 / p50_pipe, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = scans(Path(tmp), args.images)
        results = [measure(threads, files, args.rounds) for threads in (1, 2)]
    print(f"per-image pipeline vs bare session.run, {args.images} scans x {args.rounds} rounds, default model")
    print(f"{'threads':>8} {'pipeline p50':>13} {'p99':>8} {'bare p50':>9} {'p99':>8} {'ratio':>6}")
    for r in results:
        pipe, bare = r["pipeline_ms"], r["bare_ms"]
        print(f"{r['threads']:>8} {pipe['p50']:>13.2f} {pipe['p99']:>8.2f} {bare['p50']:>9.2f} {bare['p99']:>8.2f} "  # type: ignore[index]
              f"{r['ratio_p50']:>6.3f}")
    two = results[-1]
    ok = two["ratio_p50"] <= TARGET_RATIO and two["bare_ms"]["p50"] <= TARGET_P50_MS  # type: ignore[index,operator]
    print(f"targets at 2 threads: ratio <= {TARGET_RATIO}, bare p50 <= {TARGET_P50_MS} ms: {'ok' if ok else 'MISSED'}")
    print(json.dumps({"bench": "inference", "model": str(DEFAULT_MODEL.name), "results": results,
                      "target_ratio_p50": TARGET_RATIO, "target_p50_ms": TARGET_P50_MS, "ok": bool(ok)}))


if __name__ == "__main__":
    main()
