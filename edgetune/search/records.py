"""Trial records: flat metric values from a Measurement + an Artifact, config summaries, DataFrames.

A finished trial's record lives in its Optuna user attrs (``record``): JSON with the config summary,
every value (``metric`` or ``metric@device``), fingerprints and the error, if any. Everything else (the
MLflow child run, the front table, the pandas frame) is derived from it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["measurement_values", "artifact_values", "config_summary", "RECORD_ATTR", "trials_frame"]

RECORD_ATTR = "record"


def measurement_values(m, device: str) -> dict[str, float]:
    """Flat ``metric@device`` values of one device Measurement (pydantic model or its dict)."""
    d = m if isinstance(m, dict) else m.model_dump()
    out: dict[str, float] = {}
    lat = d.get("latency") or {}
    for src, name in (("p50_ms", "latency_p50_ms"), ("p90_ms", "latency_p90_ms"), ("p99_ms", "latency_p99_ms"),
                      ("mean_ms", "latency_mean_ms")):
        if lat.get(src) is not None:
            out[f"{name}@{device}"] = float(lat[src])
    e2e = d.get("end_to_end") or {}
    for src, name in (("p50_ms", "e2e_latency_p50_ms"), ("p90_ms", "e2e_latency_p90_ms")):
        if e2e.get(src) is not None:
            out[f"{name}@{device}"] = float(e2e[src])
    if d.get("peak_rss_bytes"):
        out[f"peak_mem_mb@{device}"] = d["peak_rss_bytes"] / 1e6
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


def config_summary(manifest: dict) -> dict[str, float | int | str]:
    """A few scalars that describe a config (for MLflow params, tables and plots)."""
    resolved = manifest.get("resolved") or {}
    precision: dict = resolved.get("precision") or {}
    sizes = manifest.get("sizes") or {}
    counts = {p: sum(1 for v in precision.values() if v == p) for p in ("fp32", "fp16", "int8")}
    bits = {"fp32": 32, "fp16": 16, "int8": 8}
    layer_params = resolved.get("layer_params") or {}
    if layer_params and precision:
        tot = sum(layer_params.get(n, 0) for n in precision)
        mean_bits = sum(bits.get(p, 32) * layer_params.get(n, 0) for n, p in precision.items()) / max(tot, 1)
    elif precision:
        mean_bits = sum(bits.get(p, 32) for p in precision.values()) / len(precision)
    else:
        mean_bits = 32.0
    params, nonzero = sizes.get("params") or 0, sizes.get("nonzero_params") or 0
    source_params = (manifest.get("source") or {}).get("params") or params
    sparsity = manifest.get("config", {}).get("sparsity") or {}
    return {
        "n_int8_layers": counts["int8"], "n_fp16_layers": counts["fp16"], "n_fp32_layers": counts["fp32"],
        "mean_weight_bits": round(float(mean_bits), 3),
        "params_kept": round(params / source_params, 4) if source_params else 1.0,
        "weight_sparsity": round(1 - nonzero / params, 4) if params else 0.0,
        "n_pruned_groups": len(sparsity),
        "config_hash": manifest.get("config_hash", ""),
    }


def short_label(summary: dict, baseline: str | None) -> str:
    if baseline:
        return baseline
    parts = []
    if summary.get("n_int8_layers"):
        parts.append(f"{summary['n_int8_layers']}xint8")
    if summary.get("n_fp16_layers"):
        parts.append(f"{summary['n_fp16_layers']}xfp16")
    if summary.get("params_kept", 1.0) < 0.999:
        parts.append(f"{summary['params_kept']:.0%} params")
    if summary.get("weight_sparsity", 0) > 0.01:
        parts.append(f"{summary['weight_sparsity']:.0%} zeros")
    return ", ".join(parts) or "fp32"


def trials_frame(trials: Sequence, objective_keys: Sequence[str], *, ranks: dict[int, int] | None = None,
                 run_ids: dict[int, str] | None = None, side_by_side: dict | None = None):
    """One row per trial: number, state, baseline, config summary, objective values, front rank, run id,
    and the ``sbs_*`` side-by-side timings of the fp32 baseline and the front (see ``search.side_by_side``)."""
    import pandas as pd

    from edgetune.search.side_by_side import sbs_columns

    ranks, run_ids = ranks or {}, run_ids or {}
    rows = []
    for t in trials:
        rec = t.user_attrs.get(RECORD_ATTR) or {}
        row = {"trial": t.number, "state": t.state.name, "baseline": t.user_attrs.get("baseline"),
               "label": rec.get("label"), "feasible": rec.get("feasible"),
               "pareto": ranks.get(t.number) == 0, "pareto_rank": ranks.get(t.number),
               "mlflow_run_id": run_ids.get(t.number), "artifact": rec.get("artifact_hash"),
               "error": rec.get("error")}
        row.update(rec.get("summary") or {})
        values = rec.get("values") or {}
        for k in objective_keys:
            row[k] = values.get(k)
        for k, v in values.items():
            row.setdefault(k, v)
        row.update(sbs_columns(side_by_side, t.number))
        rows.append(row)
    return pd.DataFrame(rows)
