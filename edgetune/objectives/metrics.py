"""The metrics a sweep can optimise or constrain, in one table.

Values travel as flat dicts keyed ``metric`` (device-independent: sizes) or ``metric@device``
(measured on a device: accuracy from that device's runtime outputs, latency, memory, energy).
"""

from __future__ import annotations

from dataclasses import dataclass

from edgetune.errors import ConfigError

__all__ = ["Metric", "METRICS", "get_metric", "metric_key"]


@dataclass(frozen=True)
class Metric:
    name: str
    goal: str  # "max" | "min"
    on_device: bool
    unit: str
    help: str


_TABLE = [
    ("map50_95", "max", True, "", "COCO mAP@[.5:.95] from the device runtime's outputs"),
    ("map50", "max", True, "", "COCO mAP@.5"),
    ("map75", "max", True, "", "COCO mAP@.75"),
    ("map_small", "max", True, "", "COCO mAP, small objects"),
    ("map_medium", "max", True, "", "COCO mAP, medium objects"),
    ("map_large", "max", True, "", "COCO mAP, large objects"),
    ("top1", "max", True, "", "top-1 accuracy (classification)"),
    ("top5", "max", True, "", "top-5 accuracy (classification)"),
    ("latency_p50_ms", "min", True, "ms", "model-only latency, median"),
    ("latency_p90_ms", "min", True, "ms", "model-only latency, 90th percentile"),
    ("latency_p99_ms", "min", True, "ms", "model-only latency, 99th percentile"),
    ("latency_mean_ms", "min", True, "ms", "model-only latency, mean"),
    ("e2e_latency_p50_ms", "min", True, "ms", "end-to-end latency (letterbox + run + decode/NMS), median"),
    ("e2e_latency_p90_ms", "min", True, "ms", "end-to-end latency, 90th percentile"),
    ("peak_mem_mb", "min", True, "MB", "peak resident memory of the measuring process"),
    ("energy_mj", "min", True, "mJ", "energy per inference (boards with power sensors)"),
    ("power_w", "min", True, "W", "mean power while running (boards with power sensors)"),
    ("size_bytes", "min", False, "B", "ONNX file size"),
    ("compressed_bytes", "min", False, "B", "ONNX size after zstd (shows unstructured sparsity)"),
    ("params", "min", False, "", "parameters"),
    ("nonzero_params", "min", False, "", "non-zero parameters"),
    ("macs", "min", False, "", "multiply-accumulates at the input size (reported, never a latency proxy)"),
    ("bitops", "min", False, "", "bit-operations (MACs x weight bits x activation bits)"),
]

METRICS: dict[str, Metric] = {n: Metric(n, g, d, u, h) for n, g, d, u, h in _TABLE}


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        import difflib

        close = difflib.get_close_matches(name, METRICS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown metric {name!r}.{hint} Valid metrics: {', '.join(METRICS)}.")
    return METRICS[name]


def metric_key(name: str, device: str | None) -> str:
    """The key of a metric value in a trial's flat value dict."""
    return f"{name}@{device}" if get_metric(name).on_device else name
