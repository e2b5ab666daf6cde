"""Side-by-side latency check of the front against fp32, at the end of a sweep.

Each trial is timed once, when it runs; a sweep takes minutes to hours, and a device's speed drifts over
that time (thermal state, clocks, other tenants of a shared host: on the 2-core VM this was built on,
one model's p50 over 100-run windows moved between 5.9 and 7.7 ms within a minute). A speed-up computed
from the fp32 baseline timed at minute 0 and a candidate timed at minute 40 carries that drift. So when
the sweep ends, the fp32 baseline and every front member are timed again on each latency device, all
in one process on the device (``POST /compare``), taking turns in short bursts, so every model sees the
same device state. The speed-ups the CLI, ``pareto.csv`` and MLflow report come from these timings when
they exist; the objectives stay what each trial measured.

The result is kept in the study's user attrs (``side_by_side``), so ``edgetune front`` shows it without
devices; MLflow gets ``sbs_<metric>.<device>`` and ``sbs_speedup.<device>`` on each member's child run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from edgetune.objectives import LATENCY_STATS

__all__ = ["SBS_ATTR", "PREFIX", "CI_LOW", "CI_HIGH", "latency_keys", "run_side_by_side", "sbs_columns"]

SBS_ATTR = "side_by_side"
PREFIX = "sbs_"
CI_LOW, CI_HIGH = "ci95_low_", "ci95_high_"  # frame column prefixes: the 95% CI of a latency median
_STATS = {k: LATENCY_STATS[k] for k in ("latency_p50_ms", "latency_p90_ms")}  # the ones re-timed side by side


def latency_keys(keys: Sequence[str]) -> dict[str, list[str]]:
    """device -> the model-only latency metrics (``latency_p50_ms`` / ``latency_p90_ms``) the objectives
    name on it; p50 is always checked, since the speed-up is reported from it."""
    out: dict[str, list[str]] = {}
    for k in keys:
        metric, _, device = k.partition("@")
        if metric in _STATS and device:
            out.setdefault(device, ["latency_p50_ms"])
            if metric not in out[device]:
                out[device].append(metric)
    return out


def run_side_by_side(members: dict[int, tuple[str, str | None]], *, devices: dict[str, list[str]],
                     compare: Callable[[list[tuple[str, str | None]], str], dict[tuple, dict]]) -> dict:
    """Time every member (trial number -> (ONNX path, runtime)) side by side on every device; a member
    measured on another runtime than the baseline (``space.runtime``) is timed on its own runtime.

    ``compare(entries, device)`` returns each (path, runtime)'s latency stats (``p50_ms``, ``p90_ms``,
    ``ci95_low_ms``, ``ci95_high_ms``, ``n``) from one interleaved timing on the device. Returns
    ``{"at", "values": {trial: {"latency_p50_ms@dev": v, ...}}, "ci95": {trial: {dev: [low, high]}}, "n"}``.
    """
    values: dict[str, dict[str, float]] = {str(n): {} for n in members}
    ci95: dict[str, dict[str, list[float]]] = {str(n): {} for n in members}
    runs = 0
    for device, metrics in devices.items():
        stats = compare(list(dict.fromkeys(members.values())), device)
        for n, entry in members.items():
            st = stats[entry]
            for metric in metrics:
                values[str(n)][f"{metric}@{device}"] = float(st[_STATS[metric]])
            ci95[str(n)][device] = [float(st["ci95_low_ms"]), float(st["ci95_high_ms"])]
            runs = int(st.get("n") or runs)
    return {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "n": runs, "values": values, "ci95": ci95}


def sbs_columns(sbs: dict | None, trial: int) -> dict[str, float]:
    """The ``sbs_*`` DataFrame columns of one trial (empty when it was not timed side by side)."""
    vals = ((sbs or {}).get("values") or {}).get(str(trial)) or {}
    out = {PREFIX + k: v for k, v in vals.items()}
    for device, (low, high) in (((sbs or {}).get("ci95") or {}).get(str(trial)) or {}).items():
        out[f"{PREFIX}{CI_LOW}latency_p50_ms@{device}"] = low
        out[f"{PREFIX}{CI_HIGH}latency_p50_ms@{device}"] = high
    return out
