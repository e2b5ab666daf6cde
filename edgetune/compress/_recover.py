"""Recovery: fine-tune a pruned detector with knowledge distillation from the uncompressed model.

Each step: a batch of random crops / flips of the train split (``_sample_batch`` of the builtin trainer),
the detector's own loss on the ground truth (``detection_loss``) plus a dense distillation loss on the
teacher's predictions at every anchor: BCE towards the teacher's class probabilities and GIoU towards
its boxes, weighted by its confidence. Models without ``raw()`` (any Ultralytics-layout detector) are
distilled on their output alone. The budget is in optimizer steps (reproducible); ``budget_s`` caps
the wall-clock time of the steps on top when set. Pruning masks stay attached, so pruned weights stay zero.
"""

from __future__ import annotations

import math
import time

import numpy as np

from edgetune._logging import get_logger
from edgetune.compress._spec import RecoverySpec
from edgetune.errors import CompressionError

log = get_logger(__name__)

__all__ = ["recover", "train_arrays"]


def train_arrays(ds, *, size: int, limit: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Up to ``limit`` letterboxed training images (N, S, S, 3) uint8 with boxes in input pixels."""
    from edgetune.data._preprocess import letterbox

    n = len(ds) if not limit else min(limit, len(ds))
    images = np.empty((n, size, size, 3), np.uint8)
    boxes, classes = [], []
    for i in range(n):
        chw, meta = letterbox(ds.load_image(i), size)
        images[i] = chw.transpose(1, 2, 0)
        b, c = ds.targets(i)
        boxes.append((b * meta.scale + np.array([meta.pad_x, meta.pad_y] * 2, np.float32)).astype(np.float32))
        classes.append(c)
    return images, boxes, classes


class _Raw:
    """Stands in for the model in ``detection_loss`` so the student's forward pass is shared with KD."""

    def __init__(self, out):
        self.out = out

    def raw(self, x):
        return self.out


def _kd_raw(s, t):
    """Dense distillation on (ltrb distances, logits, anchors) of student ``s`` and teacher ``t``."""
    import torch
    from torch.nn import functional as F

    from edgetune.models.builtin.train import box_iou

    s_dist, s_logits, anchors = s
    t_dist, t_logits, _ = t
    t_prob = t_logits.sigmoid()
    w = t_prob.amax(-1)
    norm = w.sum().clamp(min=1.0)
    cls = F.binary_cross_entropy_with_logits(s_logits, t_prob, reduction="none").sum(-1)
    cls = (cls - F.binary_cross_entropy_with_logits(t_logits, t_prob, reduction="none").sum(-1)).sum() / norm

    def xyxy(d):
        return torch.cat([anchors - d[..., :2], anchors + d[..., 2:]], -1)

    box = ((1.0 - box_iou(xyxy(s_dist), xyxy(t_dist), giou=True)) * w).sum() / norm
    return cls + 5.0 * box


def _kd_output(s, t, size: int):
    """Distillation on an Ultralytics-layout output (N, 4 + C, A) alone."""
    from torch.nn import functional as F

    t_scores = t[:, 4:].clamp(1e-6, 1 - 1e-6)
    w = t_scores.amax(1)
    norm = w.sum().clamp(min=1.0)
    cls = F.binary_cross_entropy(s[:, 4:].clamp(1e-6, 1 - 1e-6), t_scores, reduction="sum") / norm
    box = ((s[:, :4] - t[:, :4]).abs().sum(1) / size * w).sum() / norm
    return cls + 5.0 * box


def _feature_hooks(student, teacher, features: dict):
    """Capture the inputs of ``features``' layers in both models; returns (loss_fn, handles)."""
    import torch

    from edgetune.spaces._discover import layer_modules

    s_mods, t_mods = layer_modules(student), layer_modules(teacher)
    got: dict = {}
    handles = []
    for name in features:
        handles.append(s_mods[name].register_forward_pre_hook(lambda m, i, n=name: got.__setitem__(("s", n), i[0])))
        handles.append(t_mods[name].register_forward_pre_hook(lambda m, i, n=name: got.__setitem__(("t", n), i[0])))

    def loss():
        total = 0.0
        for name, idx in features.items():
            s, t = got[("s", name)].float(), got[("t", name)].detach().float()
            if idx is not None:
                t = t[:, torch.as_tensor(idx)]
            total = total + ((s - t) ** 2).mean() / (t.pow(2).mean() + 1e-6)
        return total / max(1, len(features))

    return loss, handles


def _native_bf16() -> bool:
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def _float(out):
    if out is None:
        return None
    return tuple(o.float() for o in out) if isinstance(out, (tuple, list)) else out.float()


def recover(student, teacher, train, spec: RecoverySpec, *, input_size: int, features: dict | None = None,
            on_step=None, start: int = 0, stop: int | None = None) -> dict:
    """Fine-tune ``student`` in place; returns {steps, steps_asked, stopped, seconds, loss}. ``teacher`` is
    not modified. ``stopped`` says why it ended: ``"steps"`` (the schedule ran out) or ``"budget_s"`` (the
    wall-clock cap ended it early, with ``steps < steps_asked``).

    ``start`` / ``stop``: run only steps [start, stop) of the ``spec.steps`` schedule (a progressive cut
    fine-tunes in two calls, before and after the channels are removed).

    ``features``: layer name -> indices of the teacher's channels that the student's input channels of
    that layer correspond to (None: all), for feature distillation (``spec.feature_weight``)."""
    import torch

    from edgetune.models.builtin.train import ModelEMA, _sample_batch, detection_loss

    if train is None or len(train) == 0:
        raise CompressionError("recovery needs the train split, but there is none: set `data.train_size` (builtin) "
                               "or `data.train_annotations` (COCO), or disable recovery with `recovery.steps: 0`.")
    if getattr(train, "task", "detect") != "detect":
        raise CompressionError("recovery fine-tuning is implemented for detectors only; set `recovery.steps: 0` "
                               "for a classification model.")
    has_raw = hasattr(student, "raw") and hasattr(teacher, "raw")
    if not has_raw and not spec.distill:
        raise CompressionError("this model has no raw() head outputs, so recovery can only distill: set "
                               "`recovery.distill: true` or `recovery.steps: 0`.")
    t0 = time.time()
    stop = spec.steps if stop is None else min(stop, spec.steps)
    torch.manual_seed(spec.seed + start)
    rng = np.random.default_rng(spec.seed + start)
    images, boxes, classes = train_arrays(train, size=input_size, limit=spec.train_images)
    crop = max(32, int(round(input_size * spec.crop / 32)) * 32) if input_size >= 128 and spec.crop < 1 else None
    full_from = int(spec.steps * 0.85)
    decay, no_decay = [], []
    for name, p in student.named_parameters():
        (decay if p.ndim >= 2 and "bn" not in name else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=spec.lr, betas=(0.9, 0.99))
    warmup = max(1, min(30, spec.steps // 10))
    teacher.eval()
    student.train()
    ema = ModelEMA(student, spec.ema, tau=max(1.0, spec.steps / 8)) if spec.ema else None
    feat_loss, handles = _feature_hooks(student, teacher, features) if (features and spec.feature_weight and
                                                                        spec.distill) else (None, [])
    use_bf16 = spec.bf16 == "on" or (spec.bf16 == "auto" and _native_bf16())
    running, step, stopped = None, start, "steps"
    t_steps = time.time()  # the cap counts training steps, not the one-off data preparation above
    for step in range(start, stop):
        if spec.budget_s and time.time() - t_steps > spec.budget_s:
            log.info("recovery stopped by budget_s=%.0f after %d steps", spec.budget_s, step)
            stopped = "budget_s"
            break
        t = 1.0 if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, spec.steps - warmup)))
        for g in opt.param_groups:
            g["lr"] = spec.lr * (step + 1) / warmup if step < warmup else spec.lr * (0.05 + 0.95 * t)
            if start:  # a fresh optimizer mid-schedule: re-warm it over 10 steps
                g["lr"] *= min(1.0, (step - start + 1) / 10)
        x, gb, gl, gm = _sample_batch(rng, images, boxes, classes, spec.batch, None if step >= full_from else crop)
        t_out = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            out = student.raw(x) if has_raw else student(x)
            if spec.distill or not has_raw:
                with torch.no_grad():
                    t_out = teacher.raw(x) if has_raw else teacher(x)
        out, t_out = _float(out), _float(t_out)
        if has_raw:
            loss = spec.gt_weight * detection_loss(_Raw(out), x, gb, gl, gm)
            if spec.distill and spec.distill_weight:
                loss = loss + spec.distill_weight * _kd_raw(out, t_out)
        else:
            loss = spec.distill_weight * _kd_output(out, t_out, x.shape[-1])
        if feat_loss is not None:
            loss = loss + spec.feature_weight * feat_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 10.0)
        opt.step()
        if ema is not None:
            ema.update(student)
        value = loss.item()
        running = value if running is None else 0.95 * running + 0.05 * value
        if on_step:
            on_step(step + 1, running)
        if (step + 1) % 50 == 0:
            log.info("recovery step %d/%d loss %.4f (%.0fs)", step + 1, spec.steps, running, time.time() - t0)
    else:
        step = stop
    for h in handles:
        h.remove()
    if ema is not None:
        student.load_state_dict(ema.ema.state_dict())
    student.eval()
    return {"steps": step - start, "steps_asked": stop - start, "stopped": stopped,
            "seconds": round(time.time() - t0, 2), "loss": running}
