"""Model sources, task heads and scoring of raw outputs. Importing this package does not import torch: the
agent uses the heads and :func:`score_outputs`."""

from edgetune.models import sources as _sources  # noqa: E402, F401, I001  (registers builtin, python, onnx)
from edgetune.models import ultralytics_yolo as _ultralytics  # noqa: E402, F401, I001  (registers ultralytics)
from edgetune.models._evaluate import OutputScorer, evaluate, iter_batches, score_outputs
from edgetune.models._probe import probe_forward
from edgetune.models._registry import (
    LoadedModel,
    ModelSource,
    available_sources,
    get_source,
    load_model,
    register_source,
    source_class,
)
from edgetune.models.ultralytics_yolo import keep_output_scales, output_strides
from edgetune.models.heads import ClassifyHead, DetectHead, decode_detections, head_from_dict, nms, topk
from edgetune.models.tasks import (
    ClassifyAdapter,
    DetectAdapter,
    ModelEMA,
    TaskAdapter,
    adapter_for,
    detection_arrays,
    float_outputs,
    native_bf16,
    sample_detection_batch,
)

__all__ = [
    "LoadedModel", "ModelSource", "available_sources", "get_source", "load_model", "register_source", "source_class",
    "ClassifyHead", "DetectHead", "decode_detections", "head_from_dict", "nms", "topk",
    "evaluate", "iter_batches", "score_outputs", "OutputScorer", "probe_forward",
    "TaskAdapter", "DetectAdapter", "ClassifyAdapter", "ModelEMA", "adapter_for", "detection_arrays",
    "sample_detection_batch", "float_outputs", "native_bf16", "keep_output_scales", "output_strides",
]
