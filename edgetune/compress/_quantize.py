"""Static int8 quantization in QDQ form through ``onnxruntime.quantization`` (the onnxruntime backend).

``quant_pre_process`` first (shape inference + graph optimisation), then ``quantize_static`` with a
FRESH calibration reader per run (a reader is consumed once), per-channel weights, the op types and the
activation type of the device kinds' recipe, and the float layers in ``nodes_to_exclude``.
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

import numpy as np

from edgetune._logging import get_logger
from edgetune.errors import CompressionError
from edgetune.spaces import QuantSettings

log = get_logger(__name__)

__all__ = ["preprocess", "quantize_qdq", "calibration_arrays"]

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
                 input_name: str) -> Path:
    """Quantize the pre-processed model ``src`` to ``dst`` (QDQ); ``exclude`` nodes stay float."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.calibration]
    extra = {"ActivationSymmetric": settings.activation_symmetric, "WeightSymmetric": settings.weight_symmetric}
    op_types = list(settings.op_types)
    if settings.placement == "openvino":  # Q/DQ at conv inputs only (see QuantSettings.placement)
        extra["OpTypesToExcludeOutputQuantization"] = list(OPENVINO_FLOAT_OUTPUTS)
        op_types = [t for t in op_types if t not in OPENVINO_FLOAT_OPS]
    if settings.calibration == "percentile":
        extra["CalibPercentile"] = settings.percentile
    ort_log = logging.getLogger("root")
    level = ort_log.level
    try:
        ort_log.setLevel(logging.ERROR)  # the quantizer logs its advice at WARNING on the root logger
        quantize_static(
            str(src), str(dst), _reader(calib, input_name), quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types, per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            activation_type=QuantType.QUInt8 if settings.activation_type == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, nodes_to_exclude=list(exclude), calibrate_method=method,
            extra_options=extra,
        )
    except Exception as exc:  # onnxruntime raises plain exceptions of many types
        raise CompressionError(f"onnxruntime quantization failed ({type(exc).__name__}: {exc}). Try "
                               "`space.calibration: minmax` or keep the failing layer fp32.") from exc
    finally:
        ort_log.setLevel(level)
    return dst
