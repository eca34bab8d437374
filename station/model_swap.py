"""Model swap on the running lane: load, verify, warm up, swap between images, roll back.

`station model load DIR`, `station model rollback` and `station model status` reach a running daemon
over the control socket. A new model is loaded and warmed up on a worker thread while the lane keeps
running on the old one; the swap is one assignment, taken by the next image submitted (an image
already being analysed finishes on the model it started with, and each item records the hash of the
model that looked at it). The model swapped out is kept loaded, so a rollback is instant.

A model whose file does not match its manifest's SHA-256, or whose manifest does not match its pin
(station.kernel.detector: one hash over the network and its manifest), is refused *and* the lane goes
MANUAL_ONLY (every item to INSPECT) until a good model is loaded or rolled back to: the model store has
been altered or damaged, and nothing from it is trusted. Any other load failure (no such folder, a bad
manifest, a graph onnxruntime rejects) is refused and the lane keeps its current model.
Every action is audited in the alarms table.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from station.inference import InferenceWorker
from station.kernel.detector import Detector, ModelError, ModelIntegrityError
from station.lane import messages as m
from station.lane.runtime import LaneRuntime
from station.lane.status import ModelInfo

log = logging.getLogger(__name__)


def describe(detector: Detector | None) -> dict[str, object] | None:
    if detector is None:
        return None
    man = detector.manifest
    # "sha256" is the model's pin: the hash over its network and its manifest, as every item records it
    return {"name": man.name, "version": man.version, "sha256": detector.model_hash,
            "path": str(detector.path.parent), "classes": list(man.classes)}


def model_info(detector: Detector | None) -> ModelInfo | None:
    """What the lane status says of a model."""
    return None if detector is None else ModelInfo(detector.manifest.name, detector.manifest.version,
                                                    detector.model_hash)


class ModelSwitch:
    """Owns which detector the lane's inference worker uses."""

    def __init__(self, worker: InferenceWorker, runtime: LaneRuntime, *, threads: int,
                 why_none: str | None = None) -> None:
        self.worker = worker
        self.runtime = runtime
        self.threads = threads
        self.previous: Detector | None = None
        self.why_none = why_none  # why the lane is MANUAL_ONLY, while it is
        self._busy = asyncio.Lock()

    def status(self) -> dict[str, object]:
        return {"manual_only": self.worker.detector is None, "why": self.why_none,
                "model": describe(self.worker.detector), "previous": describe(self.previous)}

    async def load(self, path: Path) -> dict[str, object]:
        async with self._busy:
            try:
                detector = await asyncio.to_thread(Detector.load, path, self.threads)  # verifies and warms up
            except ModelIntegrityError as err:
                self._swap(None, why=str(err))
                self.runtime.dispatch_alarm("MODEL_REFUSED",
                                            f"{err}; the lane is MANUAL_ONLY until a good model is loaded")
                return {"ok": False, "error": str(err), **self.status()}
            except ModelError as err:
                self.runtime.dispatch_alarm("MODEL_LOAD_FAILED", f"{err}; the current model stays")
                return {"ok": False, "error": str(err), **self.status()}
            self._swap(detector)
            self.runtime.dispatch_alarm("MODEL_LOADED", f"{detector.manifest.name} {detector.manifest.version} "
                                                        f"pin {detector.model_hash} from {path}")
            return {"ok": True, **self.status()}

    async def rollback(self) -> dict[str, object]:
        async with self._busy:
            if self.previous is None:
                return {"ok": False, "error": "no earlier model to roll back to", **self.status()}
            back = self.previous
            self._swap(back)
            self.runtime.dispatch_alarm("MODEL_ROLLBACK",
                                        f"back to {back.manifest.name} {back.manifest.version} pin {back.model_hash}")
            return {"ok": True, **self.status()}

    def _swap(self, detector: Detector | None, why: str | None = None) -> None:
        current = self.worker.detector
        if current is not None and current is not detector:
            self.previous = current
        self.worker.detector = detector
        self.why_none = why if detector is None else None
        self.runtime.dispatch(m.ModelChanged(time.monotonic(), None if detector is None else detector.model_hash))
        self.runtime.set_model(model_info(detector), self.why_none)
