"""The torch wrapper of an Ultralytics detector (imports torch; see ``models.ultralytics_yolo``)."""

from __future__ import annotations

from torch import nn

from edgetune.models.ultralytics_yolo import is_end2end

__all__ = ["YoloDetector"]


class YoloDetector(nn.Module):
    """An Ultralytics ``DetectionModel`` whose forward returns what it is deployed as, in eval and training mode.

    - One-to-many heads (YOLOv8, YOLO11): the decoded ``(N, 4 + C, A)`` tensor (in training mode Ultralytics
      returns raw head outputs, decoded here by the head itself); NMS runs after it.
    - End-to-end heads (YOLO26, YOLOv10): the one-to-one branch decoded, ``(N, 4 + C, A)`` with boxes as x1,
      y1, x2, y2; the device takes its top-k with no NMS (``heads.decode_detections``, layout ``xyxy_scores``:
      what Ultralytics' export computes in-graph, which an ONNX parity check cannot compare when scores tie).
      The one-to-many branch is dropped when the model is loaded for compression (it only guides training
      from scratch), and the one-to-one branch is run here on the neck's features directly: Ultralytics'
      head detaches them in training mode, which would keep a fine-tune from reaching the backbone.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        if is_end2end(model):  # decode x1y1x2y2 (Ultralytics decodes xywh while the one-to-many branch is there)
            model.model[-1].end2end = True

    def raw(self, x):
        """End-to-end heads: the one-to-one branch's raw outputs (``boxes``, ``scores``, ``feats``)."""
        det = self.model
        saved = []
        for m in det.model[:-1]:
            if m.f != -1:
                x = saved[m.f] if isinstance(m.f, int) else [x if j == -1 else saved[j] for j in m.f]
            x = m(x)
            saved.append(x if m.i in det.save else None)
        head = det.model[-1]
        feats = [x if j == -1 else saved[j] for j in head.f]
        return head.forward_head(feats, **head.one2one)

    def forward(self, x):
        if is_end2end(self.model):
            return self.model.model[-1]._inference(self.raw(x))  # (N, 4 + C, A), boxes xyxy
        out = self.model(x)
        if isinstance(out, dict):  # training mode: {"boxes", "scores", "feats"}
            return self.model.model[-1]._inference(out)
        return out[0] if isinstance(out, (tuple, list)) else out


class _Skipped(nn.Module):
    """A block whose output no kept detection scale reads: passes its input through, computes nothing."""

    def __init__(self, block):
        super().__init__()
        self.f, self.i, self.type, self.np = -1, block.i, f"skipped {getattr(block, 'type', '')}", 0

    def forward(self, x):
        return x


def output_strides(module) -> tuple[int, ...] | None:
    """The strides of a wrapped Ultralytics detector's output scales (``(8, 16, 32)`` for YOLO11n), or None
    for any other module."""
    det = getattr(module, "model", None)
    head = det.model[-1] if isinstance(det, nn.Module) and hasattr(det, "model") else None
    if not isinstance(module, YoloDetector) or head is None or not hasattr(head, "stride") or not hasattr(head, "nl"):
        return None
    return tuple(int(s) for s in head.stride.tolist())


def keep_output_scales(module, strides) -> list[str]:
    """Remove the output scales of a wrapped Ultralytics detector whose stride is not in ``strides``, in place:
    their head branches (box and class convs, both branches of an end-to-end head) and every block that only
    they read (the neck path that feeds them) go, so they cost nothing at inference. The kept scales' outputs
    are unchanged: the output has fewer anchors, in the same order. Returns the removed blocks' names."""
    import torch

    have = output_strides(module)
    keep = [k for k, s in enumerate(have or ()) if s in set(strides)]
    if have is None or not keep:
        raise ValueError(f"cannot keep output strides {tuple(strides)} of a model with output strides {have}")
    if len(keep) == len(have):
        return []
    det = module.model
    head = det.model[-1]
    for name in ("cv2", "cv3", "one2one_cv2", "one2one_cv3"):
        branch = getattr(head, name, None)
        if branch is not None:
            setattr(head, name, nn.ModuleList([branch[k] for k in keep]))
    head.f = [head.f[k] for k in keep]
    head.stride = torch.as_tensor([float(have[k]) for k in keep])
    head.nl = len(keep)
    head.shape = None  # anchors are remade for the kept scales at the next forward
    need = {j for j in head.f if j != -1}
    if -1 in head.f:
        need.add(head.i - 1)
    for i in range(head.i - 1, -1, -1):  # walk back: a needed block needs what it reads
        if i in need:
            m = det.model[i]
            for j in [m.f] if isinstance(m.f, int) else m.f:
                need.add(i - 1 if j == -1 else j)
    removed = []
    for i in range(head.i):
        if i not in need:
            removed.append(f"model.model.{i}")
            det.model[i] = _Skipped(det.model[i])
    return removed
