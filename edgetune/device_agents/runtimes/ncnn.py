"""NCNN (``ncnn`` package), the runtime Raspberry Pi users run: the agent receives ONNX like every other
runtime and converts it to NCNN's param/bin itself, once per model, with pnnx.

Conversion: ``pnnx`` (the converter binary shipped inside the ``pnnx`` package, run as a subprocess; the
package's Python side imports torch, the agent never imports it) turns the ONNX into ``model.ncnn.param``
/ ``model.ncnn.bin`` with ``fp16=0`` (weights kept fp32 in the file, as Ultralytics' fp32 NCNN export),
in a scratch folder of ``cache_dir``, moved into place whole under a key of the ONNX file's sha256, the
pnnx version and the input shape (:func:`conversion_cache_key`), so each model converts once per device.
A conversion pnnx cannot finish, or that leaves operators NCNN has no layer for (pnnx keeps those as
``pnnx.*`` / ``Tensor.*`` placeholders and still exits 0), is MeasurementFailed naming pnnx and the model.

Precision: the artifact must be fp32. QDQ (int8) graphs are refused: pnnx folds the weight
DequantizeLinear into fp32 weights and leaves activation Quantize/DequantizeLinear as placeholders NCNN
cannot load; NCNN's own int8 path (ncnn2table calibration + ncnn2int8) is future work. fp16 casts
(edgetune's fp16 artifacts) are refused too: pnnx keeps the fp16 convolutions and Casts as placeholders.
At run time NCNN picks its own reduced precision, and its defaults are kept (``use_fp16_storage``,
``use_fp16_packed``, ``use_fp16_arithmetic`` on): on ARMv8.2 cores with fp16 vector arithmetic (the
Pi 5's Cortex-A76) convolutions compute in fp16; elsewhere layers may store weights in fp16 and compute
in fp32 (x86 with AVX). ``detail`` lists the options and the CPU features, and the accuracy the agent
reports is measured through the same session, so the precision NCNN chose is what is scored.

``providers``: ``CPU`` only (NCNN's Vulkan GPU path is not offered). NCNN has no batch dimension: a batch
runs as one extraction per image, the outputs stacked.

What ran where: x86-64 (this project's 2-core AVX2 machines, ncnn 1.0.20261020, pnnx 20261020). Not run
on a Raspberry Pi here.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from edgetune._imports import require
from edgetune.device_agents.protocol import RuntimeInfo
from edgetune.device_agents.runtimes._base import ModelSession, Runtime, register_runtime
from edgetune.errors import MeasurementFailed, MissingDependency

__all__ = ["NcnnRuntime", "NcnnSession", "conversion_cache_key", "pnnx_executable", "INSTALL_HINT"]

_PURPOSE = "The NCNN device runtime"
# pnnx's wheel declares torch as a requirement, although its converter binary links no torch: on a board,
# install pnnx without its dependencies
INSTALL_HINT = 'pip install "ncnn>=1.0.2026" && pip install --no-deps "pnnx>=20260101"'
CONVERT_TIMEOUT_S = 600.0
_QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                            "QLinearMatMul", "ConvInteger", "MatMulInteger"})
_FLOAT = 1  # onnx TensorProto.FLOAT
_FLOAT16 = 10


def pnnx_executable() -> Path | None:
    """The converter binary inside the installed ``pnnx`` package, found without importing the package
    (its ``__init__`` imports torch); None when pnnx is not installed."""
    try:
        spec = importlib.util.find_spec("pnnx")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for name in ("pnnx", "pnnx.exe"):
            exe = Path(folder) / name
            if exe.is_file() and os.access(exe, os.X_OK):
                return exe
    return None


def _pnnx_version() -> str:
    try:
        return metadata.version("pnnx")
    except metadata.PackageNotFoundError:
        return "unknown"


def conversion_cache_key(*, onnx_sha256: str, pnnx_version: str, input_shape: Sequence[int]) -> str:
    """The folder name of one conversion: the same ONNX bytes, pnnx version and input shape give the same
    NCNN files; any change converts again."""
    text = f"{onnx_sha256}|pnnx {pnnx_version}|input {list(input_shape)}|fp16=0"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class NcnnSession(ModelSession):
    def __init__(self, net, *, input_name: str, input_shape: tuple[int, ...], output_name: str,
                 output_shape: tuple[int, ...] | None, detail: dict[str, Any], scratch: Path | None):
        self._net = net
        self._in = net.input_names()[0]
        self._out = "out0" if "out0" in net.output_names() else net.output_names()[0]
        self.input_name = input_name
        self.input_shape = input_shape
        self.input_dtype = np.dtype(np.float32)
        self._output_shape = output_shape
        self.output_name = output_name
        self.providers_used = ["CPU"]
        self.detail = detail
        self._scratch = scratch

    def run(self, x: np.ndarray) -> np.ndarray:
        import ncnn

        outs = []
        for image in x:
            # ncnn.Mat wraps the array's memory without owning it: keep the array referenced until the
            # extraction is done (a temporary here reads freed memory: wrong outputs or a crash)
            data = np.ascontiguousarray(image, dtype=np.float32)
            mat = ncnn.Mat(data)
            ex = self._net.create_extractor()
            ex.input(self._in, mat)
            ret, out = ex.extract(self._out)
            if ret != 0:
                raise MeasurementFailed(f"NCNN could not compute output {self.output_name!r} (extract returned {ret}).")
            arr = np.array(out, dtype=np.float32, copy=True)
            if self._output_shape is not None:
                arr = arr.reshape(self._output_shape[1:])
            outs.append(arr)
            del ex, mat, data
        return np.stack(outs)

    def close(self) -> None:
        if self._net is not None:
            self._net.clear()
        self._net = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None


@register_runtime("ncnn")
class NcnnRuntime(Runtime):
    """NCNN on the CPU with fixed threads; the ONNX is converted with pnnx at load (cached)."""

    def info(self) -> RuntimeInfo:
        try:
            import ncnn
        except ImportError as exc:
            return RuntimeInfo(name="ncnn", error=f"ncnn is not importable ({exc}): {INSTALL_HINT}")
        version = str(getattr(ncnn, "__version__", "") or metadata.version("ncnn"))
        if pnnx_executable() is None:
            return RuntimeInfo(name="ncnn", version=version, error=(
                f"the pnnx converter is not installed (the agent converts each ONNX to NCNN with it): {INSTALL_HINT}"))
        return RuntimeInfo(name="ncnn", version=version, available_providers=["CPU"])

    def default_providers(self) -> list[str]:
        return ["CPU"]

    def load(self, path: Path, *, threads: int, providers: Sequence[str] | None = None,
             cache_dir: Path | None = None, batch: int = 1) -> ModelSession:
        ncnn = require("ncnn", extra="ncnn", purpose=_PURPOSE)
        version = str(getattr(ncnn, "__version__", "") or metadata.version("ncnn"))
        exe = pnnx_executable()
        if exe is None:
            raise MissingDependency(f"{_PURPOSE} converts ONNX with pnnx, which is not installed: {INSTALL_HINT}")
        requested = list(providers or self.default_providers())
        if requested != ["CPU"]:
            raise MeasurementFailed(f"NCNN {version} runs here on the CPU only; got providers {requested}. "
                                    "Request CPU (NCNN's Vulkan GPU path is not offered).")
        path = Path(path)
        graph = _read_graph(path, version)
        scratch = None
        if cache_dir is None:
            scratch = Path(tempfile.mkdtemp(prefix="edgetune-ncnn-"))
        root = Path(cache_dir) / "ncnn" if cache_dir is not None else scratch
        started = time.perf_counter()
        folder, converted = _convert(exe, path, graph, root, ncnn_version=version)
        net = ncnn.Net()
        net.opt.num_threads = int(threads)
        net.opt.use_vulkan_compute = False
        if net.load_param(str(folder / "model.ncnn.param")) != 0 or net.load_model(str(folder / "model.ncnn.bin")) != 0:
            raise MeasurementFailed(f"NCNN {version} could not load the pnnx conversion of '{path.name}' "
                                    f"(kept in {folder}).")
        opt = net.opt
        detail: dict[str, Any] = {
            "threads": int(threads),
            "use_fp16_storage": bool(opt.use_fp16_storage), "use_fp16_packed": bool(opt.use_fp16_packed),
            "use_fp16_arithmetic": bool(opt.use_fp16_arithmetic), "use_bf16_storage": bool(opt.use_bf16_storage),
            "use_packing_layout": bool(opt.use_packing_layout), "use_vulkan_compute": False,
            "cpu_arm_fp16_arithmetic": bool(ncnn.cpu_support_arm_asimdhp()),
            "cpu_x86_avx2": bool(ncnn.cpu_support_x86_avx2()),
            "weights": "fp32 (pnnx fp16=0)", "pnnx": _pnnx_version(),
            "conversion": "converted" if converted else "cached", "load_s": round(time.perf_counter() - started, 3),
        }
        return NcnnSession(net, input_name=graph["input_name"], input_shape=graph["input_shape"],
                           output_name=graph["output_name"], output_shape=graph["output_shape"], detail=detail,
                           scratch=scratch)


def _read_graph(path: Path, version: str) -> dict[str, Any]:
    """Input/output names and shapes of the ONNX, and the refusals this runtime owns (int8, fp16, batch)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # DecodeError and friends: a truncated or foreign file
        raise MeasurementFailed(f"NCNN {version}: '{path.name}' is not a readable ONNX model ({exc}).") from exc
    g = model.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if not inputs or not g.output or not g.node:
        raise MeasurementFailed(f"NCNN {version}: '{path.name}' has no graph inputs, outputs or nodes.")
    ops = {n.op_type for n in g.node}
    quantized = sorted(ops & _QUANTIZED_OPS)
    if quantized:
        raise MeasurementFailed(
            f"NCNN {version} takes fp32 artifacts here, but '{path.name}' is quantized ({', '.join(quantized)}): pnnx "
            "converts no QDQ graph NCNN can load. Measure int8 on ort or openvino; int8 through NCNN's own "
            "tools (ncnn2table + ncnn2int8) is future work.")
    fp16 = any(i.data_type == _FLOAT16 for i in g.initializer) or any(
        a.name == "to" and a.i == _FLOAT16 for n in g.node if n.op_type == "Cast" for a in n.attribute)
    if fp16:
        raise MeasurementFailed(
            f"NCNN {version} takes fp32 artifacts here, but '{path.name}' carries fp16 layers: pnnx does not convert "
            "fp16 casts. Send the fp32 artifact: NCNN stores and computes in fp16 by itself where the CPU has it.")
    inp, out = inputs[0], g.output[0]
    if inp.type.tensor_type.elem_type != _FLOAT:
        raise MeasurementFailed(f"NCNN {version} feeds float32 inputs; input '{inp.name}' of '{path.name}' is not float32.")
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                 for d in inp.type.tensor_type.shape.dim)
    if len(dims) < 2 or any(d < 0 for d in dims[1:]):
        raise MeasurementFailed(f"NCNN {version}: input '{inp.name}' of '{path.name}' has shape {dims}; NCNN needs a "
                                "fixed input size (edgetune's export has one).")
    if dims[0] not in (1, -1):
        raise MeasurementFailed(f"NCNN {version} runs one image at a time; input '{inp.name}' of '{path.name}' has a "
                                f"fixed batch of {dims[0]}. Export with batch 1 or a dynamic batch.")
    odims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
                  for d in out.type.tensor_type.shape.dim)
    return {"input_name": inp.name, "input_shape": dims, "output_name": out.name,
            "output_shape": odims if odims and all(d > 0 for d in odims[1:]) else None}


def _convert(exe: Path, onnx_path: Path, graph: dict[str, Any], root: Path, *,
             ncnn_version: str) -> tuple[Path, bool]:
    """The folder holding ``model.ncnn.param`` / ``.bin`` for this ONNX, converting it when not cached."""
    data = onnx_path.read_bytes()
    version = f"{_pnnx_version()} (for NCNN {ncnn_version})"
    shape = [1, *graph["input_shape"][1:]]
    final = root / conversion_cache_key(onnx_sha256=hashlib.sha256(data).hexdigest(), pnnx_version=_pnnx_version(),
                                        input_shape=shape)
    if (final / "model.ncnn.param").is_file() and (final / "model.ncnn.bin").is_file():
        return final, False
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=root))
    try:
        (work / "model.onnx").write_bytes(data)
        cmd = [str(exe), "model.onnx", f"inputshape=[{','.join(map(str, shape))}]", "fp16=0", "device=cpu",
               "ncnnparam=model.ncnn.param", "ncnnbin=model.ncnn.bin"]
        try:
            r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=CONVERT_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise MeasurementFailed(f"pnnx {version} did not convert '{onnx_path.name}' to NCNN within "
                                    f"{CONVERT_TIMEOUT_S:.0f} s.") from exc
        log = (r.stdout or "") + (r.stderr or "")
        param = work / "model.ncnn.param"
        if r.returncode != 0 or not param.is_file() or not (work / "model.ncnn.bin").is_file():
            tail = _reason(log)
            raise MeasurementFailed(f"pnnx {version} could not convert '{onnx_path.name}' to NCNN (exit "
                                    f"{r.returncode}): {tail or 'no output'}")
        unknown = _unmapped_layers(param)
        if unknown:
            raise MeasurementFailed(f"pnnx {version} converted '{onnx_path.name}' but left operators NCNN has no layer "
                                    f"for: {', '.join(unknown[:8])}. This model cannot run on NCNN as exported.")
        keep = Path(tempfile.mkdtemp(prefix=".ready-", dir=root))
        for name in ("model.ncnn.param", "model.ncnn.bin"):
            os.replace(work / name, keep / name)
        try:
            os.rename(keep, final)  # whole folder at once: a reader never sees half a conversion
        except OSError:  # another process finished the same conversion first
            shutil.rmtree(keep, ignore_errors=True)
        return final, True
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _reason(log: str) -> str:
    """The lines of pnnx's log that say what failed (its progress table and timings left out)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in log.splitlines()]
    lines = [line for line in lines if line]
    said = [line for line in lines if re.search(r"(?i)error|fail|unsupported|not support|exception", line)]
    return " | ".join((said or lines)[-3:])[-1500:]


def _unmapped_layers(param: Path) -> list[str]:
    """Layer types in an NCNN param file that this ncnn build cannot create (pnnx placeholders)."""
    import ncnn

    kinds: set[str] = set()
    for line in param.read_text(errors="replace").splitlines()[2:]:
        parts = line.split()
        if parts:
            kinds.add(parts[0])
    return sorted(k for k in kinds if ncnn.create_layer(k) is None)
