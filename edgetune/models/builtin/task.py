"""The builtin detectors' task adapter: their own task-aligned loss on the raw head outputs, and dense
distillation of the teacher's raw predictions at every anchor."""

from __future__ import annotations

from edgetune.models.tasks import DetectAdapter

__all__ = ["BuiltinDetectAdapter"]


class _Raw:
    """Stands in for the model in ``detection_loss`` so the student's forward pass is shared with KD."""

    def __init__(self, out):
        self.out = out

    def raw(self, x):
        return self.out


class BuiltinDetectAdapter(DetectAdapter):
    """Trains on ``raw()`` = (ltrb distances, logits, anchors): the loss the weights were trained with
    (``train.detection_loss``) and, for distillation, BCE towards the teacher's class probabilities plus
    GIoU towards its boxes, weighted by its confidence."""

    has_loss = True

    def forward(self, module, x):
        return module.raw(x)

    def loss(self, out, batch):
        from edgetune.models.builtin.train import detection_loss

        return detection_loss(_Raw(out), *batch)

    def distill(self, s_out, t_out, batch):
        import torch
        from torch.nn import functional as F

        from edgetune.models.builtin.train import box_iou

        s_dist, s_logits, anchors = s_out
        t_dist, t_logits, _ = t_out
        t_prob = t_logits.sigmoid()
        w = t_prob.amax(-1)
        norm = w.sum().clamp(min=1.0)
        cls = F.binary_cross_entropy_with_logits(s_logits, t_prob, reduction="none").sum(-1)
        cls = (cls - F.binary_cross_entropy_with_logits(t_logits, t_prob, reduction="none").sum(-1)).sum() / norm

        def xyxy(d):
            return torch.cat([anchors - d[..., :2], anchors + d[..., 2:]], -1)

        box = ((1.0 - box_iou(xyxy(s_dist), xyxy(t_dist), giou=True)) * w).sum() / norm
        return cls + 5.0 * box
