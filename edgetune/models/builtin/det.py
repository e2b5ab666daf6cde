"""The builtin detectors (``det-s``, ``det-m``): YOLO-style, anchor-free, in plain torch.

Residual CSP backbone with depthwise-separable downsampling and bottlenecks, a PAN neck, and decoupled
heads on strides 8 / 16 / 32. ReLU everywhere (int8 kernels fuse Conv+ReLU), channel counts in
multiples of 8, no channel split/chunk (so Torch-Pruning can trace every coupling). The box branch
predicts left/top/right/bottom distances (softplus x stride) from anchor points; the output is the
Ultralytics layout ``(N, 4 + C, A)``: cx, cy, w, h in input pixels, then sigmoid class scores.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["ConvBNAct", "DWSep", "CSPBlock", "Detector", "build_detector", "SIZES"]


class ConvBNAct(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DWSep(nn.Module):
    """Depthwise 3x3 (stride s) + pointwise 1x1."""

    def __init__(self, cin: int, cout: int, s: int = 1):
        super().__init__()
        self.dw = ConvBNAct(cin, cin, 3, s, groups=cin)
        self.pw = ConvBNAct(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class Bottleneck(nn.Module):
    """x + (1x1 -> depthwise-separable 3x3)."""

    def __init__(self, c: int):
        super().__init__()
        self.cv1 = ConvBNAct(c, c, 1)
        self.cv2 = DWSep(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.cv2(self.cv1(x))


class CSPBlock(nn.Module):
    """Cross-stage partial block: two 1x1 branches (no chunk), n bottlenecks on one, concat, 1x1 fuse."""

    def __init__(self, cin: int, cout: int, n: int = 1):
        super().__init__()
        mid = cout // 2
        self.cv1 = ConvBNAct(cin, mid, 1)
        self.cv2 = ConvBNAct(cin, mid, 1)
        self.m = nn.Sequential(*(Bottleneck(mid) for _ in range(n)))
        self.cv3 = ConvBNAct(2 * mid, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat([self.m(self.cv1(x)), self.cv2(x)], 1))


class Head(nn.Module):
    """Decoupled head for one level: a shared 1x1, then box and class branches of depthwise-separable convs."""

    def __init__(self, cin: int, width: int, num_classes: int):
        super().__init__()
        self.stem = ConvBNAct(cin, width, 1)
        self.box = nn.Sequential(DWSep(width, width), DWSep(width, width))
        self.box_out = nn.Conv2d(width, 4, 1)
        self.cls = nn.Sequential(DWSep(width, width), DWSep(width, width))
        self.cls_out = nn.Conv2d(width, num_classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        return self.box_out(self.box(x)), self.cls_out(self.cls(x))


SIZES: dict[str, dict] = {
    # name: widths of stem, stage1..4, neck widths (P3, P4, P5), head width, bottlenecks per stage
    "det-s": {"w": (16, 32, 64, 128, 256), "neck": (64, 96, 128), "head": 64, "n": (1, 2, 2, 1)},
    "det-m": {"w": (24, 48, 96, 160, 256), "neck": (96, 128, 192), "head": 96, "n": (1, 2, 3, 1)},
}


class Detector(nn.Module):
    strides = (8, 16, 32)

    def __init__(self, num_classes: int, size: str = "det-s", input_size: int = 256):
        super().__init__()
        cfg = SIZES[size]
        w, (n3, n4, n5), hw, n = cfg["w"], cfg["neck"], cfg["head"], cfg["n"]
        self.num_classes, self.input_size = num_classes, input_size
        self.stem = ConvBNAct(3, w[0], 3, 2)
        self.stage1 = nn.Sequential(ConvBNAct(w[0], w[1], 3, 2), CSPBlock(w[1], w[1], n[0]))
        self.stage2 = nn.Sequential(ConvBNAct(w[1], w[2], 3, 2), CSPBlock(w[2], w[2], n[1]))
        self.stage3 = nn.Sequential(DWSep(w[2], w[3], 2), CSPBlock(w[3], w[3], n[2]))
        self.stage4 = nn.Sequential(DWSep(w[3], w[4], 2), CSPBlock(w[4], w[4], n[3]))
        self.lat5 = ConvBNAct(w[4], n5, 1)
        self.td4 = CSPBlock(n5 + w[3], n4, 1)
        self.lat4 = ConvBNAct(n4, n3, 1)
        self.td3 = CSPBlock(n3 + w[2], n3, 1)
        self.down3 = ConvBNAct(n3, n3, 3, 2)
        self.bu4 = CSPBlock(n3 + n3, n4, 1)
        self.down4 = DWSep(n4, n4, 2)
        self.bu5 = CSPBlock(n4 + n5, n5, 1)
        self.heads = nn.ModuleList(Head(c, hw, num_classes) for c in (n3, n4, n5))
        self._init_bias()

    def _init_bias(self) -> None:
        for h in self.heads:
            nn.init.constant_(h.cls_out.bias, -4.6)  # prior 0.01
            nn.init.constant_(h.box_out.bias, 1.0)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        p3 = self.stage2(self.stage1(self.stem(x)))
        p4 = self.stage3(p3)
        p5 = self.stage4(p4)
        l5 = self.lat5(p5)
        t4 = self.td4(torch.cat([F.interpolate(l5, scale_factor=2.0, mode="nearest"), p4], 1))
        l4 = self.lat4(t4)
        o3 = self.td3(torch.cat([F.interpolate(l4, scale_factor=2.0, mode="nearest"), p3], 1))
        o4 = self.bu4(torch.cat([self.down3(o3), l4], 1))
        o5 = self.bu5(torch.cat([self.down4(o4), l5], 1))
        return [o3, o4, o5]

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ltrb distances in pixels (N, A, 4), class logits (N, A, C), anchor points (A, 2))."""
        dists, logits, anchors = [], [], []
        for f, head, s in zip(self.features(x), self.heads, self.strides, strict=True):
            box, cls = head(f)
            n, _, h, w = box.shape
            dists.append((F.softplus(box) * s).flatten(2))
            logits.append(cls.flatten(2))
            ys = (torch.arange(h, dtype=x.dtype, device=x.device) + 0.5) * s
            xs = (torch.arange(w, dtype=x.dtype, device=x.device) + 0.5) * s
            gy, gx = torch.meshgrid(ys, xs, indexing="ij")
            anchors.append(torch.stack([gx.flatten(), gy.flatten()], 1))
        return torch.cat(dists, 2).transpose(1, 2), torch.cat(logits, 2).transpose(1, 2), torch.cat(anchors, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dist, logits, anchors = self.raw(x)
        lt, rb = dist[..., :2], dist[..., 2:]
        cxcy = anchors + (rb - lt) / 2
        wh = lt + rb
        return torch.cat([cxcy, wh, logits.sigmoid()], 2).transpose(1, 2)


def build_detector(size: str, *, num_classes: int, input_size: int = 256) -> Detector:
    return Detector(num_classes, size, input_size)
