"""Device runtimes behind one small interface: onnxruntime (``ort``), OpenVINO (``openvino``), TensorRT
(``tensorrt``) and NCNN (``ncnn``, ONNX converted with pnnx on the device)."""

from edgetune.device_agents.runtimes import ncnn as _ncnn  # noqa: F401  (registers "ncnn")
from edgetune.device_agents.runtimes import openvino as _openvino  # noqa: F401  (registers "openvino")
from edgetune.device_agents.runtimes import ort as _ort  # noqa: F401  (registers "ort")
from edgetune.device_agents.runtimes import tensorrt as _tensorrt  # noqa: F401  (registers "tensorrt")
from edgetune.device_agents.runtimes._base import (
    ModelSession,
    Runtime,
    available_runtimes,
    get_runtime,
    register_runtime,
)

__all__ = ["ModelSession", "Runtime", "available_runtimes", "get_runtime", "register_runtime"]
