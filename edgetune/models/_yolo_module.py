"""The torch wrapper of an Ultralytics detector (imports torch; see ``models.ultralytics_yolo``)."""

from __future__ import annotations

from torch import nn

__all__ = ["YoloDetector"]


class YoloDetector(nn.Module):
    """An Ultralytics ``DetectionModel`` whose forward returns the decoded (N, 4 + C, A) tensor in eval and
    training mode (in training mode Ultralytics returns raw head outputs, decoded here by the head itself)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        if isinstance(out, dict):  # training mode: {"boxes", "scores", "feats"}
            return self.model.model[-1]._inference(out)
        return out[0] if isinstance(out, (tuple, list)) else out
