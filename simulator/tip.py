"""Threat Image Projection (TIP): project X-ray crops of objects into clean scans, as physics does.

A crop is a greyscale X-ray image (8 or 16 bit PNG, JPEG or TIFF, RGB allowed, or an .xde) of one
object over a light background, in a folder named after its class. Its background level is
estimated from its brightest pixels; crop / background is the object's transmission (air -> 1),
a soft mask fades the background's noise to exactly 1, and ``-ln`` of it is the object's
attenuation. Rotating, scaling and flipping act on that attenuation (outside is 0: no object);
projecting multiplies transmissions, ``T_out = T_scan * exp(-att)``, so a projection can only
darken a scan. For a dual-energy scan the high plane takes the attenuation as it is and the low
plane ``k * att``, k being a material's low/high attenuation ratio (steel by default).

8-bit and 16-bit crops are read in the station's model view (``station.kernel.imaging``), where grey is
``255 * T**0.75``; undoing that mapping gives transmission, so a crop projected into a scan looks in
the model view as it did in the crop.

    python -m simulator.tip --crops DIR --out DIR --count N --seed S [--single-energy]

writes N parcels with one projected object each (16-bit PNG of the high plane, or .xde) and YOLO
labels: ``images/``, ``labels/``, ``data.yaml`` with the class names (the crop folders).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from simulator.materials import MATERIALS
from simulator.xray import Box, synth_parcel
from station.kernel.imaging import ImageError, gray_from_high, load_image

CROP_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".xde"}
STEEL_RATIO = MATERIALS["steel"].mu_low / MATERIALS["steel"].mu_high
OBJECT_T = 0.8  # transmission below which a crop pixel is object, not background
BOX_ATT = 0.02  # attenuation above which a projected pixel counts into the box (about 2 % darker)
AIR = 65535


def _view_to_transmission() -> np.ndarray:
    """Transmission per model-view grey level: the inverse of ``gray_from_high``, tabulated from
    it so that it follows the station's mapping (mean transmission of each level's 16-bit values)."""
    levels = gray_from_high(np.arange(AIR + 1, dtype=np.uint16)).astype(np.int64)
    t = np.arange(AIR + 1, dtype=np.float64) / AIR
    count = np.bincount(levels, minlength=256)
    mean = np.bincount(levels, weights=t, minlength=256) / np.maximum(count, 1)
    seen = count > 0
    return np.interp(np.arange(256), np.flatnonzero(seen), mean[seen]).astype(np.float32)


VIEW_TO_T = _view_to_transmission()


@dataclass(frozen=True)
class Crop:
    """One object cut out of an X-ray: its attenuation map at the high energy (0 = nothing)."""

    label: str
    att: np.ndarray  # float32 HxW, -ln T, object pixels only (background masked to 0)
    source: str


@dataclass(frozen=True)
class Projected:
    """A scan with one object projected into it: the new planes and the object's box."""

    high: np.ndarray
    low: np.ndarray | None
    box: Box


def background_level(t: np.ndarray) -> float:
    """The crop's background (air) level: the median of its brightest tenth. Crops are mostly a
    light background around one object, so that is the background, not the object."""
    return float(np.median(t[t >= np.percentile(t, 90)]))


def object_attenuation(t: np.ndarray) -> np.ndarray:
    """Attenuation of the object in a transmission-like crop: crop / background clipped to <= 1,
    background faded to exactly 0 by a soft mask (object pixels, grown by 2 px, blurred)."""
    rel = np.clip(t / max(background_level(t), 1e-6), 1e-4, 1.0).astype(np.float32)
    mask = (rel < OBJECT_T).astype(np.uint8)
    mask = cv2.dilate(mask, np.ones((5, 5), np.uint8)).astype(np.float32)
    mask = np.minimum(cv2.GaussianBlur(mask, (0, 0), 1.5) * 1.5, 1.0)
    return (-np.log(rel) * mask).astype(np.float32)


def load_crop(path: Path, label: str | None = None) -> Crop:
    """Read a crop as an attenuation map. Raises ImageError for an unusable file."""
    image = load_image(path)
    if image.high is not None:
        t = image.high.astype(np.float32) / AIR
    else:
        t = VIEW_TO_T[image.gray]
    att = object_attenuation(t)
    if not (att > BOX_ATT).any():
        raise ImageError(f"{path}: no object found (nothing darker than {OBJECT_T:.0%} of the background)")
    return Crop(label or path.parent.name, att, str(path))


def crop_files(root: Path) -> list[Path]:
    """Crop files under ``root``, sorted; each one's class is its folder's name."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in CROP_SUFFIXES and p.is_file())


def transform(att: np.ndarray, angle_deg: float, scale: float, flip: bool) -> np.ndarray:
    """Rotate (about the centre, canvas grown to fit), scale and optionally mirror an
    attenuation map; the space around the object stays 0."""
    if flip:
        att = att[:, ::-1]
    h, w = att.shape
    a = np.deg2rad(angle_deg)
    c, s = abs(np.cos(a)) * scale, abs(np.sin(a)) * scale
    nw, nh = max(1, int(np.ceil(w * c + h * s))), max(1, int(np.ceil(w * s + h * c)))
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, scale)
    m[:, 2] += (nw / 2 - w / 2, nh / 2 - h / 2)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.warpAffine(np.ascontiguousarray(att), m, (nw, nh), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)


def _trim(att: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(att > BOX_ATT)
    return att[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def parcel_area(high: np.ndarray) -> tuple[int, int, int, int]:
    """The region of a scan that is not air (the parcel), or the whole scan if all of it is air."""
    ys, xs = np.nonzero(cv2.GaussianBlur(high, (0, 0), 2.0) < 0.97 * AIR)
    if not len(xs):
        return 0, 0, high.shape[1], high.shape[0]
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def project(high: np.ndarray, low: np.ndarray | None, crop: Crop, rng: np.random.Generator, *,
            size: tuple[float, float] = (0.25, 0.5), k_low: float = STEEL_RATIO,
            area: tuple[int, int, int, int] | None = None) -> Projected:
    """Project ``crop`` into a uint16 scan (65535 = air): a random rotation, a mirror half the
    time, scaled so its longer side is ``size`` (a range, as a share of the area's shorter side),
    placed inside ``area`` (default: the parcel). Every output pixel is <= the input's."""
    x0, y0, x1, y1 = area or parcel_area(high)
    obj = _trim(crop.att)
    want = rng.uniform(*size) * min(x1 - x0, y1 - y0)
    att = _trim(transform(obj, rng.uniform(0, 360), 1.0, bool(rng.random() < 0.5)))
    att = _trim(transform(att, 0.0, want / max(att.shape), False))
    att = att[: y1 - y0, : x1 - x0]  # never larger than the area
    h, w = att.shape
    ox = int(rng.integers(x0, max(x0, x1 - w) + 1))
    oy = int(rng.integers(y0, max(y0, y1 - h) + 1))
    region = np.s_[oy : oy + h, ox : ox + w]
    out_high = high.copy()
    out_high[region] = np.minimum(high[region], high[region] * np.exp(-att))
    out_low = None
    if low is not None:
        out_low = low.copy()
        out_low[region] = np.minimum(low[region], low[region] * np.exp(-k_low * att))
    ys, xs = np.nonzero(att > BOX_ATT)
    box = Box(crop.label, ox + int(xs.min()), oy + int(ys.min()), ox + int(xs.max()) + 1, oy + int(ys.max()) + 1)
    return Projected(out_high, out_low, box)


def write_set(files: list[Path], out: Path, count: int, seed: int, single_energy: bool = False,
              benign_share: float = 0.0) -> tuple[list[str], list[str]]:
    """Write ``count`` synthetic parcels, each with one crop drawn at random projected into it
    (the first ``benign_share`` of them left clean), as YOLO data: images/, labels/, data.yaml.
    Crops are read when drawn, so a folder of thousands need not fit in memory; one that cannot
    be used is reported and left out of later draws (ImageError when none is left). Returns the
    class names (the crop folders, sorted) and the unusable crops. Same seed, same files."""
    from drivers.xde import encode_xde
    from models.evaluate import write_data_yaml

    names = sorted({p.parent.name for p in files})
    pool, errors = list(files), []
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_benign = int(count * benign_share)
    for i in range(count):
        scan = synth_parcel(rng)
        high, low, label = scan.high, None if single_energy else scan.low, ""
        if i >= n_benign:
            crop = None
            while crop is None:
                if not pool:
                    raise ImageError("no usable crop left: " + "; ".join(errors[-3:]))
                k = int(rng.integers(len(pool)))
                try:
                    crop = load_crop(pool[k])
                except ImageError as err:
                    errors.append(str(err))
                    del pool[k]
            done = project(high, low, crop, rng)
            high, low, b = done.high, done.low, done.box
            cx, cy = (b.x1 + b.x2) / 2 / high.shape[1], (b.y1 + b.y2) / 2 / high.shape[0]
            bw, bh = (b.x2 - b.x1) / high.shape[1], (b.y2 - b.y1) / high.shape[0]
            label = f"{names.index(b.label)} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}\n"
        stem = f"tip-{i:05d}"
        if low is None:
            cv2.imwrite(str(out / "images" / f"{stem}.png"), high)
        else:
            (out / "images" / f"{stem}.xde").write_bytes(encode_xde(high, low))
        (out / "labels" / f"{stem}.txt").write_text(label, encoding="utf-8")
    write_data_yaml(out, names)
    return names, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.tip", description=__doc__.split("\n")[0])
    parser.add_argument("--crops", type=Path, required=True, help="folder of crops, one sub-folder per class")
    parser.add_argument("--out", type=Path, required=True, help="output folder (images/, labels/, data.yaml)")
    parser.add_argument("--count", type=int, default=100, help="parcels to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--single-energy", action="store_true", help="write 16-bit PNGs of the high plane instead of .xde")
    parser.add_argument("--benign-share", type=float, default=0.0,
                        help="share of the parcels left clean (empty label file), for false-alarm figures")
    args = parser.parse_args(argv)
    if not args.crops.is_dir():
        print(f"{args.crops}: not a folder", file=sys.stderr)
        return 2
    files = crop_files(args.crops)
    if not files:
        print(f"{args.crops}: no crop images ({', '.join(sorted(CROP_SUFFIXES))})", file=sys.stderr)
        return 2
    try:
        names, errors = write_set(files, args.out, args.count, args.seed, args.single_energy, args.benign_share)
    except ImageError as err:
        print(f"{args.crops}: {err}", file=sys.stderr)
        return 2
    for line in errors:
        print(f"skipped crop: {line}", file=sys.stderr)
    print(f"{args.count} parcels from {len(files)} crops ({', '.join(names)}) written to {args.out}; {len(errors)} crops unusable")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
