"""Static int8 quantization in QDQ form through ``onnxruntime.quantization`` (the onnxruntime backend).

``quant_pre_process`` first (shape inference + graph optimisation), then ``quantize_static`` with a
FRESH calibration reader per run (a reader is consumed once), per-channel weights, the op types and the
activation type of the device kinds' recipe, and the float layers in ``nodes_to_exclude``.

Both steps depend on the fp32 graph, not on which layers a config keeps float: a sweep quantizes each
pruned model many times (one per precision config), so the pre-processed graph and the calibrated tensor
ranges (``quantize_static``'s ``calibration_cache_path``, onnxruntime >= 1.32) are kept per fp32 graph in a
:class:`QuantCache` and reused. The ranges are keyed by everything the calibrator reads: the graph, the
calibration images, the method and its settings, and the op types whose tensors it collects.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from edgetune._logging import get_logger
from edgetune.errors import CompressionError
from edgetune.spaces import QuantSettings

log = get_logger(__name__)

__all__ = ["preprocess", "quantize_qdq", "calibration_arrays", "QuantCache"]

# placement "openvino": the op types whose outputs get no Q/DQ (OpenVINO fuses the activation that follows a
# Conv into it, and a Q/DQ in between splits the fusion: 104 separate SiLU+FakeQuantize kernels on yolo11n),
# and the op types left float (a Concat of inputs at different scales is requantized in separate kernels;
# float, it is one copy and the next conv quantizes once).
OPENVINO_FLOAT_OUTPUTS = ("Conv",)
OPENVINO_FLOAT_OPS = ("Concat",)


def calibration_arrays(calib, *, size: int) -> np.ndarray:
    """Calibration inputs (N, 3, S, S) float32 in [0, 1]: from a Dataset (letterboxed) or an array."""
    if isinstance(calib, np.ndarray):
        x = np.ascontiguousarray(calib, dtype=np.float32)
        if x.ndim != 4 or x.shape[1:] != (3, size, size):
            raise CompressionError(f"calibration array has shape {x.shape}; expected (N, 3, {size}, {size}).")
        return x
    from edgetune.data import letterbox, to_input

    if calib is None or len(calib) == 0:
        raise CompressionError("int8 quantization needs calibration images, but the calib split is empty. "
                               "Set `data.calib_images` (64 is a good default).")
    return to_input(np.stack([letterbox(calib.load_image(i), size)[0] for i in range(len(calib))]))


def preprocess(src: Path, dst: Path) -> Path:
    """``quant_pre_process`` (ORT's recommended step before quantization): folds and fuses, infers shapes."""
    from onnxruntime.quantization import quant_pre_process

    with contextlib.redirect_stdout(io.StringIO()):
        quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


class QuantCache:
    """Per fp32 graph (by content and onnxruntime version): its pre-processed graph and its calibrated tensor
    ranges, under ``root`` (``<workdir>/quant``). Files are written whole (temp file + rename), so processes
    sharing a workdir may race (the worst case is work done twice); a range file onnxruntime cannot use is
    deleted and calibrated again."""

    def __init__(self, root: Path, src: Path):
        from onnxruntime import __version__ as ort_version

        digest = hashlib.sha256(Path(src).read_bytes())
        digest.update(f"|onnxruntime {ort_version}".encode())  # another release may pre-process differently
        self.dir = Path(root) / digest.hexdigest()[:32]

    def preprocess(self, src: Path, dst: Path, timings: dict | None = None) -> Path:
        """``dst`` holds ``preprocess(src)``: copied from the cache, or computed and added to it."""
        from edgetune._paths import atomic_write_bytes

        kept = self.dir / "pre.onnx"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if kept.is_file():
            shutil.copyfile(kept, dst)
            if timings is not None:
                timings["preprocess_from_cache"] = True
            return dst
        preprocess(src, dst)
        atomic_write_bytes(kept, dst.read_bytes())
        return dst

    def ranges(self, *, calib: np.ndarray, calib_hash: str, settings: QuantSettings, op_types: list[str],
               extra: dict) -> Path:
        """The file that holds (or will hold) the calibrated ranges for these inputs (``calib_hash``: the
        sha256 of ``calib``'s bytes, as ``compress`` keys its artifacts)."""
        ident = {"v": 1, "calib": calib_hash, "shape": list(calib.shape), "method": settings.calibration,
                 "percentile": settings.percentile if settings.calibration == "percentile" else None,
                 "op_types": sorted(op_types), "extra": {k: extra[k] for k in sorted(extra)}}
        key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]
        return self.dir / f"ranges-{key}.json"


@contextlib.contextmanager
def _pool_within_affinity():
    """While it runs, ``onnxruntime.SessionOptions()`` starts with this process's allowed CPU count as its
    thread count. A session given no count gets one worker per physical core, each pinned to its core
    whatever the process's CPU mask, and ``quantize_static`` builds its calibration session that way: a
    controller pinned off a local agent's core (``search.overlap``) would calibrate on that core."""
    import onnxruntime

    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: no mask to keep to
        yield
        return
    base = onnxruntime.SessionOptions

    def options(*args, **kwargs):
        so = base(*args, **kwargs)
        so.intra_op_num_threads = n
        return so

    onnxruntime.SessionOptions = options
    try:
        yield
    finally:
        onnxruntime.SessionOptions = base


def _ranges_supported() -> bool:
    """Whether this onnxruntime's ``quantize_static`` takes ``calibration_cache_path`` (added in 1.32)."""
    from onnxruntime.quantization import quantize_static

    return "calibration_cache_path" in inspect.signature(quantize_static).parameters


def _reader(arrays: np.ndarray, input_name: str):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        """One image per ``get_next`` (the graph has a static batch of 1)."""

        def __init__(self) -> None:
            self._i = 0

        def get_next(self):
            if self._i >= len(arrays):
                return None
            self._i += 1
            return {input_name: arrays[self._i - 1 : self._i]}

        def rewind(self) -> None:
            self._i = 0

    return Reader()


def quantize_qdq(src: Path, dst: Path, *, calib: np.ndarray, settings: QuantSettings, exclude: list[str],
                 input_name: str, cache: QuantCache | None = None, calib_hash: str | None = None,
                 timings: dict | None = None) -> Path:
    """Quantize the pre-processed model ``src`` to ``dst`` (QDQ); ``exclude`` nodes stay float. With
    ``cache``, the calibrated ranges of ``src`` are taken from it (or added to it); ``calib_hash`` is the
    sha256 of ``calib``'s bytes when the caller has it (50 MB of images hash in 0.06 s)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from edgetune._paths import atomic_write_bytes

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.calibration]
    extra = {"ActivationSymmetric": settings.activation_symmetric, "WeightSymmetric": settings.weight_symmetric}
    op_types = list(settings.op_types)
    if settings.placement == "openvino":  # Q/DQ at conv inputs only (see QuantSettings.placement)
        extra["OpTypesToExcludeOutputQuantization"] = list(OPENVINO_FLOAT_OUTPUTS)
        op_types = [t for t in op_types if t not in OPENVINO_FLOAT_OPS]
    if settings.calibration == "percentile":
        extra["CalibPercentile"] = settings.percentile
    ranges = kept = None
    hit = False
    if cache is not None and _ranges_supported():
        calib_hash = calib_hash or hashlib.sha256(np.ascontiguousarray(calib).tobytes()).hexdigest()
        kept = cache.ranges(calib=calib, calib_hash=calib_hash, settings=settings, op_types=op_types, extra=extra)
        ranges = dst.with_name(dst.stem + ".ranges.json")  # onnxruntime writes it in place: a private copy
        ranges.unlink(missing_ok=True)
        if kept.is_file():
            shutil.copyfile(kept, ranges)
            hit = True

    def run() -> None:
        with _pool_within_affinity():
            quantize_static(
                str(src), str(dst), _reader(calib, input_name), quant_format=QuantFormat.QDQ,
                op_types_to_quantize=op_types, per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                activation_type=QuantType.QUInt8 if settings.activation_type == "uint8" else QuantType.QInt8,
                weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude), calibrate_method=method,
                extra_options=extra, **({"calibration_cache_path": str(ranges)} if ranges is not None else {}),
            )

    ort_log = logging.getLogger("root")
    level = ort_log.level
    try:
        ort_log.setLevel(logging.ERROR)  # the quantizer logs its advice at WARNING on the root logger
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - a cached range file onnxruntime cannot use: calibrate again
            if not hit:
                raise
            log.warning("calibration cache %s is unusable (%s: %s); calibrating again", kept, type(exc).__name__, exc)
            kept.unlink(missing_ok=True)
            ranges.unlink(missing_ok=True)
            hit = False
            run()
    except Exception as exc:  # onnxruntime raises plain exceptions of many types
        raise CompressionError(f"onnxruntime quantization failed ({type(exc).__name__}: {exc}). Try "
                               "`space.calibration: minmax` or keep the failing layer fp32.") from exc
    finally:
        ort_log.setLevel(level)
    if hit and timings is not None:
        timings["calibration_from_cache"] = True
    if ranges is not None and kept is not None and ranges.is_file() and not kept.is_file():
        atomic_write_bytes(kept, ranges.read_bytes())
    return dst
