"""ONNX object detection for scan images: the default model or any YOLOv8/YOLO11 export.

A model directory holds ``manifest.json`` and the ONNX file it names. The file's SHA-256 must
match the manifest, or the model is refused (the lane then runs MANUAL_ONLY). The network
takes float32 ``[1, 3, H, W]`` (grey replicated to 3 channels, scaled 0..1, letterboxed) and
returns the Ultralytics layout ``[1, 4 + n_classes, N]``: cx, cy, w, h in input pixels, then
per-class scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from station.imaging import transmission_view

log = logging.getLogger(__name__)


class ModelError(Exception):
    """A model cannot be loaded or run; the message names the file and the problem."""


class ModelIntegrityError(ModelError):
    """The model file is not the one its manifest describes (SHA-256 differs): altered or damaged
    since it was measured, so neither it nor the model store it came from is to be trusted."""


@dataclass(frozen=True)
class Detection:
    """One detected object; ``box`` is x1, y1, x2, y2 in source-image pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]


class Manifest(BaseModel):
    """What ``manifest.json`` beside a model says about it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="model name")
    version: str = Field(description="model version")
    classes: list[str] = Field(min_length=1, description="class names, in output row order")
    input_size: tuple[int, int] = Field(description="network input [height, width] in pixels")
    normalisation: str = Field(description="'scale_0_1': grey/255 replicated to 3 channels")
    thresholds: dict[str, float] = Field(description="per-class score threshold; missing -> default_threshold")
    threat_classes: list[str] = Field(description="classes that make a parcel a threat")
    sha256: str = Field(description="SHA-256 of the ONNX file, hex")
    training_data: str = Field(description="what the model was trained on")
    metrics: dict[str, Any] = Field(default_factory=dict, description="measured figures")
    onnx_file: str = Field(default="model.onnx", description="ONNX file name in the model directory")
    default_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    letterbox_pad: int = Field(default=114, ge=0, le=255, description="grey level of letterbox padding")
    nms_iou: float = Field(default=0.45, gt=0.0, le=1.0, description="IoU above which NMS drops a box")
    max_detections: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.normalisation != "scale_0_1":
            raise ValueError(f"normalisation {self.normalisation!r} unsupported (only 'scale_0_1')")
        if min(self.input_size) <= 0:
            raise ValueError(f"input_size must be positive, got {self.input_size}")
        unknown = (set(self.thresholds) | set(self.threat_classes)) - set(self.classes)
        if unknown:
            raise ValueError(f"thresholds/threat_classes name unknown classes {sorted(unknown)}")
        return self


@dataclass(frozen=True)
class Letterbox:
    """How a source image was fitted into the network input: input = source * scale + (dx, dy)."""

    scale: float
    dx: int
    dy: int
    src_h: int
    src_w: int

    @property
    def inner_hw(self) -> tuple[int, int]:
        """Height and width of the resized source inside the input (the rest is padding)."""
        return max(1, round(self.src_h * self.scale)), max(1, round(self.src_w * self.scale))


def fit(src_h: int, src_w: int, size: tuple[int, int]) -> Letterbox:
    """The letterbox geometry: keep the aspect ratio, fit inside ``size`` (h, w), centre."""
    th, tw = size
    lb = Letterbox(min(th / src_h, tw / src_w), 0, 0, src_h, src_w)
    nh, nw = lb.inner_hw
    return replace(lb, dx=(tw - nw) // 2, dy=(th - nh) // 2)


def _resize(img: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Bilinear, as Ultralytics' own letterbox, down to half size; below that, pixel-area averaging,
    so that a wire or a blade's edge is not dropped between samples. (Area averaging at a mild
    scale such as 0.8 cost 0.4 ms a scan, bilinear 0.08, for a mean difference of 0.3 grey levels.)"""
    nh, nw = lb.inner_hw
    return cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA if lb.scale < 0.5 else cv2.INTER_LINEAR)


def letterbox(gray: np.ndarray, size: tuple[int, int], pad: int) -> tuple[np.ndarray, Letterbox]:
    """Resize uint8 grey keeping aspect ratio to fit ``size`` (h, w), centre, pad with grey ``pad``."""
    lb = fit(*gray.shape, size)
    resized = _resize(gray, lb)
    if resized.shape == size:
        return resized, lb
    out = np.full(size, pad, np.uint8)
    out[lb.dy : lb.dy + resized.shape[0], lb.dx : lb.dx + resized.shape[1]] = resized
    return out, lb


def _nms(boxes: np.ndarray, classes: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression within each class, on boxes already in priority order (best
    first): the indices kept. Each kept box drops, in one array operation, the later boxes of its
    class that it overlaps by more than ``iou``."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    alive = np.ones(len(boxes), bool)
    keep: list[int] = []
    for i in range(len(boxes)):
        if not alive[i]:
            continue
        keep.append(i)
        rest = slice(i + 1, None)
        lt = np.maximum(boxes[i, :2], boxes[rest, :2])
        rb = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.clip(rb - lt, 0, None).prod(1)
        alive[rest] &= (inter / (area[i] + area[rest] - inter + 1e-9) <= iou) | (classes[rest] != classes[i])
    return keep


class Detector:
    """A loaded, warmed-up model. Safe to call from one worker thread at a time."""

    def __init__(self, manifest: Manifest, session: ort.InferenceSession, model_hash: str, path: Path) -> None:
        self.manifest = manifest
        self.session = session
        self.model_hash = model_hash
        self.path = path
        self._input = session.get_inputs()[0].name
        self._thr = np.array([manifest.thresholds.get(c, manifest.default_threshold) for c in manifest.classes], np.float32)

    @classmethod
    def load(cls, model_dir: str | Path, threads: int = 2) -> Detector:
        """Read the manifest, verify the ONNX file's SHA-256, build the session and warm it up."""
        model_dir = Path(model_dir)
        mpath = model_dir / "manifest.json"
        try:
            manifest = Manifest.model_validate(json.loads(mpath.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError) as err:
            raise ModelError(f"{mpath}: cannot read manifest: {err}") from err
        onnx_path = model_dir / manifest.onnx_file
        try:
            blob = onnx_path.read_bytes()
        except OSError as err:
            raise ModelError(f"{onnx_path}: cannot read model file: {err}") from err
        digest = hashlib.sha256(blob).hexdigest()
        if digest != manifest.sha256.lower():
            raise ModelIntegrityError(f"{onnx_path}: hash mismatch: file sha256 {digest}, manifest says {manifest.sha256}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{onnx_path}: onnxruntime cannot load it: {err}") from err
        det = cls(manifest, session, digest, onnx_path)
        h, w = manifest.input_size
        det._check_output(det._run(np.zeros((1, 3, h, w), np.float32)))
        log.info("model %s %s loaded from %s (sha256 %s, %d threads)", manifest.name, manifest.version, onnx_path, digest[:12], threads)
        return det

    def _run(self, tensor: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(self.session.run(None, {self._input: tensor})[0])
        except Exception as err:  # onnxruntime's errors have no common base class
            raise ModelError(f"{self.path}: inference failed: {err}") from err

    def _check_output(self, out: np.ndarray) -> None:
        want = 4 + len(self.manifest.classes)
        if out.ndim != 3 or out.shape[0] != 1 or out.shape[1] != want:
            raise ModelError(f"{self.path}: output shape {out.shape}, expected [1, {want}, N] for {len(self.manifest.classes)} classes")

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """A scan's model view -> float32 [1, 3, H, W] input tensor and the letterbox geometry.

        ``image`` is uint8 grey (bright = air), used as it is, or a uint16 transmission plane
        (65535 = air), mapped to the grey view (``station.imaging.transmission_view``) after
        resizing: on the network's pixels rather than the scan's."""
        if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16) or image.size == 0:
            raise ModelError(f"detector input must be a non-empty 2-D uint8 or uint16 image, got {image.dtype} {image.shape}")
        lb = fit(*image.shape, self.manifest.input_size)
        resized = _resize(image, lb)
        x = np.empty((1, 3, *self.manifest.input_size), np.float32)
        grey = x[0, 0]
        if resized.shape != grey.shape:
            grey[...] = self.manifest.letterbox_pad / 255.0
        inside = grey[lb.dy : lb.dy + resized.shape[0], lb.dx : lb.dx + resized.shape[1]]
        if resized.dtype == np.uint16:
            transmission_view(resized, out=inside)
        else:
            np.multiply(resized, np.float32(1.0 / 255.0), out=inside, casting="unsafe")
        x[0, 1] = grey  # grey replicated to the three channels a YOLO network expects
        x[0, 2] = grey
        return x, lb

    def postprocess(self, out: np.ndarray, lb: Letterbox, thresholds: Mapping[str, float] | None = None) -> list[Detection]:
        """Decode ``[1, 4+nc, N]``: best class per anchor, its threshold, class-wise NMS,
        boxes mapped back to source pixels and clipped; highest score first."""
        m = self.manifest
        thr = self._thr if thresholds is None else np.array([thresholds.get(c, m.default_threshold) for c in m.classes], np.float32)
        scores = out[0, 4:]  # nc, N: one contiguous row per class
        best = scores.max(0)
        keep = np.flatnonzero(best >= thr.min())  # most anchors of most scans clear no threshold
        cls = scores[:, keep].argmax(0)
        cleared = best[keep] >= thr[cls]
        keep, cls = keep[cleared], cls[cleared]
        if not keep.size:
            return []
        best = best[keep]
        order = np.lexsort((cls, -best))  # best score first; ties: class order, then anchor order
        keep, cls, best = keep[order], cls[order], best[order]
        p = out[0, :4, keep]  # kept anchors' cx, cy, w, h
        half = p[:, 2:4] / 2
        offset = np.array([lb.dx, lb.dy, lb.dx, lb.dy], np.float32)
        boxes = (np.concatenate([p[:, :2] - half, p[:, :2] + half], 1) - offset) / lb.scale
        np.clip(boxes, 0, np.array([lb.src_w, lb.src_h, lb.src_w, lb.src_h], np.float32), out=boxes)  # source pixels
        kept = _nms(boxes, cls, m.nms_iou)[: m.max_detections]
        return [Detection(m.classes[c], score, tuple(box))  # type: ignore[arg-type]
                for c, score, box in zip(cls[kept].tolist(), best[kept].tolist(), boxes[kept].tolist())]

    def detect(self, image: np.ndarray, thresholds: Mapping[str, float] | None = None) -> list[Detection]:
        """Detect objects in a scan's uint8 grey view or uint16 transmission plane (see
        :meth:`preprocess`). ``thresholds`` overrides the manifest's per-class thresholds (for
        evaluation)."""
        tensor, lb = self.preprocess(image)
        out = self._run(tensor)
        self._check_output(out)
        return self.postprocess(out, lb, thresholds)

    def is_threat(self, d: Detection) -> bool:
        return d.label in self.manifest.threat_classes
