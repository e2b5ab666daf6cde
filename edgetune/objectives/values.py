"""From what was measured to metric values: a device's Measurement and an artifact's sizes become the
flat ``metric`` / ``metric@device`` dict the objectives and constraints read (see ``metrics``). A new
metric is a row of ``metrics._TABLE`` plus its line here, in this package only."""

from __future__ import annotations

from edgetune.objectives.metrics import metric_key

__all__ = ["measurement_values", "artifact_values", "objective_keys", "LATENCY_STATS", "E2E_STATS"]

# metric -> the field of a latency-statistics record (``LatencyStats``) it is read from
LATENCY_STATS = {"latency_p50_ms": "p50_ms", "latency_p90_ms": "p90_ms", "latency_p99_ms": "p99_ms",
                 "latency_mean_ms": "mean_ms"}
E2E_STATS = {"e2e_latency_p50_ms": "p50_ms", "e2e_latency_p90_ms": "p90_ms"}


def objective_keys(cfg) -> tuple[list[str], list[str]]:
    """(value keys, goals) of a sweep config's objectives, in order (on-device metrics default to the
    first device)."""
    names = [d.name for d in cfg.devices]
    keys, goals = [], []
    for obj in cfg.objectives:
        keys.append(metric_key(obj.metric, obj.device or (names[0] if names else None)))
        goals.append(obj.resolved_goal())
    return keys, goals


def measurement_values(m, device: str) -> dict[str, float]:
    """Flat ``metric@device`` values of one device's Measurement (the pydantic model or its dict)."""
    d = m if isinstance(m, dict) else m.model_dump(exclude={"latency": {"samples_ms"}, "end_to_end": {"samples_ms"}})
    out: dict[str, float] = {}
    for section, table in (("latency", LATENCY_STATS), ("end_to_end", E2E_STATS)):
        stats = d.get(section) or {}
        for name, src in table.items():
            if stats.get(src) is not None:
                out[f"{name}@{device}"] = float(stats[src])
    paired = d.get("paired") or {}
    if paired:  # timed in turns with the fp32 reference in the same request (``search.paired``)
        out[f"latency_ratio@{device}"] = float(paired["ratio_p50"])
        out[f"latency_ratio_p90@{device}"] = float(paired["ratio_p90"])
        out[f"ref_latency_p50_ms@{device}"] = float(paired["reference_latency"]["p50_ms"])
        out[f"ref_latency_p90_ms@{device}"] = float(paired["reference_latency"]["p90_ms"])
    if d.get("peak_rss_bytes"):
        out[f"peak_mem_mb@{device}"] = d["peak_rss_bytes"] / 1e6
    for name, src in (("model_mem_mb", "model_rss_bytes"), ("run_mem_mb", "run_rss_bytes")):
        if d.get(src) is not None:  # the model's own footprint, apart from the process's peak
            out[f"{name}@{device}"] = d[src] / 1e6
    power = d.get("power") or {}
    if power.get("energy_per_inference_mj") is not None:
        out[f"energy_mj@{device}"] = float(power["energy_per_inference_mj"])
    if power.get("total_mw") is not None:
        out[f"power_w@{device}"] = float(power["total_mw"]) / 1e3
    for k, v in (d.get("accuracy") or {}).items():
        out[f"{k}@{device}"] = float(v)
    return out


def artifact_values(sizes: dict) -> dict[str, float]:
    """Device-independent values from an artifact manifest's ``sizes``."""
    mapping = {"bytes": "size_bytes", "zstd_bytes": "compressed_bytes", "params": "params",
               "nonzero_params": "nonzero_params", "macs": "macs", "bitops": "bitops"}
    return {dst: float(sizes[src]) for src, dst in mapping.items() if sizes.get(src) is not None}
