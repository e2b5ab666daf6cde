"""Training of the builtin detectors on the builtin shapes dataset (CPU, reproducible).

Task-aligned assignment (as in TOOD / YOLOv8: score^0.5 * IoU^6, top-10 anchors inside each box),
BCE on IoU-aware class targets + GIoU box loss, AdamW with warmup and cosine decay, weight EMA.
Most iterations train on random 192-px crops (the net is fully convolutional; a crop costs 56% of a
full image) and the last ones on full 256-px images. The budget is in iterations, not seconds, so the
same command gives the same weights on any machine (up to float non-associativity across thread counts).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from edgetune._logging import get_logger
from edgetune.data import Dataset
from edgetune.models.tasks import ModelEMA, sample_detection_batch

log = get_logger(__name__)

__all__ = ["TrainConfig", "detection_loss", "train_detector", "load_train_arrays", "optimizer_step"]


@dataclass(frozen=True)
class TrainConfig:
    iters: int = 4500
    batch: int = 32
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup: int = 300
    crop: int = 192
    full_size_iters: int = 450
    ema_decay: float = 0.999
    seed: int = 0
    threads: int = 2
    eval_every: int = 500


def box_iou(a: torch.Tensor, b: torch.Tensor, giou: bool = False) -> torch.Tensor:
    """IoU (or GIoU) of broadcastable xyxy boxes (..., 4)."""
    ix0, iy0 = torch.maximum(a[..., 0], b[..., 0]), torch.maximum(a[..., 1], b[..., 1])
    ix1, iy1 = torch.minimum(a[..., 2], b[..., 2]), torch.minimum(a[..., 3], b[..., 3])
    inter = (ix1 - ix0).clamp(min=0) * (iy1 - iy0).clamp(min=0)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter + 1e-9
    iou = inter / union
    if not giou:
        return iou
    cx0, cy0 = torch.minimum(a[..., 0], b[..., 0]), torch.minimum(a[..., 1], b[..., 1])
    cx1, cy1 = torch.maximum(a[..., 2], b[..., 2]), torch.maximum(a[..., 3], b[..., 3])
    hull = (cx1 - cx0) * (cy1 - cy0) + 1e-9
    return iou - (hull - union) / hull


@torch.no_grad()
def assign(scores: torch.Tensor, boxes: torch.Tensor, anchors: torch.Tensor, gt_boxes: torch.Tensor,
           gt_labels: torch.Tensor, gt_mask: torch.Tensor, topk: int = 10, alpha: float = 0.5,
           beta: float = 6.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Task-aligned assignment. Returns target boxes (B, A, 4), target scores (B, A, C), fg mask (B, A)."""
    b, a, c = scores.shape
    m = gt_boxes.shape[1]
    if m == 0:
        return torch.zeros_like(boxes), torch.zeros_like(scores), torch.zeros(b, a, dtype=torch.bool)
    lt = anchors[None, None] - gt_boxes[:, :, None, :2]
    rb = gt_boxes[:, :, None, 2:] - anchors[None, None]
    inside = torch.cat([lt, rb], -1).amin(-1) > 1e-9
    valid = inside & gt_mask[:, :, None]
    ious = box_iou(gt_boxes[:, :, None, :], boxes[:, None, :, :]).clamp(min=0)
    cls_scores = scores.gather(2, gt_labels[:, None, :].expand(b, a, m)).transpose(1, 2)
    align = cls_scores.pow(alpha) * ious.pow(beta) * valid
    top = align.topk(min(topk, a), dim=-1).indices
    mask_pos = torch.zeros_like(align, dtype=torch.bool).scatter_(-1, top, True) & valid
    multi = mask_pos.sum(1) > 1
    if multi.any():
        best = (ious * mask_pos).argmax(1)
        is_best = F.one_hot(best, m).permute(0, 2, 1).bool()
        mask_pos = torch.where(multi[:, None, :], is_best & mask_pos, mask_pos)
    fg = mask_pos.any(1)
    gt_idx = mask_pos.float().argmax(1)
    tgt_boxes = gt_boxes.gather(1, gt_idx[..., None].expand(b, a, 4))
    tgt_labels = gt_labels.gather(1, gt_idx)
    align = align * mask_pos
    pos_align = align.amax(-1, keepdim=True)
    pos_iou = (ious * mask_pos).amax(-1, keepdim=True)
    norm = (align * pos_iou / (pos_align + 1e-9)).amax(1)
    tgt_scores = F.one_hot(tgt_labels, c).float() * (norm * fg)[..., None]
    return tgt_boxes, tgt_scores, fg


def detection_loss(model: nn.Module, images: torch.Tensor, gt_boxes: torch.Tensor, gt_labels: torch.Tensor,
                   gt_mask: torch.Tensor, *, box_weight: float = 5.0) -> torch.Tensor:
    """The detector's training loss on one batch (GT padded to (B, M, ...) with ``gt_mask``)."""
    dist, logits, anchors = model.raw(images)
    boxes = torch.cat([anchors - dist[..., :2], anchors + dist[..., 2:]], -1)
    tb, ts, fg = assign(logits.detach().sigmoid(), boxes.detach(), anchors, gt_boxes, gt_labels, gt_mask)
    ssum = ts.sum().clamp(min=1.0)
    loss_cls = F.binary_cross_entropy_with_logits(logits, ts, reduction="sum") / ssum
    if fg.any():
        w = ts.sum(-1)[fg]
        loss_box = ((1.0 - box_iou(boxes[fg], tb[fg], giou=True)) * w).sum() / ssum
    else:
        loss_box = boxes.sum() * 0.0
    return loss_cls + box_weight * loss_box


def optimizer_step(model: nn.Module, opt, ema, loss: torch.Tensor, running: float | None) -> float:
    """One training step of the builtin trainers: backward, gradients clipped to norm 10, the optimizer's step,
    the EMA update; returns the smoothed loss (0.98 of the previous one)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    opt.step()
    ema.update(model)
    value = float(loss.detach())
    return value if running is None else 0.98 * running + 0.02 * value


def load_train_arrays(ds: Dataset) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """All images of a (square, same-size) dataset as uint8 (N, H, W, 3) plus per-image boxes/classes."""
    images = np.stack([ds.load_image(i) for i in range(len(ds))])
    boxes, classes = zip(*(ds.targets(i) for i in range(len(ds))), strict=True)
    return images, list(boxes), list(classes)


def train_detector(model: nn.Module, train: Dataset, cfg: TrainConfig, *,
                   evaluate: Callable[[nn.Module], dict] | None = None,
                   on_progress: Callable[[int, float], None] | None = None,
                   teacher_loss: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None) -> nn.Module:
    """Train ``model`` for ``cfg.iters`` iterations; returns the EMA model (eval mode)."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    rng = np.random.default_rng(cfg.seed)
    images, boxes, classes = load_train_arrays(train)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim == 4 and "bn" not in name else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.99))

    def lr_at(it: int) -> float:
        if it < cfg.warmup:
            return cfg.lr * (it + 1) / cfg.warmup
        t = (it - cfg.warmup) / max(1, cfg.iters - cfg.warmup)
        return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))

    ema = ModelEMA(model, cfg.ema_decay)
    model.train()
    t0, running = time.time(), None
    for it in range(cfg.iters):
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        crop = None if it >= cfg.iters - cfg.full_size_iters else cfg.crop
        x, gb, gl, gm = sample_detection_batch(rng, images, boxes, classes, cfg.batch, crop)
        loss = detection_loss(model, x, gb, gl, gm)
        if teacher_loss is not None:
            loss = loss + teacher_loss(model, x)
        running = optimizer_step(model, opt, ema, loss, running)
        if on_progress:
            on_progress(it + 1, running)
        if (it + 1) % 50 == 0:
            log.info("iter %d/%d loss %.4f lr %.2e %.1fs", it + 1, cfg.iters, running, lr_at(it), time.time() - t0)
        if evaluate and cfg.eval_every and (it + 1) % cfg.eval_every == 0 and it + 1 < cfg.iters:
            log.info("iter %d eval: %s", it + 1, evaluate(ema.ema))
            model.train()
    return ema.ema.eval()
