"""The task seam: what recovery (fine-tuning after pruning) and gradient scoring need from a model.

A :class:`TaskAdapter` turns a train split into batches, runs the forward pass used for training, and
gives the losses: the model's own supervised loss when its source provides one (``has_loss``), and a
distillation loss towards the uncompressed teacher's outputs, which works for any model of the task.
A model source attaches the adapter to its :class:`~edgetune.models.LoadedModel`; compression only
talks to this interface, never to a model's own training code.

- :class:`DetectAdapter`: any detector whose ``forward`` returns the Ultralytics layout (N, 4 + C, A):
  xywh boxes in input pixels, then class scores in [0, 1]. No supervised loss: distillation only.
- :class:`ClassifyAdapter`: any classifier returning (N, C) logits: cross-entropy on the labels plus
  distillation of the teacher's softened probabilities.
- The builtin detectors add their own task-aligned loss (``models.builtin.task``).

torch is imported inside the functions, so importing this module (and ``edgetune.models``) stays light.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from edgetune.errors import CompressionError

__all__ = ["TaskAdapter", "DetectAdapter", "ClassifyAdapter", "ModelEMA", "adapter_for", "detection_arrays",
           "float_outputs", "native_bf16", "sample_detection_batch"]


class TaskAdapter(ABC):
    """Batches, training forward and losses of one task (see the module docstring)."""

    kind: str = ""
    has_loss: bool = False  # True: :meth:`loss` is the model's supervised loss on the ground truth

    @abstractmethod
    def prepare(self, train, *, size: int, limit: int) -> Any:
        """The first ``limit`` (0: all) training examples, letterboxed to ``size``, in memory."""

    @abstractmethod
    def sample(self, data, rng: np.random.Generator, batch: int, crop: int | None) -> tuple:
        """One augmented batch ``(x, *targets)``; ``x`` is float32 (B, 3, S, S) in [0, 1]."""

    def forward(self, module, x):
        """The outputs that :meth:`loss` and :meth:`distill` take (default: ``module(x)``)."""
        return module(x)

    def loss(self, out, batch: tuple):
        """The supervised loss on the batch's ground truth (only when ``has_loss``)."""
        raise CompressionError(f"the {self.kind} task of this model offers no supervised loss; recovery distils "
                               "the uncompressed model instead (`recovery.distill: true`).")

    @abstractmethod
    def distill(self, s_out, t_out, batch: tuple):
        """Distillation loss of the student's outputs towards the teacher's."""


def detection_arrays(ds, *, size: int, limit: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Up to ``limit`` (0: all) letterboxed training images (N, S, S, 3) uint8 with boxes in input pixels."""
    from edgetune.data import letterbox

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


def _jitter(x, rng: np.random.Generator):
    """Per-image contrast and brightness jitter of a float batch in [0, 1]."""
    import torch

    batch = x.shape[0]
    gain = torch.from_numpy(rng.uniform(0.75, 1.25, (batch, 1, 1, 1)).astype(np.float32))
    bias = torch.from_numpy(rng.uniform(-0.08, 0.08, (batch, 1, 1, 1)).astype(np.float32))
    return ((x - 0.5) * gain + 0.5 + bias).clamp_(0, 1)


def sample_detection_batch(rng: np.random.Generator, images: np.ndarray, boxes: list[np.ndarray],
                           classes: list[np.ndarray], batch: int, crop: int | None):
    """Random crop (keeping boxes with >= 45% of their area), flips and photometric jitter; returns
    (x (B, 3, S, S) float in [0, 1], gt boxes (B, M, 4) xyxy, gt labels (B, M), gt mask (B, M))."""
    import torch

    n, h, w, _ = images.shape
    idx = rng.integers(0, n, batch)
    size = crop or h
    out = np.empty((batch, size, size, 3), np.uint8)
    tb, tc = [], []
    for j, i in enumerate(idx):
        img, bx, cl = images[i], boxes[i].copy(), classes[i]
        if crop:
            y0, x0 = int(rng.integers(0, h - crop + 1)), int(rng.integers(0, w - crop + 1))
            img = img[y0 : y0 + crop, x0 : x0 + crop]
            area0 = (bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1])
            bx = bx - np.array([x0, y0, x0, y0], np.float32)
            bx = bx.clip(0, crop)
            area1 = (bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1])
            keep = (area1 >= 0.45 * area0) & (bx[:, 2] - bx[:, 0] >= 3) & (bx[:, 3] - bx[:, 1] >= 3)
            bx, cl = bx[keep], cl[keep]
        if rng.uniform() < 0.5:
            img = img[:, ::-1]
            bx = np.stack([size - bx[:, 2], bx[:, 1], size - bx[:, 0], bx[:, 3]], 1)
        if rng.uniform() < 0.5:
            img = img[::-1]
            bx = np.stack([bx[:, 0], size - bx[:, 3], bx[:, 2], size - bx[:, 1]], 1)
        out[j] = img
        tb.append(bx.astype(np.float32).reshape(-1, 4))
        tc.append(cl)
    m = max(1, max(len(b) for b in tb))
    gb = np.zeros((batch, m, 4), np.float32)
    gl = np.zeros((batch, m), np.int64)
    gm = np.zeros((batch, m), bool)
    for j, (b, c) in enumerate(zip(tb, tc, strict=True)):
        gb[j, : len(b)], gl[j, : len(c)], gm[j, : len(b)] = b, c, True
    x = _jitter(torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0), rng)
    return x, torch.from_numpy(gb), torch.from_numpy(gl), torch.from_numpy(gm)


class DetectAdapter(TaskAdapter):
    """A detector with the Ultralytics output layout (N, 4 + C, A), distilled on that output alone:
    BCE towards the teacher's class scores and L1 on its xywh boxes (in units of the input size),
    both weighted by the teacher's confidence at each anchor."""

    kind = "detect"

    def prepare(self, train, *, size: int, limit: int):
        return detection_arrays(train, size=size, limit=limit)

    def sample(self, data, rng, batch, crop):
        return sample_detection_batch(rng, *data, batch, crop)

    def distill(self, s_out, t_out, batch):
        from torch.nn import functional as F

        size = batch[0].shape[-1]
        t_scores = t_out[:, 4:].clamp(1e-6, 1 - 1e-6)
        w = t_scores.amax(1)
        norm = w.sum().clamp(min=1.0)
        cls = F.binary_cross_entropy(s_out[:, 4:].clamp(1e-6, 1 - 1e-6), t_scores, reduction="sum") / norm
        box = ((s_out[:, :4] - t_out[:, :4]).abs().sum(1) / size * w).sum() / norm
        return cls + 5.0 * box


class ClassifyAdapter(TaskAdapter):
    """A classifier returning (N, C) logits: cross-entropy on the labels; distillation is the KL
    divergence to the teacher's probabilities at temperature ``T`` (scaled by T^2, as in Hinton et al.)."""

    kind = "classify"
    has_loss = True
    T = 2.0

    def prepare(self, train, *, size: int, limit: int):
        from edgetune.data import letterbox

        n = len(train) if not limit else min(limit, len(train))
        images = np.empty((n, size, size, 3), np.uint8)
        for i in range(n):
            images[i] = letterbox(train.load_image(i), size)[0].transpose(1, 2, 0)
        labels = np.asarray([train.records[i].label for i in range(n)], np.int64)
        return images, labels

    def sample(self, data, rng, batch, crop):
        """Random crops (``crop`` pixels, padded back to full size by reflection) and horizontal flips."""
        import torch

        images, labels = data
        idx = rng.integers(0, len(images), batch)
        n, s = len(idx), images.shape[1]
        out = images[idx].copy()
        for j in range(n):
            if crop and crop < s:
                y0, x0 = int(rng.integers(0, s - crop + 1)), int(rng.integers(0, s - crop + 1))
                part = out[j, y0 : y0 + crop, x0 : x0 + crop]
                pad = ((y0, s - crop - y0), (x0, s - crop - x0), (0, 0))
                out[j] = np.pad(part, pad, mode="reflect")
            if rng.uniform() < 0.5:
                out[j] = out[j, :, ::-1]
        x = _jitter(torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0), rng)
        return x, torch.from_numpy(labels[idx])

    def loss(self, out, batch):
        from torch.nn import functional as F

        return F.cross_entropy(out, batch[1])

    def distill(self, s_out, t_out, batch):
        from torch.nn import functional as F

        t = self.T
        return F.kl_div(F.log_softmax(s_out / t, -1), F.softmax(t_out / t, -1), reduction="batchmean") * t * t


def adapter_for(kind: str) -> TaskAdapter:
    """The generic adapter of a task (``detect`` | ``classify``)."""
    if kind == "detect":
        return DetectAdapter()
    if kind == "classify":
        return ClassifyAdapter()
    raise CompressionError(f"no training adapter for task {kind!r}; tasks: detect, classify.")


def native_bf16() -> bool:
    """True on CPUs with native bf16 (AVX512-BF16 / AMX): there bf16 autocast speeds up training."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return False


def float_outputs(out):
    """Outputs (tensors in tuples, lists and dicts, any depth) in float32 after a bf16 forward pass."""
    if out is None:
        return None
    if isinstance(out, dict):
        return {k: float_outputs(v) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return [float_outputs(o) for o in out] if isinstance(out, list) else tuple(float_outputs(o) for o in out)
    return out.float()


class ModelEMA:
    """Exponential moving average of a model's weights (ramped decay, as in YOLOv5/v8)."""

    def __init__(self, model, decay: float, tau: float = 500.0):
        import copy

        self.ema = copy.deepcopy(model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    def update(self, model) -> None:
        import torch

        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        msd = model.state_dict()
        with torch.no_grad():
            for k, v in self.ema.state_dict().items():
                if v.dtype.is_floating_point:
                    v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
                else:
                    v.copy_(msd[k])
