"""A small anchor-free detector whose ONNX output has the Ultralytics YOLOv8 layout.

Output of the exported graph: float32 ``[1, 4 + n_classes, N]``: rows 0-3 are cx, cy, w, h in
input pixels, the rest per-class scores in 0..1 (sigmoid), N = anchors over strides 8, 16 and 32.
Training only (needs torch); the station runs the exported ONNX file with onnxruntime.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

STRIDES = (8, 16, 32)


def conv(c_in: int, c_out: int, stride: int = 1, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False), nn.BatchNorm2d(c_out), nn.SiLU(inplace=True))


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = conv(c, c), conv(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.b(self.a(x))


class Sppf(nn.Module):
    """Spatial pyramid pooling (fast): widens the receptive field for gun-sized objects."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.reduce, self.merge = conv(c, c // 2, k=1), conv(c * 2, c, k=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        y1 = F.max_pool2d(x, 5, 1, 2)
        y2 = F.max_pool2d(y1, 5, 1, 2)
        y3 = F.max_pool2d(y2, 5, 1, 2)
        return self.merge(torch.cat([x, y1, y2, y3], 1))


class TinyYolo(nn.Module):
    """Backbone to stride 32, a top-down FPN, and a head per stride (box ltrb + class logits):
    stride 8 for blades and cells, 16 for knives and stars, 32 for a gun that fills the frame.

    ``forward`` returns the raw per-anchor tensor ``[B, N, 4 + nc]`` (ltrb distances in input
    pixels, class logits) for training; ``export_forward`` the YOLOv8 layout for ONNX.
    """

    def __init__(self, n_classes: int, width: int = 32) -> None:
        super().__init__()
        w = width
        self.nc = n_classes
        self.stem = nn.Sequential(conv(3, w // 2, 2), conv(w // 2, w, 2))
        self.s8 = nn.Sequential(conv(w, 2 * w, 2), Residual(2 * w))
        self.s16 = nn.Sequential(conv(2 * w, 3 * w, 2), Residual(3 * w))
        self.s32 = nn.Sequential(conv(3 * w, 4 * w, 2), Residual(4 * w), Sppf(4 * w))
        self.lat32, self.fuse16 = conv(4 * w, 3 * w, k=1), conv(3 * w, 3 * w)
        self.lat16, self.fuse8 = conv(3 * w, 2 * w, k=1), conv(2 * w, 2 * w)
        self.heads = nn.ModuleList(
            nn.Sequential(conv(c, hidden), nn.Conv2d(hidden, 4 + n_classes, 1)) for c, hidden in ((2 * w, w), (3 * w, 2 * w), (4 * w, 2 * w))
        )
        for head in self.heads:
            last = head[-1]
            assert isinstance(last, nn.Conv2d)
            nn.init.zeros_(last.weight)
            nn.init.constant_(last.bias, 0.0)
            with torch.no_grad():
                last.bias[4:] = -4.6  # start at p=0.01 so the few positives are not drowned

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p8 = self.s8(self.stem(x))
        p16 = self.s16(p8)
        p32 = self.s32(p16)
        p16 = self.fuse16(p16 + F.interpolate(self.lat32(p32), scale_factor=2.0, mode="nearest"))
        p8 = self.fuse8(p8 + F.interpolate(self.lat16(p16), scale_factor=2.0, mode="nearest"))
        outs = []
        for feat, head, stride in zip((p8, p16, p32), self.heads, STRIDES):
            o = head(feat).flatten(2).transpose(1, 2)  # B, HW, 4+nc
            ltrb = F.softplus(o[..., :4] + 1.0) * stride
            outs.append(torch.cat([ltrb, o[..., 4:]], -1))
        return torch.cat(outs, 1)

    def export_forward(self, x: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        raw = self.forward(x)
        boxes = ltrb_to_xyxy(raw[..., :4], anchors)
        cxcywh = torch.cat([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], -1)
        return torch.cat([cxcywh, raw[..., 4:].sigmoid()], -1).transpose(1, 2)


def make_anchors(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres (N, 2) in input pixels and their strides (N,), in head output order."""
    pts, strides = [], []
    for s in STRIDES:
        ys, xs = torch.meshgrid(torch.arange(height // s), torch.arange(width // s), indexing="ij")
        pts.append(torch.stack([(xs.flatten() + 0.5) * s, (ys.flatten() + 0.5) * s], 1))
        strides.append(torch.full((pts[-1].shape[0],), float(s)))
    return torch.cat(pts).float(), torch.cat(strides)


def ltrb_to_xyxy(ltrb: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    return torch.cat([anchors - ltrb[..., :2], anchors + ltrb[..., 2:]], -1)


class Exportable(nn.Module):
    """Wraps a trained TinyYolo with its anchors so the ONNX graph emits the YOLOv8 layout."""

    def __init__(self, model: TinyYolo, height: int, width: int) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("anchors", make_anchors(height, width)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.export_forward(x, self.anchors)
