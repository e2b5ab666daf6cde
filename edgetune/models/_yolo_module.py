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
