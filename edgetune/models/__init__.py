"""Model sources and task heads. Importing this package does not import torch (the agent uses heads)."""

from edgetune.models._registry import (
    LoadedModel,
    ModelSource,
    available_sources,
    get_source,
    load_model,
    register_source,
)
from edgetune.models.heads import ClassifyHead, DetectHead, decode_detections, head_from_dict, nms, topk

__all__ = [
    "LoadedModel", "ModelSource", "available_sources", "get_source", "load_model", "register_source",
    "ClassifyHead", "DetectHead", "decode_detections", "head_from_dict", "nms", "topk",
]
