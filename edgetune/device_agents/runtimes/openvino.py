"""OpenVINO (``openvino`` package): the artifact's ONNX read directly (QDQ int8 runs on OpenVINO's int8
kernels), compiled for one device (``CPU`` by default; ``GPU`` / ``NPU`` when requested and present).

Settings for single-stream latency, the same as onnxruntime's: ``INFERENCE_NUM_THREADS`` fixed,
``NUM_STREAMS`` 1, ``PERFORMANCE_HINT`` LATENCY, and no thread pinning by OpenVINO itself (the agent
pins the measurement process to its ``--cpus``). ``INFERENCE_PRECISION_HINT`` is ``f32``: on CPUs with
bf16 support OpenVINO otherwise runs "fp32" models in bf16 (measured on this project's machines: its
default "fp32" ran 1.6x faster than true fp32), which would credit a precision change to the baseline.
Quantized (QDQ) layers still run int8: the hint only governs the floating-point parts.

``providers`` name OpenVINO devices (``CPU``, ``GPU``, ``NPU``; the ``*ExecutionProvider`` spelling of
onnxruntime is not used here). A requested device that is not among ``Core().available_devices`` is
MeasurementFailed, never a fallback.

What ran where: the CPU device on x86-64 (this project's 2-core AVX2 machines, openvino 2025-2026).
GPU and NPU devices were not run: none is attached here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgetune._imports import require
from edgetune.device_agents.protocol import RuntimeInfo
from edgetune.device_agents.runtimes._base import ModelSession, Runtime, register_runtime
from edgetune.errors import MeasurementFailed

__all__ = ["OpenVINORuntime", "OpenVINOSession", "compile_config"]

_PURPOSE = "The OpenVINO device runtime"


def compile_config(*, threads: int, device: str) -> dict[str, str]:
    """Compile properties for single-stream latency with fixed threads and true fp32 (see the module doc)."""
    cfg = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32"}
    if device == "CPU":
        cfg.update({"INFERENCE_NUM_THREADS": str(int(threads)), "ENABLE_CPU_PINNING": "NO"})
    return cfg


def _np_dtype(element_type) -> np.dtype:
    try:
        return np.dtype(element_type.to_dtype())
    except (AttributeError, TypeError):
        return np.dtype(np.float32)


class OpenVINOSession(ModelSession):
    def __init__(self, compiled, *, device: str, detail: dict[str, Any]):
        self._compiled = compiled
        self._request = compiled.create_infer_request()
        port = compiled.input(0)
        self.input_name = port.get_any_name()
        shape = port.get_partial_shape()
        self.input_shape = tuple(int(d.get_length()) if d.is_static else -1 for d in shape)
        self.input_dtype = _np_dtype(port.get_element_type())
        self.providers_used = [device]
        self.detail = detail

    def run(self, x: np.ndarray) -> np.ndarray:
        self._request.infer({0: x})
        # the output tensor is the request's own buffer, overwritten by the next run: hand out a copy
        return np.array(self._request.get_output_tensor(0).data, copy=True)

    def realised_precision(self, layers: Sequence[str]) -> dict[str, str] | None:
        """From the compiled model's runtime graph: each executed node lists the ONNX nodes it runs
        (``originalLayersNames``, fused ones included) and its ``runtimePrecision`` (u8 / i8 -> int8; on a
        CPU with bf16, OpenVINO runs fp32 layers in bf16 by default). Run here on the CPU plugin."""
        if self._compiled is None:
            return None
        wanted, out = set(layers), {}
        names = {"u8": "int8", "i8": "int8", "f32": "fp32", "f16": "fp16", "bf16": "bf16"}
        for op in self._compiled.get_runtime_model().get_ops():
            info = op.get_rt_info()
            if "originalLayersNames" not in info or "runtimePrecision" not in info:
                continue
            precision = str(info["runtimePrecision"].astype(str))
            for name in str(info["originalLayersNames"].astype(str)).split(","):
                if name in wanted and name not in out:
                    out[name] = names.get(precision, precision)
        return out

    def close(self) -> None:
        self._request = None
        self._compiled = None


@register_runtime("openvino")
class OpenVINORuntime(Runtime):
    """OpenVINO with fixed threads; ``providers`` e.g. ``["CPU"]`` or ``["GPU"]`` (one device)."""

    def info(self) -> RuntimeInfo:
        try:
            import openvino as ov
        except ImportError as exc:
            return RuntimeInfo(name="openvino", error=f'openvino is not importable ({exc}): pip install "edgetune[openvino]"')
        try:
            devices = list(ov.Core().available_devices)
        except Exception as exc:  # a broken plugin install: say so, do not raise
            return RuntimeInfo(name="openvino", version=_version(ov), error=f"OpenVINO lists no devices: {exc}")
        return RuntimeInfo(name="openvino", version=_version(ov), available_providers=devices)

    def default_providers(self) -> list[str]:
        return ["CPU"]

    def load(self, path: Path, *, threads: int, providers: Sequence[str] | None = None,
             cache_dir: Path | None = None, batch: int = 1) -> ModelSession:
        ov = require("openvino", extra="openvino", purpose=_PURPOSE)
        version = _version(ov)
        requested = list(providers or self.default_providers())
        if len(requested) != 1:
            raise MeasurementFailed(f"OpenVINO {version} compiles a model for one device; got {requested}. Ask for one "
                                    "of CPU, GPU, NPU.")
        device = requested[0]
        core = ov.Core()
        available = list(core.available_devices)
        if device not in available:
            raise MeasurementFailed(f"OpenVINO {version} has no device {device!r} here (available: {', '.join(available)}). "
                                    "Request one of the available devices.")
        config = compile_config(threads=threads, device=device)
        try:
            model = core.read_model(str(path))
            compiled = core.compile_model(model, device, config)
        except Exception as exc:  # OpenVINO raises RuntimeError with its own text
            raise MeasurementFailed(f"OpenVINO {version} could not load the model: {exc}") from exc
        detail: dict[str, Any] = {"threads": int(threads), "device": device, **config}
        return OpenVINOSession(compiled, device=device, detail=detail)


def _version(ov) -> str:
    """``2026.4.1`` (the release), not the build string ``2026.4.1-18967-...`` of ``get_version()``."""
    return str(getattr(ov, "__version__", None) or ov.get_version()).split("-", 1)[0]
