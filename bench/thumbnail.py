"""Benchmark: where an INSPECT alert's thumbnail is made (station/alerts.py, station/lane/recorder.py).

Two places could make it. In the inference worker, from the image it has just decoded for the detector:
no second decode, but every item pays, CLEAR ones too, and the ms are added to the decision. On the
store writer's thread, from the scan file just kept: a second decode, for INSPECT items only, while
the writer waits. This measures both on one 2048x1365 16-bit scan from the simulator (dual-energy .xde,
as the simulated scanner writes, and its high plane as a 16-bit PNG), the median and worst of N runs,
and how late the event loop wakes while the writer's way runs on a thread (the GIL: OpenCV releases it).

    .venv/bin/python -m bench.thumbnail [--runs 20]

Prints one line per measure, then one JSON line. The machine is shared: quote medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from drivers.xde import encode_xde
from simulator.xray import render_parcel
from station.alerts import thumbnail_file, thumbnail_of
from station.kernel.imaging import LoadedImage, load_image


def timed(job: Callable[[], object], runs: int) -> tuple[float, float]:
    job()  # warm: tables built, pages cached
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        job()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times)


async def loop_lateness(job: Callable[[], object], runs: int) -> float:
    """The event loop's worst lateness (ms) on a 10 ms sleep while `job` runs `runs` times on a thread."""
    loop = asyncio.get_running_loop()
    worker = threading.Thread(target=lambda: [job() for _ in range(runs)])
    worker.start()
    worst = 0.0
    while worker.is_alive():
        due = loop.time() + 0.01
        await asyncio.sleep(0.01)
        worst = max(worst, loop.time() - due)
    worker.join()
    return worst * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    scan, _ = render_parcel(np.random.default_rng(7), ("gun",), height=1365, width=2048)
    report: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as folder:
        xde, png = Path(folder) / "scan.xde", Path(folder) / "scan.png"
        xde.write_bytes(encode_xde(scan.high, scan.low, {"scan_id": "bench"}))
        cv2.imwrite(str(png), scan.high)
        for path in (xde, png):
            decoded = load_image(path)

            def in_worker(image: LoadedImage = decoded) -> object:  # a fresh image: no cached grey view
                return thumbnail_of(LoadedImage(image.path, image.plane, image.kind, image.high, image.low))

            def on_writer(path: Path = path) -> object:
                return thumbnail_file(str(path))

            kind = path.suffix[1:]
            for name, job in (("inference worker, from the decoded image", in_worker),
                              ("writer thread, from the kept file", on_writer)):
                median, worst = timed(job, args.runs)
                report[f"{kind} {name}"] = {"median_ms": round(median, 1), "max_ms": round(worst, 1)}
                print(f"{kind:4} {name:42} median {median:6.1f} ms   max {worst:6.1f} ms")
            late = asyncio.run(loop_lateness(on_writer, args.runs))
            report[f"{kind} loop lateness while the writer renders"] = {"max_ms": round(late, 1)}
            print(f"{kind:4} {'event loop late while the writer renders':42} max    {late:6.1f} ms")
            thumb = thumbnail_file(str(path))
            report[f"{kind} thumbnail"] = {"width": thumb.width, "height": thumb.height, "bytes": len(thumb.jpeg)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
