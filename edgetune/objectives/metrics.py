"""The metrics a sweep can optimise or constrain, in one table.

Values travel as flat dicts keyed ``metric`` (device-independent: sizes) or ``metric@device``
(measured on a device: accuracy from that device's runtime outputs, latency, memory, energy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edgetune.errors import ConfigError

__all__ = ["Metric", "METRICS", "ALIASES", "get_metric", "metric_key", "canonical_metric", "canonical_names"]


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
    ("latency_ratio", "min", True, "", "model-only median latency over the fp32 reference's, the two timed in turns "
     "in the same request (paired, `search.paired_timing`): 1 / the speed-up"),
    ("latency_ratio_p90", "min", True, "", "the same ratio of the 90th percentiles"),
    ("ref_latency_p50_ms", "min", True, "ms", "the fp32 reference's median in the trial's paired timing: how fast "
     "the device was when the trial was measured"),
    ("ref_latency_p90_ms", "min", True, "ms", "the fp32 reference's 90th percentile in the trial's paired timing"),
    ("own_latency_p50_ms", "min", True, "ms", "model-only median as the trial's own timing loop measured it, before "
     "the paired rescaling of latency_p50_ms (moves with the device's drift and load)"),
    ("own_latency_p90_ms", "min", True, "ms", "the same for the 90th percentile"),
    ("e2e_latency_p50_ms", "min", True, "ms", "end-to-end latency (letterbox + run + decode/NMS), median"),
    ("e2e_latency_p90_ms", "min", True, "ms", "end-to-end latency, 90th percentile"),
    ("peak_mem_mb", "min", True, "MB", "peak resident memory of the whole measuring process (runtime, model "
     "and the validation bundle: it moves with the input size and the dataset)"),
    ("model_mem_mb", "min", True, "MB", "the model's own memory: resident memory its runtime session added "
     "from before it was created to after it loaded"),
    ("run_mem_mb", "min", True, "MB", "the model's memory while running: the session's resident memory "
     "after the model-only timed loop (weights + activation arena)"),
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

# the names tables and plots show (and other tools use), accepted wherever a metric is named; any case
ALIASES: dict[str, str] = {
    "map50-95": "map50_95", "map@.5:.95": "map50_95", "map@.5": "map50", "map@.75": "map75",
    "top-1": "top1", "top-5": "top5",
    "p50": "latency_p50_ms", "p50_ms": "latency_p50_ms", "latency": "latency_p50_ms", "p90": "latency_p90_ms",
    "p90_ms": "latency_p90_ms", "p99": "latency_p99_ms", "p99_ms": "latency_p99_ms", "mean_ms": "latency_mean_ms",
    "e2e_p50": "e2e_latency_p50_ms", "e2e_p90": "e2e_latency_p90_ms",
    "size": "size_bytes", "bytes": "size_bytes", "memory": "peak_mem_mb", "energy": "energy_mj", "power": "power_w",
}
_BY_LOWER = {**{n.lower(): n for n in METRICS}, **ALIASES}
# longest first, so that mAP50-95 is not read as mAP50; a name never continues into a word or a '-digit'
_NAME = re.compile("(?<![A-Za-z0-9_])(" + "|".join(re.escape(k) for k in sorted(_BY_LOWER, key=len, reverse=True))
                   + r")(?![A-Za-z0-9_]|-\d)", re.IGNORECASE)


def canonical_metric(name: str) -> str:
    """The canonical name of a metric given by its name or an alias (any case); unknown names unchanged."""
    return _BY_LOWER.get(name.strip().lower(), name.strip())


def canonical_names(text: str) -> str:
    """``text`` (a constraint or a pick rule) with every metric alias replaced by its canonical name:
    ``mAP50-95 >= 0.7`` -> ``map50_95 >= 0.7`` (not ``mAP50 - 95``). Device names after '@' are kept."""
    out, pos = [], 0
    for m in _NAME.finditer(text):
        if text[: m.start()].rstrip().endswith("@"):  # a device name, not a metric
            continue
        out += [text[pos : m.start()], _BY_LOWER[m.group(1).lower()]]
        pos = m.end()
    return "".join([*out, text[pos:]])


def get_metric(name: str) -> Metric:
    if name not in METRICS:
        import difflib

        close = difflib.get_close_matches(name, METRICS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown metric {name!r}.{hint} Valid metrics: {', '.join(METRICS)} (or the names the "
                          f"tables show: {', '.join(k for k in ALIASES if '@' not in k and ':' not in k)}).")
    return METRICS[name]


def metric_key(name: str, device: str | None) -> str:
    """The key of a metric value in a trial's flat value dict."""
    return f"{name}@{device}" if get_metric(name).on_device else name
