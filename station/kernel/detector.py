"""ONNX object detection for scan images: the default model or any YOLOv8/YOLO11 export.

A model directory holds ``manifest.json`` and the ONNX file it names. The file's SHA-256 must
match the manifest's ``sha256``, and the manifest's ``pin`` (see :func:`manifest_pin`) must cover
that hash and the manifest's own content, or the model is refused (the lane then runs
MANUAL_ONLY): the thresholds and threat classes decide as much as the network does. The network
takes float32 ``[1, 3, H, W]`` (grey replicated to 3 channels, scaled 0..1, letterboxed) and
returns the Ultralytics layout ``[1, 4 + n_classes, N]``: cx, cy, w, h in input pixels, then
per-class scores.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from station.kernel.imaging import transmission_view

log = logging.getLogger(__name__)

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "default"  # the packaged model (models/default)


class ModelError(Exception):
    """A model cannot be loaded or run; the message names the file and the problem."""


class ModelIntegrityError(ModelError):
    """The model file is not the one its manifest describes (SHA-256 differs), or the manifest and
    the file are not the pair that was pinned (no pin, or the pin differs): altered or damaged since
    they were reviewed, so neither they nor the model store they came from are to be trusted."""


@dataclass(frozen=True)
class Detection:
    """One detected object; ``box`` is x1, y1, x2, y2 in source-image pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]


#: A score threshold: a finite number in [0, 1]. Scores are sigmoids in 0..1, so a threshold over 1
#: never fires and the class it belongs to is silently never detected.
Unit = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class Manifest(BaseModel):
    """What ``manifest.json`` beside a model says about it. Beyond its types, it refuses what
    would make the model silently useless for screening: a threshold outside [0, 1], no threat
    class, a class named twice."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="model name")
    version: str = Field(description="model version")
    classes: list[str] = Field(min_length=1, description="class names, in output row order, each once")
    input_size: tuple[int, int] = Field(description="network input [height, width] in pixels")
    normalisation: str = Field(description="'scale_0_1': grey/255 replicated to 3 channels")
    thresholds: dict[str, Unit] = Field(description="per-class score threshold in [0, 1]; missing -> default_threshold")
    threat_classes: list[str] = Field(min_length=1, description="classes that make a parcel a threat; at least one, "
                                      "since a model that names no threat clears everything")
    sha256: str = Field(description="SHA-256 of the ONNX file, hex")
    pin: str | None = Field(default=None, description="SHA-256 over the ONNX file's hash and this manifest without "
                            "the pin (manifest_pin), written by `station model pin`; checked by Detector.load, "
                            "not here, so that a wrong one is an integrity error")
    training_data: str = Field(description="what the model was trained on")
    metrics: dict[str, Any] = Field(default_factory=dict, description="measured figures")
    onnx_file: str = Field(default="model.onnx", description="ONNX file name in the model directory")
    default_threshold: Unit = Field(default=0.5, description="threshold of a class not in thresholds, in [0, 1]")
    letterbox_pad: int = Field(default=114, ge=0, le=255, description="grey level of letterbox padding")
    nms_iou: float = Field(default=0.45, gt=0.0, le=1.0, description="IoU above which NMS drops a box")
    max_detections: int = Field(default=100, ge=1)

    @field_validator("classes", "threat_classes")
    @classmethod
    def _each_once(cls, names: list[str]) -> list[str]:
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"names {repeated} more than once")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if self.normalisation != "scale_0_1":
            raise ValueError(f"normalisation {self.normalisation!r} unsupported (only 'scale_0_1')")
        if min(self.input_size) <= 0:
            raise ValueError(f"input_size must be positive, got {self.input_size}")
        for field, names in (("thresholds", set(self.thresholds)), ("threat_classes", set(self.threat_classes))):
            if unknown := names - set(self.classes):
                raise ValueError(f"{field} names classes that are not in classes: {sorted(unknown)}")
        return self


def _fields(err: ValidationError) -> str:
    """A ValidationError on one line, each problem led by the field it is in."""
    parts = []
    for e in err.errors():
        where = ".".join(map(str, e["loc"])) or "manifest"
        got = "" if e["type"] == "missing" or not e["loc"] or isinstance(e["input"], dict) else f" (got {e['input']!r})"
        parts.append(f"{where}: {e['msg'].removeprefix('Value error, ')}{got}")
    return "; ".join(parts)


def read_content(path: Path) -> dict[str, Any]:
    """A manifest file's JSON object, as written (the pin covers this, not the validated model)."""
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelError(f"{path}: cannot read manifest: {err}") from err
    if not isinstance(content, dict):
        raise ModelError(f"{path}: bad manifest: not a JSON object")
    return content


def parse_manifest(content: Mapping[str, Any], path: Path) -> Manifest:
    """Validate a manifest's content; a ModelError names the file and each bad field."""
    try:
        return Manifest.model_validate(content)
    except ValidationError as err:
        raise ModelError(f"{path}: bad manifest: {_fields(err)}") from err


def manifest_pin(onnx_sha256: str, content: Mapping[str, Any]) -> str:
    """The pin: SHA-256 (hex) of the UTF-8 bytes of the ONNX file's SHA-256 in lower-case hex, a
    newline, and the manifest's JSON object without its ``pin`` key as
    ``json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=True)``.

    It covers every field, free-form ones included, so that a stored ``model_hash`` names the
    network and the thresholds and classes it decided with. Key order and layout of the file do
    not count; a value's JSON spelling does (``1`` and ``1.0`` differ). ASCII escapes make every
    string, even an unpaired surrogate, encodable."""
    rest = {k: v for k, v in content.items() if k != "pin"}
    canonical = json.dumps(rest, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(f"{onnx_sha256.lower()}\n{canonical}".encode()).hexdigest()


def pin_problem(content: Mapping[str, Any], onnx_sha256: str) -> str | None:
    """Why the manifest's pin does not hold for this content and ONNX hash; None when it does."""
    want = manifest_pin(onnx_sha256, content)
    got = content.get("pin")
    if got is None:
        return "no pin: the manifest is not pinned to its model (review it, then `station model pin DIR`)"
    if not isinstance(got, str) or got.lower() != want:
        return (f"pin mismatch: manifest says pin {got}, its content and model file give {want}: "
                "a field of the manifest or the model changed since it was pinned")
    return None


def write_manifest(model_dir: Path, content: Mapping[str, Any]) -> str:
    """Validate ``content``, pin it to the ONNX file it names and write ``manifest.json``
    (atomically; ``pin`` placed after ``sha256``). Returns the pin. Refuses (ModelError) a
    manifest that fails validation or whose ``sha256`` is not the file's."""
    path = model_dir / "manifest.json"
    manifest = parse_manifest(content, path)
    onnx_path = model_dir / manifest.onnx_file
    try:
        digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    except OSError as err:
        raise ModelError(f"{onnx_path}: cannot read model file: {err}") from err
    if digest != manifest.sha256.lower():
        raise ModelError(f"{path}: sha256 is {manifest.sha256}, but {onnx_path.name} has sha256 {digest}: "
                         "not pinning a mismatch")
    pin = manifest_pin(digest, content)
    out: dict[str, Any] = {}
    for key, value in content.items():
        if key != "pin":
            out[key] = value
        if key == "sha256":
            out["pin"] = pin
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # a reader sees the old manifest or the new one, never half of one
    return pin


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
    src_h, src_w = gray.shape
    lb = fit(src_h, src_w, size)
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
        self._thr = np.array([manifest.thresholds.get(c, manifest.default_threshold) for c in manifest.classes],
                             np.float32)

    @classmethod
    def load(cls, model_dir: str | Path, threads: int = 2) -> Detector:
        """Read and validate the manifest, verify the ONNX file's SHA-256 and then the pin over
        both, build the session and warm it up. ``model_hash`` is the pin."""
        model_dir = Path(model_dir)
        mpath = model_dir / "manifest.json"
        content = read_content(mpath)
        manifest = parse_manifest(content, mpath)
        onnx_path = model_dir / manifest.onnx_file
        try:
            blob = onnx_path.read_bytes()
        except OSError as err:
            raise ModelError(f"{onnx_path}: cannot read model file: {err}") from err
        digest = hashlib.sha256(blob).hexdigest()
        if digest != manifest.sha256.lower():
            raise ModelIntegrityError(f"{onnx_path}: hash mismatch: file sha256 {digest}, "
                                      f"manifest says {manifest.sha256}")
        if problem := pin_problem(content, digest):
            raise ModelIntegrityError(f"{mpath}: {problem}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(blob, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise ModelError(f"{onnx_path}: onnxruntime cannot load it: {err}") from err
        det = cls(manifest, session, manifest_pin(digest, content), onnx_path)
        h, w = manifest.input_size
        det._check_output(det._run(np.zeros((1, 3, h, w), np.float32)))
        log.info("model %s %s loaded from %s (pin %s, sha256 %s, %d threads)",
                 manifest.name, manifest.version, onnx_path, det.model_hash[:12], digest[:12], threads)
        return det

    def _run(self, tensor: np.ndarray) -> np.ndarray:
        try:
            return np.asarray(self.session.run(None, {self._input: tensor})[0])
        except Exception as err:  # onnxruntime's errors have no common base class
            raise ModelError(f"{self.path}: inference failed: {err}") from err

    def _check_output(self, out: np.ndarray) -> None:
        want = 4 + len(self.manifest.classes)
        if out.ndim != 3 or out.shape[0] != 1 or out.shape[1] != want:
            raise ModelError(f"{self.path}: output shape {out.shape}, expected [1, {want}, N] "
                             f"for {len(self.manifest.classes)} classes")

    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
        """A scan's model view -> float32 [1, 3, H, W] input tensor and the letterbox geometry.

        ``image`` is uint8 grey (bright = air), used as it is, or a uint16 transmission plane
        (65535 = air), mapped to the grey view (``station.kernel.imaging.transmission_view``) after
        resizing: on the network's pixels rather than the scan's."""
        if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16) or image.size == 0:
            raise ModelError("detector input must be a non-empty 2-D uint8 or uint16 image, "
                             f"got {image.dtype} {image.shape}")
        src_h, src_w = image.shape
        lb = fit(src_h, src_w, self.manifest.input_size)
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

    def postprocess(self, out: np.ndarray, lb: Letterbox,
                    thresholds: Mapping[str, float] | None = None) -> list[Detection]:
        """Decode ``[1, 4+nc, N]``: best class per anchor, its threshold, class-wise NMS,
        boxes mapped back to source pixels and clipped; highest score first."""
        m = self.manifest
        thr = self._thr if thresholds is None else np.array([thresholds.get(c, m.default_threshold)
                                                              for c in m.classes], np.float32)
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
        return [Detection(m.classes[c], score, tuple(box))
                for c, score, box in zip(cls[kept].tolist(), best[kept].tolist(), boxes[kept].tolist(), strict=True)]

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
