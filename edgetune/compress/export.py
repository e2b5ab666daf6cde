"""ONNX export (single file, no ``.onnx.data``) with an onnxruntime parity check.

Uses torch's default (dynamo) exporter, which folds BatchNorm into Conv and records each node's module
path in the ``pkg.torch.onnx.name_scopes`` metadata (see :func:`node_module_paths`). The exporter takes
5-15 s for a nano detector; :func:`cached_export` keeps its output under ``$EDGETUNE_CACHE/exports`` by
the content of the module (:func:`export_key`), so the same weights are exported once per machine, not
once per sweep, workdir or ``edgetune eval``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune._logging import get_logger
from edgetune.errors import ExportError

log = get_logger(__name__)

__all__ = ["ExportReport", "export_onnx", "cached_export", "export_key", "parity", "node_module_paths", "INPUT_NAME",
           "OUTPUT_NAME"]

INPUT_NAME, OUTPUT_NAME = "images", "output"


@dataclass(frozen=True)
class ExportReport:
    path: Path
    bytes: int
    max_abs_diff: float
    tolerance: float
    from_cache: bool = False


def _fp32_rounding(model, x, ref) -> float:
    """max |torch fp32 - torch fp64| of ``model`` on ``x``: how far fp32 rounding alone moves its output. A
    badly conditioned model (e.g. a pruned random-init YOLO26n with attention: 0.21 on boxes of up to 650 px)
    differs between any two correct fp32 implementations by about that much. 0 when it cannot run in fp64."""
    import copy

    import numpy as np
    import torch

    try:
        with torch.no_grad():
            r64 = copy.deepcopy(model).double()(torch.from_numpy(x).double())
        r64 = (r64[0] if isinstance(r64, (tuple, list)) else r64).numpy()
        return float(np.abs(r64 - ref).max())
    except Exception:  # an op without a float64 kernel: no estimate
        return 0.0


def parity(model, onnx_path: Path, *, input_size: int, seed: int = 0) -> tuple[float, float]:
    """(max |ORT - torch|, the tolerance it is held to) on a seeded random input in [0, 1]. The tolerance is
    ``1e-4 + 1e-4 * max|output|``, widened to twice the model's own fp32 rounding error (:func:`_fp32_rounding`)
    when the difference exceeds it: an op exported wrongly moves the output far more than rounding does."""
    import onnxruntime as ort
    import torch

    x = np.random.default_rng(seed).random((1, 3, input_size, input_size), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).numpy()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    if out.shape != ref.shape:
        raise ExportError(f"exported model's output shape {out.shape} differs from torch's {ref.shape}.")
    diff = float(np.abs(out - ref).max())
    tol = 1e-4 + 1e-4 * float(np.abs(ref).max())
    if diff > tol:
        rounding = _fp32_rounding(model, x, ref)
        if diff <= tol + 2 * rounding:
            log.info("ORT differs from torch by %.3g, within twice the model's own fp32 rounding error (%.3g)", diff,
                     rounding)
        tol += 2 * rounding
    return diff, tol


def export_onnx(model, path: str | Path, *, input_size: int, check: bool = True, opset: int = 18) -> ExportReport:
    """Export ``model`` (eval mode) to one self-contained ONNX file and check it against torch.

    Raises ExportError when export fails, writes external data, or the onnxruntime output differs from
    torch by more than ``1e-4 + 1e-4 * max|output|``.
    """
    import onnx
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    x = torch.zeros(1, 3, input_size, input_size)
    noisy = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = noisy.level
    noisy.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" etc.
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], verbose=False)
    except Exception as exc:  # the exporter raises many types; all mean the same to the user
        raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {exc}") from exc
    finally:
        noisy.setLevel(level)
    data_file = path.with_name(path.name + ".data")
    if data_file.exists():
        raise ExportError(f"export wrote external data '{data_file}'; edgetune ships single-file ONNX only.")
    onnx.checker.check_model(str(path))
    diff, tol = parity(model, path, input_size=input_size) if check else (float("nan"), float("nan"))
    if check and not diff <= tol:
        raise ExportError(
            f"ONNX export of {type(model).__name__} does not match torch: max |onnxruntime - torch| = {diff:.3g} "
            f"> tolerance {tol:.3g}. An op is exported wrongly; run with --debug and report the model."
        )
    log.info("exported %s (%d bytes), max |ORT - torch| = %.3g", path, path.stat().st_size, diff)
    return ExportReport(path, path.stat().st_size, diff, tol)


def node_module_paths(model_proto) -> dict[str, str]:
    """ONNX node name -> torch module path (``stage2.1.cv1.conv``) from the dynamo exporter's metadata."""
    out: dict[str, str] = {}
    for node in model_proto.graph.node:
        for p in node.metadata_props:
            if p.key == "pkg.torch.onnx.name_scopes":
                scopes = [s.strip(" '\"") for s in p.value.strip("[]").split(",")]
                if len(scopes) >= 2:
                    out[node.name] = scopes[-2]
    return out


# torch.nn.Module's own bookkeeping in ``vars(module)``: hashed through the tree walk, or irrelevant
_MODULE_INTERNALS = frozenset({"training", "_parameters", "_buffers", "_non_persistent_buffers_set", "_modules",
                               "_backward_pre_hooks", "_backward_hooks", "_is_full_backward_hook", "_forward_hooks",
                               "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks",
                               "_forward_pre_hooks_with_kwargs", "_state_dict_hooks", "_state_dict_pre_hooks",
                               "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks"})


def _class_source(cls, seen: dict) -> str:
    if cls not in seen:
        import inspect

        try:
            seen[cls] = inspect.getsource(cls)
        except (OSError, TypeError):  # defined in a REPL or made at run time: its name only
            seen[cls] = ""
    return seen[cls]


def export_key(model, *, input_size: int, opset: int = 18) -> str:
    """sha256 of what the exported graph is made from: the versions of torch, onnxscript, edgetune and
    Ultralytics, this module's exporter settings, the opset and input size, and for every module of the tree
    its path, class (and the class's source), plain attributes (Ultralytics' ``Detect.export``, ``end2end``,
    ``max_det``, strides ...) and the bytes of each parameter and buffer. Two models with the same key
    export to the same graph; a hit is parity-checked all the same (:func:`cached_export`)."""
    import hashlib
    import importlib.metadata as md

    import torch

    h = hashlib.sha256()

    def add(*parts) -> None:
        for part in parts:
            h.update(part if isinstance(part, bytes) else repr(part).encode())
            h.update(b"\0")

    versions = []
    for dist in ("torch", "onnxscript", "onnx", "edgetune", "ultralytics"):
        try:
            versions.append(md.version(dist))
        except md.PackageNotFoundError:
            versions.append(None)
    add(versions, _class_source(export_onnx, {}), opset, int(input_size))
    sources: dict = {}
    for path, module in model.named_modules():
        cls = type(module)
        add(path, f"{cls.__module__}.{cls.__qualname__}", _class_source(cls, sources))
        for key, value in sorted(vars(module).items()):
            if key in _MODULE_INTERNALS or callable(value):
                continue
            if isinstance(value, torch.Tensor):
                value = value.detach().cpu().contiguous().numpy()
            add(key, (str(value.dtype), value.shape, value.tobytes()) if isinstance(value, np.ndarray) else value)
        for key, tensor in [*module._parameters.items(), *module._buffers.items()]:
            if tensor is not None:
                add(key, str(tensor.dtype), tuple(tensor.shape), tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cached_export(model, path: str | Path, *, input_size: int, cache: Path | None = None) -> ExportReport:
    """:func:`export_onnx` through a cache of exports by :func:`export_key` (``cache``, default
    ``$EDGETUNE_CACHE/exports``). A hit is copied to ``path`` and parity-checked against ``model`` as a fresh
    export is (~0.3 s instead of the exporter's 5-15 s); a hit that fails the check is exported again and
    replaced, so a stale entry can cost time, never a wrong model."""
    import shutil

    from edgetune._paths import atomic_write_bytes, cache_dir

    path = Path(path)
    model = model.eval()
    cache = Path(cache) if cache is not None else cache_dir() / "exports"
    entry = cache / f"{export_key(model, input_size=input_size)}.onnx"
    if entry.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(entry, path)
        try:
            diff, tol = parity(model, path, input_size=input_size)
        except Exception as exc:  # a torn or foreign file: export again
            log.warning("cached export %s unreadable (%s): exporting again", entry, exc)
            diff, tol = float("inf"), 0.0
        if diff <= tol:
            log.info("export served from the cache %s, max |ORT - torch| = %.3g", entry, diff)
            return ExportReport(path, path.stat().st_size, diff, tol, from_cache=True)
        log.warning("cached export %s differs from the model (%.3g > %.3g): exporting again", entry, diff, tol)
    report = export_onnx(model, path, input_size=input_size)
    try:
        atomic_write_bytes(entry, path.read_bytes())
    except OSError as exc:  # a read-only or full cache costs the next run an export, nothing else
        log.warning("could not keep the export in %s: %s", cache, exc)
    return report
