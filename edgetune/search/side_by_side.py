"""Side-by-side latency check of the front against fp32, at the end of a sweep.

Each trial is timed once, when it runs; a sweep takes minutes to hours, and a device's speed drifts over
that time (thermal state, clocks, other tenants of a shared host: on the 2-core VM this was built on,
one model's p50 over 100-run windows moved between 5.9 and 7.7 ms within a minute). A speed-up computed
from the fp32 baseline timed at minute 0 and a candidate timed at minute 40 carries that drift. So when
the sweep ends, the fp32 baseline and every front member are timed again on each latency device, all
in one process on the device (``POST /compare``), taking turns in short bursts, so every model sees the
same device state. With paired trials (``search.paired``, the default) the front and its speed-ups come from
the trials' paired timings and this is a check of them (:func:`order_check`: does the order of the front
hold side by side?); without, the speed-ups the CLI, ``pareto.csv`` and MLflow report come from these
timings when they exist, and the objectives stay what each trial measured.

The result is kept in the study's user attrs (``side_by_side``), so ``edgetune front`` shows it without
devices; MLflow gets ``sbs_<metric>.<device>`` and ``sbs_speedup.<device>`` on each member's child run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from edgetune.objectives import LATENCY_STATS

__all__ = ["SBS_ATTR", "PREFIX", "CI_LOW", "CI_HIGH", "latency_keys", "run_side_by_side", "sbs_columns",
           "order_check", "order_check_lines"]

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
    ``ci95_low_ms``, ``ci95_high_ms``, ``n``) from one interleaved timing on the device, and ``ratio``:
    its (ratio, CI low, CI high) to the first entry, by the estimator of the paired trials. The first
    member is the fp32 baseline; with ratios, a member's p50 (and its CI) is its ratio times the
    baseline's p50 in this timing, so the check orders the models as their paired trials did (the pooled
    medians of a loaded device do not: preempted runs inflate a slower model's more). Returns
    ``{"at", "values": {trial: {"latency_p50_ms@dev": v, ...}}, "ci95": {trial: {dev: [low, high]}}, "n",
    "estimator": "paired fastest-run ratio x fp32 p50" | "pooled median"}``.
    """
    values: dict[str, dict[str, float]] = {str(n): {} for n in members}
    ci95: dict[str, dict[str, list[float]]] = {str(n): {} for n in members}
    runs, estimator = 0, "paired fastest-run ratio x fp32 p50"
    for device, metrics in devices.items():
        entries = list(dict.fromkeys(members.values()))
        stats = compare(entries, device)
        base_p50 = float(stats[entries[0]]["p50_ms"])
        for n, entry in members.items():
            st = stats[entry]
            for metric in metrics:
                values[str(n)][f"{metric}@{device}"] = float(st[_STATS[metric]])
            ci95[str(n)][device] = [float(st["ci95_low_ms"]), float(st["ci95_high_ms"])]
            if st.get("ratio"):
                ratio, low, high = (float(v) for v in st["ratio"])
                values[str(n)][f"latency_p50_ms@{device}"] = ratio * base_p50
                ci95[str(n)][device] = [low * base_p50, high * base_p50]
            else:
                estimator = "pooled median"
            runs = int(st.get("n") or runs)
    return {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "n": runs, "values": values, "ci95": ci95,
            "estimator": estimator}


def sbs_columns(sbs: dict | None, trial: int) -> dict[str, float]:
    """The ``sbs_*`` DataFrame columns of one trial (empty when it was not timed side by side)."""
    vals = ((sbs or {}).get("values") or {}).get(str(trial)) or {}
    out = {PREFIX + k: v for k, v in vals.items()}
    for device, (low, high) in (((sbs or {}).get("ci95") or {}).get(str(trial)) or {}).items():
        out[f"{PREFIX}{CI_LOW}latency_p50_ms@{device}"] = low
        out[f"{PREFIX}{CI_HIGH}latency_p50_ms@{device}"] = high
    return out


def positive(v) -> bool:
    """A measured value: not None, not NaN, above zero."""
    return v is not None and v == v and v > 0


def ci(r, key: str, *, sbs: bool) -> tuple[float, float] | None:
    """Row ``r``'s 95% CI of ``key`` (its side-by-side one when ``sbs``), None when not measured."""
    pre = PREFIX if sbs else ""
    low, high = r.get(f"{pre}{CI_LOW}{key}"), r.get(f"{pre}{CI_HIGH}{key}")
    return (float(low), float(high)) if positive(low) and positive(high) else None


def _separated(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    return a is not None and b is not None and (a[1] < b[0] or b[1] < a[0])


def order_check(df, keys: Sequence[str]) -> list[dict]:
    """Per latency device: does the side-by-side timing at the end order the fp32 baseline and the front
    members as the values the front was chosen on do? ``{"device", "n", "tau", "contradictions"}``:
    ``tau`` is Kendall's tau between the two orders (1: the same order), ``contradictions`` the pairs
    ``(a, b)`` that the two orders put the other way round with both differences beyond noise (95% CIs
    apart in both timings). Empty when there was no side-by-side timing."""
    import math

    out = []
    for device in latency_keys(keys):
        key, sbs = f"latency_p50_ms@{device}", f"{PREFIX}latency_p50_ms@{device}"
        if sbs not in df.columns or key not in df.columns:
            continue
        rows = [r for _, r in df.iterrows() if positive(r.get(sbs)) and positive(r.get(key))]
        concordant = discordant = 0
        contradictions = []
        for i, a in enumerate(rows):
            for b in rows[i + 1:]:
                d1 = math.copysign(1, a[key] - b[key]) if a[key] != b[key] else 0
                d2 = math.copysign(1, a[sbs] - b[sbs]) if a[sbs] != b[sbs] else 0
                if d1 * d2 > 0:
                    concordant += 1
                elif d1 * d2 < 0:
                    discordant += 1
                    if _separated(ci(a, key, sbs=False), ci(b, key, sbs=False)) and \
                            _separated(ci(a, key, sbs=True), ci(b, key, sbs=True)):
                        contradictions.append((int(a["trial"]), int(b["trial"])))
        pairs = concordant + discordant
        if len(rows) >= 2:
            out.append({"device": device, "n": len(rows), "tau": (concordant - discordant) / pairs if pairs else 1.0,
                        "contradictions": contradictions})
    return out


def order_check_lines(df, keys: Sequence[str]) -> list[str]:
    """:func:`order_check` in words, one line per device (for the table's caption and the MLflow note)."""
    lines = []
    for c in order_check(df, keys):
        head = f"side by side at the end ({c['device']}, {c['n']} points): "
        if c["contradictions"]:
            pairs = ", ".join(f"#{a}/#{b}" for a, b in c["contradictions"][:4])
            lines.append(head + f"order DIFFERS beyond noise for {pairs} (Kendall tau {c['tau']:.2f})")
        else:
            lines.append(head + f"same order within noise (Kendall tau {c['tau']:.2f})")
    return lines

