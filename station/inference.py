"""Inference off the event loop: load the image, check its hash, run the detector, with a timeout.

One worker thread runs one image at a time (onnxruntime uses its own threads inside). A stuck image
times out: the item goes to INSPECT and the worker thread is replaced, so the next image does not
queue behind the stuck one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from station.detector import Detector, Letterbox
from station.imaging import ImageError, load_image
from station.lane.messages import Detected, Reason

log = logging.getLogger(__name__)


class InferenceProblem(Exception):
    def __init__(self, reason: Reason) -> None:
        super().__init__(f"{reason.code}: {reason.detail}")
        self.reason = reason


def detect_file(detector: Detector, path: Path, sha256: str | None = None,
                hasher: Executor | None = None) -> tuple[Detected, ...]:
    """Load, verify and detect one image file (blocking). Raises InferenceProblem with the reason.

    The hash is checked before the model runs. Given a ``hasher`` (one thread), it is computed there
    while this thread decodes and letterboxes (hashlib and OpenCV release the GIL), so it costs no
    time, and never alongside the model's own threads."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise InferenceProblem(Reason("IMAGE_ERROR", f"{path}: cannot read: {err.strerror}")) from err
    digest = None if sha256 is None else (hasher or _InlineExecutor()).submit(_sha256_hex, data)
    try:
        tensor, lb = _prepare(detector, path, data)
    finally:  # a file that is not what the scanner sent is reported as such, whatever else is wrong with it
        if digest is not None and digest.result() != sha256.lower():  # type: ignore[union-attr]
            raise InferenceProblem(Reason("IMAGE_ERROR", f"{path}: SHA-256 differs from the scanner's"))
    try:
        found = detector.detect_prepared(tensor, lb)
    except Exception as err:  # onnxruntime raises its own types; any of them means no result
        raise InferenceProblem(Reason("INFERENCE_ERROR", f"{path}: {err}")) from err
    return tuple(Detected(d.label, d.score, d.box, detector.is_threat(d)) for d in found)


def _prepare(detector: Detector, path: Path, data: bytes) -> tuple[np.ndarray, Letterbox]:
    try:
        image = load_image(path, data=data)
    except ImageError as err:
        raise InferenceProblem(Reason("IMAGE_ERROR", str(err))) from err
    try:
        return detector.preprocess(image.gray)
    except Exception as err:
        raise InferenceProblem(Reason("INFERENCE_ERROR", f"{path}: {err}")) from err


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _InlineExecutor(Executor):
    """Runs the call at once, in this thread."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


class InferenceWorker:
    """Runs each image on the detector in charge when the image is submitted. ``detector`` may be
    swapped at any time (see station.model_swap): an image already running finishes on the model it
    started with, so a swap falls between two images. None: no usable model (MANUAL_ONLY)."""

    def __init__(self, detector: Detector | None, timeout_s: float) -> None:
        self.detector = detector
        self.timeout_s = timeout_s
        self.restarts = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self._hasher = ThreadPoolExecutor(1, thread_name_prefix="image-hash")

    async def run(self, path: Path, sha256: str | None) -> tuple[tuple[Detected, ...], str]:
        """The image's detections and the hash of the model that found them."""
        detector = self.detector
        if detector is None:
            raise InferenceProblem(Reason("MANUAL_ONLY", "no usable detection model"))
        loop = asyncio.get_running_loop()
        while True:
            future = loop.run_in_executor(self._pool, detect_file, detector, path, sha256, self._hasher)
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await future, detector.model_hash
            except TimeoutError as err:
                self._restart()
                raise InferenceProblem(Reason("INFERENCE_TIMEOUT", f"{path}: no result within {self.timeout_s:g} s")) from err
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is None or task.cancelling():
                    raise
                # Not us: this image was queued behind one that hung, and the restart cancelled the
                # queue. Submit it again to the fresh worker, with a fresh timeout.

    def _restart(self) -> None:
        # A thread cannot be killed; abandon it (it ends when its run returns) and start a fresh one.
        log.warning("inference worker stuck; starting a new one")
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="inference")
        self.restarts += 1

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._hasher.shutdown(wait=True)
