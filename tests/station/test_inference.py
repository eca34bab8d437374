"""The inference worker: hash check, image errors, and a stuck inference that times out and is replaced."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from drivers.xde import encode_xde
from simulator.xray import synth_parcel
from station.inference import InferenceProblem, InferenceWorker, detect_file
from station.kernel.detector import DEFAULT_MODEL, Detection, Detector


@pytest.fixture(scope="module")
def detector() -> Detector:
    return Detector.load(DEFAULT_MODEL, threads=1)


def scan_file(tmp_path: Path, threats: tuple[str, ...] = ("gun",)) -> tuple[Path, str]:
    scan = synth_parcel(np.random.default_rng(5), threats)
    data = encode_xde(scan.high, scan.low)
    path = tmp_path / "scan.xde"
    path.write_bytes(data)
    return path, hashlib.sha256(data).hexdigest()


def test_a_scan_is_detected_and_its_hash_checked(tmp_path: Path, detector: Detector) -> None:
    path, sha = scan_file(tmp_path)
    found = detect_file(detector, path, sha)
    assert all(d.threat == (d.label in detector.manifest.threat_classes) for d in found)
    with pytest.raises(InferenceProblem) as err:
        detect_file(detector, path, "0" * 64)
    assert err.value.reason.code == "IMAGE_ERROR" and "SHA-256" in err.value.reason.detail
    # A file cut short in transfer is reported as not what the scanner sent.
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(InferenceProblem, match="SHA-256 differs"):
        detect_file(detector, path, sha)


def test_missing_and_truncated_files_are_image_errors(tmp_path: Path, detector: Detector) -> None:
    path, _ = scan_file(tmp_path)
    with pytest.raises(InferenceProblem, match="IMAGE_ERROR"):
        detect_file(detector, tmp_path / "absent.xde")
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(InferenceProblem, match="IMAGE_ERROR.*scan.xde"):
        detect_file(detector, path)


class StuckOnce:
    """Stand-in for a detector whose first run hangs (what a wedged runtime looks like); later runs are real."""

    def __init__(self, real: Detector) -> None:
        self.real, self.release, self.calls = real, threading.Event(), 0
        self.model_hash = real.model_hash

    def detect(self, gray: np.ndarray) -> list[Detection]:
        self.calls += 1
        if self.calls == 1:
            self.release.wait(30)
        return self.real.detect(gray)

    def is_threat(self, d: Detection) -> bool:
        return self.real.is_threat(d)


def test_a_stuck_inference_times_out_and_the_next_runs_on_a_fresh_worker(tmp_path: Path, detector: Detector) -> None:
    path, sha = scan_file(tmp_path)
    stuck = StuckOnce(detector)
    worker = InferenceWorker(stuck, timeout_s=0.5)  # type: ignore[arg-type]

    async def main() -> tuple[InferenceProblem, tuple[tuple[object, ...], str]]:
        try:
            await worker.run(path, sha)
        except InferenceProblem as err:
            problem = err
        else:
            raise AssertionError("a stuck inference must time out")
        return problem, await worker.run(path, sha)

    try:
        problem, second = asyncio.run(main())
    finally:
        stuck.release.set()
        worker.close()
    assert problem.reason.code == "INFERENCE_TIMEOUT"
    assert worker.restarts == 1 and stuck.calls == 2
    found, model_hash = second
    assert isinstance(found, tuple) and model_hash == detector.model_hash


# ---- spool files are not trusted --------------------------------------------------------------


def free_fifo_readers(fifo: Path) -> None:
    """Let any thread blocked opening ``fifo`` go (the test has failed by then; it must not hang)."""
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # ENXIO: nobody is blocked on it
        pass


def test_a_symlink_to_dev_zero_is_an_image_error_at_once(tmp_path: Path, detector: Detector) -> None:
    link = tmp_path / "scan.xde"
    link.symlink_to("/dev/zero")
    t0 = time.monotonic()
    with pytest.raises(InferenceProblem) as err:
        detect_file(detector, link, max_image_bytes=1 << 20)
    assert err.value.reason.code == "IMAGE_ERROR" and "symbolic link" in err.value.reason.detail
    assert time.monotonic() - t0 < 1


def test_a_file_over_the_limit_is_an_image_error_naming_both_sizes(tmp_path: Path, detector: Detector) -> None:
    path, sha = scan_file(tmp_path)
    size = path.stat().st_size
    with pytest.raises(InferenceProblem) as err:
        detect_file(detector, path, sha, max_image_bytes=size - 1)
    assert err.value.reason.code == "IMAGE_ERROR"
    assert f"{size} bytes, larger than the limit of {size - 1} bytes" in err.value.reason.detail
    assert detect_file(detector, path, sha, max_image_bytes=size) is not None  # at the limit: read


def test_fifos_in_the_spool_are_image_errors_and_leak_no_worker_thread(tmp_path: Path, detector: Detector) -> None:
    fifos = [tmp_path / f"S{i}.xde" for i in range(5)]
    for fifo in fifos:
        os.mkfifo(fifo)
    before = set(threading.enumerate())
    worker = InferenceWorker(detector, timeout_s=0.5, max_image_bytes=1 << 20)

    async def main() -> list[InferenceProblem]:
        problems = []
        for fifo in fifos:
            with pytest.raises(InferenceProblem) as err:
                await worker.run(fifo, None)
            problems.append(err.value)
        return problems

    try:
        t0 = time.monotonic()
        problems = asyncio.run(main())
        elapsed = time.monotonic() - t0
        extra = [t.name for t in threading.enumerate() if t not in before]
    finally:
        for fifo in fifos:
            free_fifo_readers(fifo)
        worker.close()
    assert [p.reason.code for p in problems] == ["IMAGE_ERROR"] * 5
    assert all("FIFO" in p.reason.detail for p in problems)
    assert elapsed < 2 and worker.restarts == 0
    assert len(extra) <= 1, f"threads besides the one worker: {extra}"  # the worker's own thread only
