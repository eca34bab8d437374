"""Train the default detector on synthetic parcels and export it as ONNX with a manifest.

    python -m models.train --seed 0 --out models/default        # train, export, calibrate, measure
    python -m models.train --eval models/default --seed 123     # print metrics JSON on a fresh set

Data: every batch is freshly rendered by simulator/xray.py from one seeded generator (threats
are drawn into clean scans by adding attenuation, i.e. multiplying transmissions: threat image
projection by construction), so a run is reproducible from its seed and never sees an image
twice. The mix: whole parcels (objects 5-30 % of the frame, sometimes zoomed) and close-ups
where one threat or one benign metal confuser fills 25-95 % of it; dual-energy scans seen
through the station's ``gray_from_high`` and single-energy greyscale alike; exposure, JPEG,
blur, image-intensifier and frame-edge artefacts. Rendering runs in one worker process, torch
in this one (one thread by default: the box is shared). Needs the ``train`` extra.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import multiprocessing as mp
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

from models.tiny_yolo import STRIDES, Exportable, TinyYolo, ltrb_to_xyxy, make_anchors
from simulator.xray import THREAT_CLASSES, render_closeup, render_parcel, single_energy
from station.kernel.detector import letterbox
from station.kernel.imaging import gray_from_high

log = logging.getLogger("models.train")

INPUT_HW = (256, 384)
PAD = 255  # letterbox with air, as an X-ray image's border is


ANCHORS, STRIDES_T = make_anchors(*INPUT_HW)
# gun, knife, blade, shuriken, battery: the small, faint and thin classes are drawn more often
CLASS_MIX = (0.22, 0.24, 0.28, 0.08, 0.18)
CLOSEUP_MIX = (0.30, 0.175, 0.175, 0.175, 0.175)  # threat close-ups: guns, the real crops' hardest class, more often
CLOSEUP_SHARE, CLOSEUP_BENIGN = 0.4, 0.45  # of images; of close-ups, those of a benign confuser
_ANCHOR_PIX = ANCHORS.numpy().astype(np.int64)


def letterbox_np(gray: np.ndarray, where: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The detector's own letterbox (station.kernel.detector.letterbox); the threat map and boxes
    follow the image. Returns the image, boxes and the threat id under each anchor (a 2 px
    dilation keeps thin blades from falling between anchors)."""
    out, lb = letterbox(gray, INPUT_HW, PAD)
    b = boxes.copy()
    if len(b):
        b[:, [0, 2]] = b[:, [0, 2]] * lb.scale + lb.dx
        b[:, [1, 3]] = b[:, [1, 3]] * lb.scale + lb.dy
    ids = np.zeros(INPUT_HW, np.uint8)
    nh, nw = lb.inner_hw
    ids[lb.dy : lb.dy + nh, lb.dx : lb.dx + nw] = cv2.resize(where, (nw, nh), interpolation=cv2.INTER_NEAREST)
    ids = cv2.dilate(ids, np.ones((5, 5), np.uint8))
    return out, b, ids[_ANCHOR_PIX[:, 1], _ANCHOR_PIX[:, 0]]


def _crop(rng: np.random.Generator, gray: np.ndarray, where: np.ndarray, boxes: np.ndarray, lo: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random crop of ``lo``..90 % of the width, usually around a threat; a box keeps only if
    at least 45 % of it stays in view (clipped to the crop)."""
    h, w = gray.shape
    cw = int(w * rng.uniform(lo, 0.9))
    ch = int(np.clip(cw * rng.uniform(0.5, 1.4), 32, h))
    if len(boxes) and rng.random() < 0.8:
        b = boxes[rng.integers(len(boxes))]
        cx, cy = (b[0] + b[2]) / 2 + rng.uniform(-0.3, 0.3) * cw, (b[1] + b[3]) / 2 + rng.uniform(-0.3, 0.3) * ch
    else:
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    x0, y0 = int(np.clip(cx - cw / 2, 0, w - cw)), int(np.clip(cy - ch / 2, 0, h - ch))
    gray, where = gray[y0 : y0 + ch, x0 : x0 + cw], where[y0 : y0 + ch, x0 : x0 + cw]
    if len(boxes):
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]] - x0, 0, cw)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]] - y0, 0, ch)
        seen = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        boxes = boxes[seen >= 0.45 * area]
    return gray, where, boxes


def _artefacts(rng: np.random.Generator, g: np.ndarray) -> np.ndarray:
    """Imaging-chain artefacts on a 0..1 image: an image intensifier's round field of view, dark
    frame edges (collimator, crop of a larger scan), line-scan detector banding."""
    h, w = g.shape
    u = rng.random()
    if u < 0.06:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r = rng.uniform(0.45, 0.75) * np.hypot(h, w)
        inside = (xx - w * rng.uniform(0.4, 0.6)) ** 2 + (yy - h * rng.uniform(0.4, 0.6)) ** 2 < r * r
        g = np.where(inside, g, rng.uniform(0.0, 0.15)).astype(np.float32)
    elif u < 0.12:
        dark = rng.uniform(0.0, 0.15)
        top, bottom = (int(rng.uniform(0.0, 0.08) * h) for _ in range(2))
        left, right = (int(rng.uniform(0.0, 0.08) * w) for _ in range(2))
        g = g.copy()
        g[:top], g[h - bottom :], g[:, :left], g[:, w - right :] = dark, dark, dark, dark
    if rng.random() < 0.1:
        axis = int(rng.integers(2))
        bands = 1.0 + rng.normal(0, rng.uniform(0.005, 0.03), g.shape[axis]).astype(np.float32)
        g = g * (bands[:, None] if axis == 0 else bands[None, :])
    return g


def sample(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One augmented training image (uint8, INPUT_HW), its boxes [x1, y1, x2, y2, class, id]
    and the threat id (0 = none) under each anchor."""
    if rng.random() < CLOSEUP_SHARE:
        closeup = True
        threat = None if rng.random() < CLOSEUP_BENIGN else THREAT_CLASSES[int(rng.choice(len(THREAT_CLASSES), p=CLOSEUP_MIX))]
        scan, where = render_closeup(rng, threat)
    else:
        closeup = False
        u = rng.random()
        n = 0 if u < 0.3 else 1 if u < 0.75 else 2 if u < 0.93 else 3
        threats = [THREAT_CLASSES[int(i)] for i in rng.choice(len(THREAT_CLASSES), n, p=CLASS_MIX)]
        scan, where = render_parcel(rng, threats)
    gray = single_energy(scan, rng.uniform(0.3, 0.8)) if rng.random() < 0.5 else gray_from_high(scan.high)
    boxes = np.array([[b.x1, b.y1, b.x2, b.y2, THREAT_CLASSES.index(b.label), k + 1] for k, b in enumerate(scan.boxes)], np.float32).reshape(-1, 6)
    if rng.random() < (0.15 if closeup else 0.4):  # zoom in / cut the object at the frame's edge
        gray, where, boxes = _crop(rng, gray, where, boxes, 0.6 if closeup else 0.3)
    g = gray.astype(np.float32) / 255.0
    g = np.power(g, rng.uniform(0.6, 1.7)) * rng.uniform(0.82, 1.0) + rng.uniform(-0.03, 0.03)
    g = _artefacts(rng, g)
    if rng.random() < 0.3:
        g = cv2.GaussianBlur(g, (0, 0), rng.uniform(0.5, 1.5))
    gray = np.clip(g * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:  # real scans arrive as JPEG too
        gray = cv2.imdecode(cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 95))])[1], cv2.IMREAD_GRAYSCALE)
    if rng.random() < 0.5:
        gray, where = gray[:, ::-1], where[:, ::-1]
        boxes[:, [0, 2]] = gray.shape[1] - boxes[:, [2, 0]]
    if rng.random() < 0.5:
        gray, where = gray[::-1, :], where[::-1, :]
        boxes[:, [1, 3]] = gray.shape[0] - boxes[:, [3, 1]]
    return letterbox_np(np.ascontiguousarray(gray), np.ascontiguousarray(where), boxes)


def _render_batches(seed: int, batch: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Worker process: batches from one generator seeded ``seed``, in order, forever."""
    cv2.setNumThreads(1)
    rng = np.random.default_rng(seed)
    while True:
        out.put([sample(rng) for _ in range(batch)])


def batches(seed: int, batch: int, steps: int) -> Iterator[list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """``steps`` batches rendered ahead by one worker process: the same sequence as rendering
    them here from ``default_rng(seed)``, so a run is reproducible from its seed. The worker is
    spawned, not forked: a fork of a process whose threads (torch's, onnxruntime's, a test
    broker's) hold a lock can leave the child hung on it."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue(maxsize=4)
    worker = ctx.Process(target=_render_batches, args=(seed, batch, queue), daemon=True)
    worker.start()
    try:
        for _ in range(steps):
            yield queue.get(timeout=600)
    finally:
        worker.terminate()
        worker.join()


def giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt, rb = torch.max(a[:, :2], b[:, :2]), torch.min(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(1)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(1), (b[:, 2:] - b[:, :2]).prod(1)
    union = area_a + area_b - inter + 1e-6
    hull = (torch.max(a[:, 2:], b[:, 2:]) - torch.min(a[:, :2], b[:, :2])).prod(1) + 1e-6
    return inter / union - (hull - union) / hull


def assign(gt: np.ndarray, on_object: np.ndarray, anchors: torch.Tensor, strides: torch.Tensor, per_level: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Object-guided centre sampling: anchors inside a box *and on the object* (from the
    simulator's threat map), on the stride that suits its size, the ``per_level`` nearest the
    box centre; a thin diagonal knife gets anchors on its blade, not on the background of its
    box. A box with none falls back to plain centre sampling, then to its nearest anchor. An
    anchor claimed twice goes to the smaller box. Returns (gt index per anchor or -1, boxes)."""
    n = anchors.shape[0]
    idx = torch.full((n,), -1, dtype=torch.long)
    g = torch.from_numpy(gt[:, :4]).float()
    if not len(gt):
        return idx, g
    ax, ay = anchors[:, 0:1], anchors[:, 1:2]
    cx, cy = (g[:, 0] + g[:, 2]) / 2, (g[:, 1] + g[:, 3]) / 2
    side = torch.max(g[:, 2] - g[:, 0], g[:, 3] - g[:, 1])
    s = strides[:, None]
    inside = (ax > g[:, 0]) & (ax < g[:, 2]) & (ay > g[:, 1]) & (ay < g[:, 3])
    level = ((s == 8) & (side < 96)) | ((s == 16) & (side > 32) & (side < 256)) | ((s == 32) & (side > 128))
    mine = torch.from_numpy(on_object.astype(np.int64))[:, None] == torch.from_numpy(gt[:, 5].astype(np.int64))[None, :]
    near = ((ax - cx).abs() < 2.5 * s) & ((ay - cy).abs() < 2.5 * s)
    dist = (ax - cx) ** 2 + (ay - cy) ** 2
    cand = torch.zeros_like(inside)
    for j in range(len(gt)):
        for sv in STRIDES:
            on = inside[:, j] & level[:, j] & mine[:, j] & (strides == sv)
            if not on.any():
                continue
            d = torch.where(on, dist[:, j], torch.full_like(dist[:, j], float("inf")))
            k = min(per_level, int(on.sum()))
            cand[d.topk(k, largest=False).indices, j] = True
        if not cand[:, j].any():
            cand[:, j] = inside[:, j] & near[:, j] & level[:, j]
        if not cand[:, j].any():  # a tiny box with no anchor inside: nearest stride-8 anchor
            d = dist[:, j] + (strides != 8).float() * 1e9
            cand[int(d.argmin()), j] = True
    area = ((g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]))[None, :].expand(n, -1)
    area = torch.where(cand, area, torch.full_like(area, float("inf")))
    best = area.argmin(1)
    has = cand.any(1)
    idx[has] = best[has]
    return idx, g


def load_onnx_weights(model: TinyYolo, path: Path) -> None:
    """Load an exported TinyYolo's weights back into ``model``. The export folded each batch
    norm into its convolution, so each norm becomes the identity plus the folded bias
    (mean 0, variance 1, scale sqrt(1 + eps)): exact in eval mode, and it must stay in eval
    mode when fine-tuning (:func:`train` freezes it). Convolutions pair up in graph order,
    which is the modules' order; a shape that differs names the layer."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    nodes = [n for n in graph.node if n.op_type == "Conv"]
    modules = dict(model.named_modules())
    convs = [(name, m) for name, m in modules.items() if isinstance(m, torch.nn.Conv2d)]
    if len(nodes) != len(convs):
        raise ValueError(f"{path}: {len(nodes)} convolutions, the network has {len(convs)} (another width or architecture?)")
    with torch.no_grad():
        for node, (name, conv) in zip(nodes, convs):
            w, b = (torch.from_numpy(weights[x].copy()) for x in node.input[1:3])
            if w.shape != conv.weight.shape:
                raise ValueError(f"{path}: {node.name} has weights {tuple(w.shape)}, {name} needs {tuple(conv.weight.shape)}")
            conv.weight.copy_(w)
            if conv.bias is not None:
                conv.bias.copy_(b)
                continue
            parent, index = name.rsplit(".", 1)
            norm = modules[f"{parent}.{int(index) + 1}"]
            assert isinstance(norm, torch.nn.BatchNorm2d)
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0)
            norm.weight.fill_(math.sqrt(1.0 + norm.eps))
            norm.bias.copy_(b)


def train(
    seed: int,
    steps: int,
    batch: int,
    width: int = 32,
    log_every: int = 25,
    init: Path | None = None,
    checkpoint: Path | None = None,
    checkpoint_every: int = 500,
    lr: float = 3e-3,
) -> TinyYolo:
    """Train ``steps`` batches and save the weights to ``checkpoint`` (if given) every
    ``checkpoint_every`` steps and at the end. ``init`` starts from a checkpoint or from an
    exported ``.onnx`` model, whose folded batch norms then stay frozen (and stay frozen when
    its checkpoint is resumed: the checkpoint says so)."""
    torch.manual_seed(seed)
    model = TinyYolo(len(THREAT_CLASSES), width)
    frozen_norms = False
    if init is not None and init.suffix == ".onnx":
        load_onnx_weights(model, init)
        frozen_norms = True
    elif init is not None:
        saved = torch.load(init, map_location="cpu")
        frozen_norms = bool(saved.pop("frozen_norms", False))  # absent in a bare state_dict
        model.load_state_dict(saved.get("state_dict", saved))
    anchors, strides = ANCHORS, STRIDES_T
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    warm = max(1, min(150, steps // 10))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warm) * (0.03 + 0.97 * 0.5 * (1 + math.cos(math.pi * i / steps))))
    model.train()
    if frozen_norms:
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    t0 = time.monotonic()
    for step, rendered in enumerate(batches(seed, batch, steps)):
        imgs, gts, objs = zip(*rendered)
        x = torch.from_numpy(np.stack(imgs)).float().div_(255.0)[:, None].expand(-1, 3, -1, -1).contiguous()
        out = model(x)
        cls_target = torch.zeros(batch, anchors.shape[0], len(THREAT_CLASSES))
        cls_weight = torch.ones(batch, anchors.shape[0], 1)
        box_losses = []
        npos = 0
        for i, (gt, obj) in enumerate(zip(gts, objs)):
            idx, g = assign(gt, obj, anchors, strides)
            pos = idx >= 0
            if pos.any():
                cls_target[i, pos, torch.from_numpy(gt[:, 4]).long()[idx[pos]]] = 1.0
                # a blade covers a handful of anchors, a gun dozens: weight so each object counts
                per_obj = torch.bincount(idx[pos], minlength=len(gt)).float()
                w = (16.0 / per_obj[idx[pos]]).clamp(1.0, 4.0)
                cls_weight[i, pos, 0] = w
                pred = ltrb_to_xyxy(out[i, pos, :4], anchors[pos])
                box_losses.append((1.0 - giou(pred, g[idx[pos]])) * w / w.mean())
                npos += int(pos.sum())
        cls_loss = (F.binary_cross_entropy_with_logits(out[..., 4:], cls_target, reduction="none") * cls_weight).sum() / max(npos, 1)
        box_loss = torch.cat(box_losses).mean() if box_losses else out.sum() * 0.0
        loss = cls_loss + 2.5 * box_loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        if step % log_every == 0 or step == steps - 1:
            log.info("step %d/%d loss %.3f cls %.3f box %.3f lr %.5f %.0fs", step, steps, loss.item(), cls_loss.item(), box_loss.item(), sched.get_last_lr()[0], time.monotonic() - t0)
        if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step == steps - 1):
            torch.save({"state_dict": model.state_dict(), "frozen_norms": frozen_norms}, checkpoint)
    return model.eval()


def export(model: TinyYolo, path: Path) -> str:
    """Export to ONNX (opset 17, static 1x3xHxW) and return the file's SHA-256."""
    wrapped = Exportable(model, *INPUT_HW).eval()
    dummy = torch.zeros(1, 3, *INPUT_HW)
    torch.onnx.export(wrapped, (dummy,), str(path), opset_version=17, input_names=["images"], output_names=["output0"], dynamo=False)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fine_tuned_from(init: Path | None, lr: float) -> str:
    """The training-data sentence's provenance of a fine-tuned model: the model it started from,
    by hash and by its own manifest's account of its training, so that the chain can be rerun."""
    if init is None:
        return ""
    if init.suffix != ".onnx":
        return f", fine-tuned (peak lr {lr:g}) from checkpoint {init.name}"
    sha = hashlib.sha256(init.read_bytes()).hexdigest()
    manifest = init.with_name("manifest.json")
    before = json.loads(manifest.read_text(encoding="utf-8")).get("training_data", "?") if manifest.exists() else "no manifest"
    return f", fine-tuned (peak lr {lr:g}, batch norms frozen) from the model with sha256 {sha} [{before}]"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("models/default"))
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--width", type=int, default=32, help="channels of the network's first stage (models/tiny_yolo.py); cost grows with its square")
    ap.add_argument("--eval", type=Path, default=None, help="measure an existing model dir and print metrics JSON")
    ap.add_argument("--eval-images", type=int, default=600)
    ap.add_argument("--folders", type=Path, default=None, help="with --eval: also report the share flagged per sub-folder (e.g. GDXray crops)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--init", type=Path, default=None, help="fine-tune from a --checkpoint file, or from an exported model.onnx")
    ap.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (cosine schedule)")
    ap.add_argument("--checkpoint", type=Path, default=None, help="save the weights here every 500 steps and at the end")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    if args.eval is not None:
        from models import evaluate

        report = evaluate.measure_dir(args.eval, args.seed, args.eval_images)
        if args.folders is not None:
            report["folders"] = evaluate.measure_folders(args.eval, args.folders)
        print(json.dumps(report, indent=2))
        return
    args.out.mkdir(parents=True, exist_ok=True)
    model = train(args.seed, args.steps, args.batch, args.width, init=args.init, checkpoint=args.checkpoint, lr=args.lr)
    onnx_path = args.out / "model.onnx"
    sha = export(model, onnx_path)
    # imported after training: a long run need not wait for it
    from models import evaluate

    n_images = args.steps * args.batch
    evaluate.finish_manifest(
        args.out,
        sha,
        training_data=(
            f"synthetic scans from simulator/xray.py only, seed {args.seed}, {n_images} images ({args.steps} steps x {args.batch}), network width {args.width}"
            + _fine_tuned_from(args.init, args.lr)
            + ": "
            f"{1 - CLOSEUP_SHARE:.0%} parcels (0-3 threats among clutter and confusers), {CLOSEUP_SHARE:.0%} close-ups of one object "
            f"({1 - CLOSEUP_BENIGN:.0%} threats, {CLOSEUP_BENIGN:.0%} benign metal confusers); half dual-energy (gray_from_high), "
            "half single-energy greyscale; exposure, blur, JPEG, crop and imaging-artefact augmentation"
        ),
        input_hw=INPUT_HW,
        pad=PAD,
        seed=args.seed,
        eval_images=args.eval_images,
    )


if __name__ == "__main__":
    main()
