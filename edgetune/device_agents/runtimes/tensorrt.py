"""TensorRT (native Python API): the engine is built on the device from the artifact's ONNX and cached.

Precision comes from the ONNX graph (QDQ int8 nodes, fp16 casts). TensorRT 11 removed the builder
precision flags and is always strongly typed; on TensorRT 10 (JetPack 6 ships 10.3) the network is
created with ``STRONGLY_TYPED`` so both versions build the same precisions from the same file. Engines
are cached under ``<cache_dir>/trt-engines`` keyed by artifact hash + TensorRT version + GPU name and
compute capability + batch: an engine is only valid for the TensorRT version and GPU that built it.
Host/device copies use cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart`` in older releases).

What ran where: written against the TensorRT 10.x / 11.x Python API (NVIDIA/TensorRT ``NvInfer.h`` at
v10.16 and v11.1, ``samples/python/common_runtime.py``) and the cuda-python runtime bindings. It was
NOT run on real hardware here: the development machine has no GPU and no TensorRT, so its conformance
tests skip. What the tests do run without a GPU: the engine cache key and the MissingDependency errors.
Model-only latency with this runtime includes the host-to-device and device-to-host copies.

Builder settings: ``SPARSE_WEIGHTS`` is always set (TensorRT then picks sparse tensor-core tactics for the
layers whose weights are 2:4 structured, as edgetune's ``2:4`` configs are, on GPUs that have them, and
dense ones elsewhere), and ``ProfilingVerbosity.DETAILED``, so that the engine inspector can say per layer
what ran (:func:`realised_from_inspector`: the precision of each engine layer's weights, mapped back to the
ONNX nodes fused into it). That reader is tested on an engine inspector JSON NVIDIA recorded (a QAT
MobileNet engine, tests/device_agents/fixtures); it has not read one of edgetune's own engines.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgetune._imports import require
from edgetune._logging import get_logger
from edgetune.device_agents.protocol import RuntimeInfo
from edgetune.device_agents.runtimes._base import ModelSession, Runtime, register_runtime
from edgetune.errors import MeasurementFailed, MissingDependency

__all__ = ["TensorRTRuntime", "engine_cache_key", "realised_from_inspector"]

log = get_logger(__name__)
_TRT_PURPOSE = ("The TensorRT device runtime (on a Jetson, TensorRT comes with JetPack: create the venv with "
                "`python3 -m venv --system-site-packages` so it can see it)")


_BUILD = "sparse+detailed"  # the builder settings of _build: an engine cached under other settings is built again


def engine_cache_key(*, artifact_sha256: str, trt_version: str, gpu: str, compute_capability: str, batch: int) -> str:
    """Name of a cached engine: it is only valid for this artifact, TensorRT version, GPU, batch and the
    builder settings this module uses."""
    text = f"{artifact_sha256}|trt{trt_version}|{gpu}|sm{compute_capability}|b{batch}|{_BUILD}"
    return hashlib.sha256(text.encode()).hexdigest()[:40]


# the engine inspector's names of weight types (``nvinfer1::DataType`` as it prints them) -> edgetune's
_WEIGHT_TYPES = {"int8": "int8", "half": "fp16", "float": "fp32", "bf16": "bf16", "bfloat16": "bf16", "fp8": "fp8",
                 "int4": "int4"}


def _onnx_nodes(layer: dict) -> set[str]:
    """The ONNX node names an engine layer was built from: its ``Metadata`` (``[ONNX Layer: NAME]`` per fused
    node, TensorRT >= 10) and the parts of its ``Name`` (``a + b + PWN(c, d)`` when layers were fused)."""
    names = set(re.findall(r"\[ONNX Layer: ([^\]]+)\]", str(layer.get("Metadata") or "")))
    names |= {t.strip() for t in re.split(r" \+ |PWN\(|\)|, ", str(layer.get("Name") or ""))}
    return {n for n in names if n}


def realised_from_inspector(info: str | dict, layers: Sequence[str]) -> dict[str, str]:
    """ONNX node name -> the precision of the weights TensorRT ran it with, for each of ``layers`` found in
    the engine inspector's JSON (``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`` of
    an engine built with ``ProfilingVerbosity.DETAILED``); layers the engine does not name are left out."""
    data = json.loads(info) if isinstance(info, str) else info
    wanted, out = set(layers), {}
    for layer in data.get("Layers") or []:
        if not isinstance(layer, dict):  # a less detailed build lists names only
            continue
        kind = str((layer.get("Weights") or {}).get("Type") or "").lower()
        if not kind:
            continue
        for name in _onnx_nodes(layer) & wanted:
            out[name] = _WEIGHT_TYPES.get(kind, "float")
    return out


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as exc:
            raise MissingDependency(
                f"The TensorRT runtime needs cuda-python for host/device copies, which is not importable ({exc}). "
                'Install it with: pip install "edgetune[tensorrt]" (or pip install cuda-python matching the CUDA '
                "major version of the device)."
            ) from exc
    return cudart


def _call(result, what: str):
    """cuda-python calls return (err, *values); raise MeasurementFailed on an error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise MeasurementFailed(f"CUDA call {what} failed: {err}")
    return values[0] if len(values) == 1 else values


class TensorRTSession(ModelSession):
    def __init__(self, trt, cudart, engine, *, batch: int, detail: dict[str, Any]):
        self._trt, self._cudart, self._engine = trt, cudart, engine
        self._ctx = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or not outputs:
            raise MeasurementFailed(f"TensorRT engine has inputs {inputs} and outputs {outputs}; edgetune "
                                    "measures models with one image input.")
        self.input_name = inputs[0]
        shape = tuple(engine.get_tensor_shape(self.input_name))
        if -1 in shape:
            self._ctx.set_input_shape(self.input_name, tuple(batch if d == -1 else d for d in shape))
        self.input_shape = tuple(self._ctx.get_tensor_shape(self.input_name))
        self.input_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.input_name)))
        self._stream = _call(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, int] = {}
        self._host_out: dict[str, np.ndarray] = {}
        for name in inputs + outputs:
            dims = tuple(self._ctx.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(dims)) * dtype.itemsize
            self._buffers[name] = _call(cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc")
            self._ctx.set_tensor_address(name, int(self._buffers[name]))
            if name in outputs:
                self._host_out[name] = np.empty(dims, dtype)
        self._first_output = outputs[0]
        self.providers_used = ["TensorRT"]
        self.detail = detail

    def run(self, x: np.ndarray) -> np.ndarray:
        cudart = self._cudart
        x = np.ascontiguousarray(x, dtype=self.input_dtype)
        _call(cudart.cudaMemcpyAsync(self._buffers[self.input_name], x.ctypes.data, x.nbytes,
                                     cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream), "cudaMemcpyAsync")
        if not self._ctx.execute_async_v3(int(self._stream)):
            raise MeasurementFailed("TensorRT execute_async_v3 returned False (see the TensorRT log).")
        for name, host in self._host_out.items():
            _call(cudart.cudaMemcpyAsync(host.ctypes.data, self._buffers[name], host.nbytes,
                                         cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream), "cudaMemcpyAsync")
        _call(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return self._host_out[self._first_output].copy()

    def realised_precision(self, layers: Sequence[str]) -> dict[str, str] | None:
        """From the engine inspector (see :func:`realised_from_inspector`); None when it names none of them."""
        inspector = self._engine.create_engine_inspector()
        info = inspector.get_engine_information(self._trt.LayerInformationFormat.JSON)
        return realised_from_inspector(info, layers) or None

    def close(self) -> None:
        for ptr in self._buffers.values():
            self._cudart.cudaFree(ptr)
        self._buffers.clear()
        self._cudart.cudaStreamDestroy(self._stream)


@register_runtime("tensorrt")
class TensorRTRuntime(Runtime):
    """Native TensorRT; ``threads`` is ignored (the GPU runs the model), ``providers`` must be empty."""

    def info(self) -> RuntimeInfo:
        try:
            import tensorrt as trt
        except ImportError as exc:
            return RuntimeInfo(name="tensorrt", error=f"tensorrt is not importable ({exc}): on JetPack it comes with "
                               'the system Python (create the venv with --system-site-packages); elsewhere pip '
                               'install "edgetune[tensorrt]"')
        return RuntimeInfo(name="tensorrt", version=trt.__version__, available_providers=["TensorRT"])

    def default_providers(self) -> list[str]:
        return ["TensorRT"]

    def unusable_reason(self) -> str | None:
        if (err := self.info().error) is not None:
            return err
        try:
            cudart = _cudart()
            count = _call(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        except (MissingDependency, MeasurementFailed) as exc:
            return str(exc)
        return None if int(count) > 0 else "CUDA sees no GPU on this machine (cudaGetDeviceCount() == 0)"

    def load(self, path: Path, *, threads: int, providers: Sequence[str] | None = None,
             cache_dir: Path | None = None, batch: int = 1) -> ModelSession:
        trt = require("tensorrt", extra="tensorrt", purpose=_TRT_PURPOSE)
        cudart = _cudart()
        if providers and list(providers) != ["TensorRT"]:
            raise MeasurementFailed(f"the tensorrt runtime has no execution providers to choose; got {list(providers)}.")
        data = Path(path).read_bytes()
        props = _call(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
        gpu = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
        cc = f"{props.major}{props.minor}"
        logger = _make_logger(trt)
        key = engine_cache_key(artifact_sha256=hashlib.sha256(data).hexdigest(), trt_version=trt.__version__,
                               gpu=gpu, compute_capability=cc, batch=batch)
        engine_file = Path(cache_dir or Path(path).parent) / "trt-engines" / f"{key}.plan"
        built = not engine_file.exists()
        if built:
            from edgetune._paths import atomic_write_bytes

            plan = _build(trt, logger, data, batch=batch)
            atomic_write_bytes(engine_file, plan)
        else:
            plan = engine_file.read_bytes()
        engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
        if engine is None:
            raise MeasurementFailed("TensorRT could not deserialize the engine: " + "; ".join(logger.messages[-5:]))
        return TensorRTSession(trt, cudart, engine, batch=batch, detail={
            "gpu": gpu, "compute_capability": cc, "engine_cache": str(engine_file), "engine_built": built})


def _make_logger(trt):
    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity, msg):
            if severity <= trt.ILogger.Severity.WARNING:
                self.messages.append(str(msg))

    return _Logger()


def _build(trt, logger, data: bytes, *, batch: int) -> bytes:
    builder = trt.Builder(logger)
    flags = 0
    major = int(trt.__version__.split(".")[0])
    if major < 11 and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(data):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise MeasurementFailed(f"TensorRT {trt.__version__} could not parse the ONNX: " + "; ".join(errors))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    if hasattr(trt.BuilderFlag, "SPARSE_WEIGHTS"):  # 2:4 weights may take sparse tactics; others stay dense
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # what ran per layer (realised_precision)
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        if -1 in tuple(inp.shape):
            shape = tuple(batch if d == -1 else d for d in inp.shape)
            profile = builder.create_optimization_profile()
            profile.set_shape(inp.name, shape, shape, shape)
            config.add_optimization_profile(profile)
    log.info("building a TensorRT %s engine (strongly typed, batch %d); this can take minutes", trt.__version__, batch)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise MeasurementFailed(f"TensorRT {trt.__version__} could not build an engine: " + "; ".join(logger.messages[-5:]))
    return bytes(plan)
