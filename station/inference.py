"""Inference off the event loop: load the image, check its hash, run the detector, with a timeout.

One worker thread runs one image at a time (onnxruntime uses its own threads inside). A stuck image
times out: the item goes to INSPECT and the worker thread is replaced, so the next image does not
queue behind the stuck one.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from station.domain import Detected, Reason
from station.kernel.detector import Detector
from station.kernel.imaging import ImageError, load_image
from station.spool import SpoolError, read_spool_file

log = logging.getLogger(__name__)

DEFAULT_MAX_IMAGE_BYTES = 64 * 1024 * 1024  # scanner.max_image_mb's default


class InferenceProblem(Exception):
    def __init__(self, reason: Reason) -> None:
        super().__init__(f"{reason.code}: {reason.detail}")
        self.reason = reason


def detect_file(detector: Detector, path: Path, sha256: str | None = None, *,
                max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> tuple[Detected, ...]:
    """Load, verify and detect one image file (blocking). Raises InferenceProblem with the reason.

    The file is read as a spool file (station.spool.read_spool_file): a symbolic link, FIFO, device
    or a file over ``max_image_bytes`` is an IMAGE_ERROR at once, never a blocked or unbounded read."""
    try:
        data = read_spool_file(path, max_image_bytes)
    except SpoolError as err:
        raise InferenceProblem(Reason("IMAGE_ERROR", str(err))) from err
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise InferenceProblem(Reason("IMAGE_ERROR", f"{path}: SHA-256 differs from the scanner's"))
    try:
        image = load_image(path, data=data)
    except ImageError as err:
        raise InferenceProblem(Reason("IMAGE_ERROR", str(err))) from err
    try:
        found = detector.detect(image.plane)
    except Exception as err:  # onnxruntime raises its own types; any of them means no result
        raise InferenceProblem(Reason("INFERENCE_ERROR", f"{path}: {err}")) from err
    return tuple(Detected(d.label, d.score, d.box, detector.is_threat(d)) for d in found)


class InferenceWorker:
    """Runs each image on the detector in charge when the image is submitted. ``detector`` may be
    swapped at any time (see station.model_swap): an image already running finishes on the model it
    started with, so a swap falls between two images. None: no usable model (MANUAL_ONLY)."""

    def __init__(self, detector: Detector | None, timeout_s: float, *,
                 max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES) -> None:
        self.detector = detector
        self.timeout_s = timeout_s
        self.max_image_bytes = max_image_bytes
        self.restarts = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="inference")

    async def run(self, path: Path, sha256: str | None) -> tuple[tuple[Detected, ...], str]:
        """The image's detections and the hash of the model that found them."""
        detector = self.detector
        if detector is None:
            raise InferenceProblem(Reason("MANUAL_ONLY", "no usable detection model"))
        loop = asyncio.get_running_loop()
        while True:
            job = functools.partial(detect_file, detector, path, sha256, max_image_bytes=self.max_image_bytes)
            future = loop.run_in_executor(self._pool, job)
            try:
                async with asyncio.timeout(self.timeout_s):
                    return await future, detector.model_hash
            except TimeoutError as err:
                self._restart()
                raise InferenceProblem(
                    Reason("INFERENCE_TIMEOUT", f"{path}: no result within {self.timeout_s:g} s")) from err
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
