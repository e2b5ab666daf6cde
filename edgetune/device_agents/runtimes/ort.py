"""onnxruntime: the CPU execution provider by default; CUDA / TensorRT / other EPs when requested and
present. The providers a session really uses are checked: ORT silently drops an EP it cannot start.

An onnxruntime older than :data:`MIN_ONNXRUNTIME` (``pyproject.toml``'s requirement) makes the runtime
unusable, so an agent offering it refuses to start: older releases follow external-data paths out of
the model's folder. The upload check refuses external data anyway; this is the second wall."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgetune._imports import require
from edgetune.device_agents.protocol import RuntimeInfo
from edgetune.device_agents.runtimes._base import ModelSession, Runtime, register_runtime
from edgetune.errors import MeasurementFailed

__all__ = ["OrtRuntime", "OrtSession", "session_options", "MIN_ONNXRUNTIME", "onnxruntime_version"]

MIN_ONNXRUNTIME = "1.24"  # as pyproject.toml requires (tests/device_agents/test_agent_hostile.py checks they agree)

_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
             "tensor(int8)": np.int8, "tensor(double)": np.float64}


def onnxruntime_version() -> str:
    """The installed onnxruntime's version string (raises ImportError when it is not importable)."""
    import onnxruntime

    return onnxruntime.__version__


def _older_than_required(version: str) -> bool:
    def release(v: str) -> tuple[int, ...]:
        m = re.match(r"(\d+)\.(\d+)", v)
        return (int(m[1]), int(m[2])) if m else (0, 0)

    return release(version) < release(MIN_ONNXRUNTIME)


def session_options(ort, *, threads: int):
    """Options for single-stream latency: fixed intra-op threads, one inter-op thread, sequential."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return so


# onnxruntime's CPU kernels that compute in int8: a weighted ONNX node fused into one of them ran in int8
_INT8_OPS = {"QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat",
             "DynamicQuantizeMatMul", "QAttention"}


class OrtSession(ModelSession):
    def __init__(self, sess, *, providers_used: list[str], detail: dict[str, Any], path: Path | None = None,
                 threads: int = 1):
        self._path, self._threads = path, threads
        self._sess = sess
        inp = sess.get_inputs()[0]
        self.input_name = inp.name
        self.input_shape = tuple(d if isinstance(d, int) and d > 0 else -1 for d in inp.shape)
        self.input_dtype = np.dtype(_NP_TYPES.get(inp.type, np.float32))
        self._outputs = [sess.get_outputs()[0].name]
        self.providers_used = providers_used
        self.detail = detail

    def run(self, x: np.ndarray) -> np.ndarray:
        return self._sess.run(self._outputs, {self.input_name: x})[0]

    def realised_precision(self, layers: Sequence[str]) -> dict[str, str] | None:
        """From the graph onnxruntime runs after its optimizations (the same session options, saved with
        ``optimized_model_filepath``): a weighted node fused into an int8 kernel (QLinearConv, QGemm, ...,
        named after it: ``<name>_token_<n>``) ran in int8, any other in float (fp32 here; fp16 kernels exist
        on some ARM builds). Note that onnxruntime >= 1.20 also quantizes the float weights of a Conv whose
        input and output pass through Q/DQ, so a layer kept fp32 between int8 neighbours can run in int8.
        CPU execution provider only (other providers place nodes their own way): run here on x86. Call it
        after the last run: it frees the timed session first (two sessions of a large model may not fit a
        small board's memory)."""
        if self._path is None or self.providers_used != ["CPUExecutionProvider"]:
            return None
        self._sess = None
        import tempfile

        import onnx
        import onnxruntime as ort

        with tempfile.TemporaryDirectory(prefix="edgetune-ort-") as tmp:
            so = session_options(ort, threads=self._threads)
            so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            ort.InferenceSession(str(self._path), so, providers=["CPUExecutionProvider"])
            graph = onnx.load(so.optimized_model_filepath, load_external_data=False).graph
        int8 = {re.sub(r"_token_\d+$", "", n.name) for n in graph.node if n.op_type in _INT8_OPS}
        return {name: "int8" if name in int8 else "float" for name in layers}


@register_runtime("ort")
class OrtRuntime(Runtime):
    """onnxruntime with fixed threads; ``providers`` e.g. ``["CUDAExecutionProvider"]``."""

    def info(self) -> RuntimeInfo:
        try:
            import onnxruntime as ort

            version = onnxruntime_version()
        except ImportError as exc:
            return RuntimeInfo(name="ort", error=f'onnxruntime is not importable ({exc}): pip install "edgetune[agent]"')
        if _older_than_required(version):
            return RuntimeInfo(name="ort", version=version, error=(
                f"onnxruntime {version} is older than {MIN_ONNXRUNTIME}, the oldest this agent runs (older releases "
                f'follow external-data paths out of the model\'s folder); upgrade it: pip install "onnxruntime>={MIN_ONNXRUNTIME}"'))
        return RuntimeInfo(name="ort", version=version, available_providers=list(ort.get_available_providers()))

    def default_providers(self) -> list[str]:
        return ["CPUExecutionProvider"]

    def load(self, path: Path, *, threads: int, providers: Sequence[str] | None = None,
             cache_dir: Path | None = None, batch: int = 1) -> ModelSession:
        ort = require("onnxruntime", extra="agent", purpose="The onnxruntime device runtime")
        requested = list(providers or self.default_providers())
        available = list(ort.get_available_providers())
        missing = [p for p in requested if p not in available]
        if missing:
            raise MeasurementFailed(
                f"execution provider(s) {', '.join(missing)} are not available in onnxruntime {ort.__version__} "
                f"on this device (available: {', '.join(available)}). Install the onnxruntime build that has "
                "them (e.g. onnxruntime-gpu) or request one of the available providers."
            )
        entries = [self._provider_entry(p, path, cache_dir) for p in requested]
        if "CPUExecutionProvider" not in requested:
            entries.append("CPUExecutionProvider")  # for the nodes an accelerator does not take
        try:
            sess = ort.InferenceSession(str(path), session_options(ort, threads=threads), providers=entries)
        except Exception as exc:  # ORT raises Fail / InvalidGraph / InvalidProtobuf / RuntimeException
            raise MeasurementFailed(f"onnxruntime {ort.__version__} could not load the model: {exc}") from exc
        used = list(sess.get_providers())
        dropped = [p for p in requested if p not in used]
        if dropped:
            raise MeasurementFailed(
                f"requested execution provider(s) {', '.join(dropped)} but the session runs on {', '.join(used)}: "
                "onnxruntime fell back silently (check the provider's libraries, e.g. CUDA / TensorRT versions)."
            )
        return OrtSession(sess, providers_used=used, detail={"threads": int(threads), "graph_optimization_level": 99},
                          path=Path(path), threads=int(threads))

    @staticmethod
    def _provider_entry(name: str, path: Path, cache_dir: Path | None):
        if name != "TensorrtExecutionProvider":
            return name
        from edgetune.device_agents._onnx_check import scan_onnx

        summary = scan_onnx(Path(path).read_bytes())
        opts: dict[str, Any] = {"trt_int8_enable": summary.has_qdq, "trt_fp16_enable": summary.has_fp16}
        if cache_dir is not None:
            cache = Path(cache_dir) / "ort-trt"
            cache.mkdir(parents=True, exist_ok=True)
            opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache),
                        trt_timing_cache_enable=True, trt_timing_cache_path=str(cache))
        return (name, opts)
