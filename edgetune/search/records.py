"""Trial records: the typed :class:`TrialRecord`, config summaries and DataFrames (the metric values come
from ``edgetune.objectives``).

A finished trial's record lives in its Optuna user attrs (``record``): JSON with the config summary,
every value (``metric`` or ``metric@device``), fingerprints and the error, if any. Everything else (the
MLflow child run, the front table, the pandas frame, deploy) is derived from it, read back through
:meth:`TrialRecord.of`; :meth:`TrialRecord.mlflow` is the one place that makes a trial's MLflow keys.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["config_summary", "short_label", "RECORD_ATTR", "TrialRecord", "trials_frame", "latency_ci_columns",
           "mlflow_key", "fingerprint_tags"]

RECORD_ATTR = "record"
BASELINE_ATTR = "baseline"  # the Optuna user attr naming an enqueued baseline (set before the trial runs)


def mlflow_key(key: str) -> str:
    """A value key as MLflow accepts it: ``map50_95@jetson`` -> ``map50_95.jetson`` ('@' is not allowed)."""
    return key.replace("@", ".")


class TrialRecord(BaseModel):
    """What one trial did and measured, as stored in its Optuna user attrs (JSON). Fields a record of an
    older or newer edgetune carries beyond these are kept as they are (``extra="allow"``).

    ``values``: every metric, ``metric`` or ``metric@device``; ``constraints``: each constraint's text ->
    its violation (<= 0 is met); ``fingerprints``: device -> what it ran on (cpu, runtime, threads, the
    latency CI); ``config`` / ``sizes``: the artifact manifest's; ``error``: why a failed trial failed;
    ``outage_wait_s``: how long it waited for a device that stopped answering (None: it never had to);
    ``measure_retries``: measurements made again because an agent restart cut them;
    ``throttled``: device -> the throttling / under-voltage conditions that held during the measurement
    kept (only devices that were throttled; see ``runner.measure_unthrottled``), ``throttle_retries``:
    throttled measurements taken again; ``recovery_cut``: set when ``recovery.budget_s`` ended the
    fine-tuning of this trial's weights before its steps ({steps, steps_asked, budget_s, message}).

    Memory values per device: ``peak_mem_mb@dev`` (the measuring process's peak, validation bundle
    included), ``model_mem_mb@dev`` (the runtime session's own footprint after load) and
    ``run_mem_mb@dev`` (the same after the model-only timed loop)."""

    model_config = ConfigDict(extra="allow")

    baseline: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    runtime: str | None = None
    artifact_hash: str | None = None
    summary: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None
    config: dict[str, Any] | None = None
    sizes: dict[str, Any] | None = None
    values: dict[str, float] = Field(default_factory=dict)
    fingerprints: dict[str, dict[str, Any]] = Field(default_factory=dict)
    constraints: dict[str, float] = Field(default_factory=dict)
    feasible: bool | None = None
    error: str | None = None
    warnings: list[str] = Field(default_factory=list)
    wall_s: float | None = None
    refined_from: int | None = None
    outage_wait_s: float | None = None  # seconds the trial waited for a device that did not answer
    measure_retries: int = 0  # measurements made again after an agent restart cut them
    throttled: dict[str, list[str]] = Field(default_factory=dict)  # device -> conditions held while measuring
    throttle_retries: int = 0  # throttled measurements taken again after a cool-down
    paired_retakes: int = 0  # measurements taken again because the device was busy (``runner.measure_quiet``)
    realised: dict[str, dict[str, Any]] = Field(default_factory=dict)  # device -> ``runner.realised_report``
    recovery_cut: dict[str, Any] | None = None  # recovery.budget_s ended the fine-tuning early
    reused_from: int | None = None  # the trial that measured this model (runtime, devices) first: its values
    # where the trial's time went: getting the artifact (compressing, or waiting for the overlapped
    # compression), the measurement requests, and the longest device's own job (``Measurement.wall_s``)
    timing: dict[str, float] = Field(default_factory=dict)
    # ``search.screen``'s evidence and decision (``search.screen.Screen.judge``): features, rung accuracy,
    # predicted latencies, the optimistic point and ``skip`` (why it was, or in shadow mode would have been,
    # skipped); predictions, never measurements
    screen: dict[str, Any] | None = None

    @classmethod
    def of(cls, trial) -> TrialRecord:
        """The record of an Optuna trial (FrozenTrial or Trial); empty for a trial that has none yet. The
        baseline name falls back to the trial's ``baseline`` attr (set when it was enqueued)."""
        attrs = trial.user_attrs
        rec = cls.model_validate(attrs.get(RECORD_ATTR) or {})
        if rec.baseline is None and attrs.get(BASELINE_ATTR):
            rec = rec.model_copy(update={"baseline": attrs[BASELINE_ATTR]})
        return rec

    def attr(self) -> dict[str, Any]:
        """The JSON stored in the trial's user attrs."""
        return self.model_dump(mode="json")

    @property
    def skipped(self) -> bool:
        """Whether ``search.screen`` skipped it: never measured, its reason in ``screen['skip']``."""
        return bool(self.screen and self.screen.get("skip") and self.screen.get("applied") and not self.values)

    @property
    def measured(self) -> bool:
        """Whether it holds values (a completed trial)."""
        return bool(self.values)

    def name(self, number: int) -> str:
        """The label, else the baseline name, else ``trial N``."""
        return self.label or self.baseline or f"trial {number}"

    def mlflow(self, *, number: int, state: str, sampler: str) -> tuple[dict, dict, dict, dict]:
        """(params, metrics, tags, json artifacts) of the trial's MLflow child run."""
        params = {"trial_number": number, "sampler": sampler, "baseline": self.baseline or "none", **self.summary}
        if self.refined_from is not None:  # a refined trial: the trial whose config it fine-tuned alone
            params["refined_from"] = self.refined_from
        metrics = {mlflow_key(k): v for k, v in self.values.items()}
        for i, v in enumerate(self.constraints.values()):
            metrics[f"constraint_{i}"] = v
        skipped = self.skipped
        tags = {"status": "skipped" if skipped else state, "feasible": str(bool(self.feasible)).lower(), "pareto": "false",
                "label": self.label or "", "artifact_hash": self.artifact_hash or ""}
        if self.baseline:
            tags["baseline"] = self.baseline
        if self.error:
            tags["error"] = self.error
        if self.outage_wait_s is not None:  # the trial waited for a device (or recovered one) before measuring
            tags["outage_wait_s"] = f"{self.outage_wait_s:.1f}"
        if self.measure_retries:
            tags["measure_retries"] = str(self.measure_retries)
        if self.fingerprints:  # true: a device flagged the measurement kept; unknown: none exposes the flags
            exposed = any(fp.get("throttled") is not None for fp in self.fingerprints.values())
            tags["throttled"] = "true" if self.throttled else ("false" if exposed else "unknown")
        for device, conditions in self.throttled.items():
            tags[f"throttled.{device}"] = ",".join(conditions)
        if self.throttle_retries:
            tags["throttle_retries"] = str(self.throttle_retries)
        if self.paired_retakes:
            tags["paired_retakes"] = str(self.paired_retakes)
        if self.recovery_cut:
            tags["recovery_cut"] = self.recovery_cut.get("message") or "true"
        if self.reused_from is not None:  # not measured again: the values of the trial that measured it
            tags["reused_from"] = str(self.reused_from)
        if self.screen:  # predictions go to params (never metrics: they are not measurements)
            params.update({f"predicted.{mlflow_key(k)}": v for k, v in (self.screen.get("predicted") or {}).items()})
            params.update({f"rung.{k}": v for k, v in (self.screen.get("rung") or {}).items()
                           if not k.endswith("_se") and k in ("map50_95", "map50", "top1", "top5")})
            if self.screen.get("skip"):
                tags["skip_reason" if skipped else "would_skip"] = str(self.screen["skip"])[:5000]
        for device, fp in self.fingerprints.items():
            tags[f"device.{device}"] = json.dumps(fp, default=str)
            tags.update(fingerprint_tags(device, fp))
        artifacts = {"config.json": {"config": self.config, "params": self.params, "sizes": self.sizes,
                                     "constraints": self.constraints or None}}
        if self.fingerprints:
            artifacts["fingerprints.json"] = self.fingerprints
        return params, metrics, tags, artifacts


FINGERPRINT_TAGS = ("kind", "board", "runtime", "power_mode", "clocks_locked", "governor", "throttled",
                    "throttling", "throttling_after")


def fingerprint_tags(device: str, fp: dict) -> dict[str, str]:
    """``fingerprint.<device>.<key>`` MLflow tags of the fingerprint's scalar state (searchable in the UI:
    ``tags.`fingerprint.pi5.clocks_locked` = 'true'``) and ``max_temp_c`` (the hottest zone, before or after);
    the whole fingerprint is the ``device.<device>`` tag (JSON) and the ``fingerprints.json`` artifact.
    A key the device did not report is left out."""
    out = {}
    for key in FINGERPRINT_TAGS:
        v = fp.get(key)
        if v is None:
            continue
        if isinstance(v, dict):  # raw flags: the ones set
            v = ",".join(k for k, on in v.items() if on) or "none"
        elif isinstance(v, list):
            v = ",".join(map(str, v)) or "none"
        elif isinstance(v, bool):
            v = str(v).lower()
        out[f"fingerprint.{device}.{key}"] = str(v)
    temps = [t for zone in ("temperatures_c", "temperatures_after_c") for t in (fp.get(zone) or {}).values()]
    if temps:
        out[f"fingerprint.{device}.max_temp_c"] = f"{max(temps):.1f}"
    return out


def config_summary(manifest: dict, *, runtime: str | None = None) -> dict[str, float | int | str]:
    """A few scalars that describe a config (for MLflow params, tables and plots). ``input_size`` and
    ``scales`` (the output strides kept, ``8+16``) are there when the config chose them; ``runtime`` when the
    trial named one (``space.runtime``)."""
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
    channels = resolved.get("channels") or {}  # group -> [before, after], the groups a cut changed
    before = sum(int(v[0]) for v in channels.values())
    removed = sum(int(v[0]) - int(v[1]) for v in channels.values())
    extra: dict[str, int | str] = {}
    chosen = (manifest.get("config") or {}).get("input_size")
    if chosen:
        extra["input_size"] = int(chosen)
    scales = (manifest.get("config") or {}).get("scales")
    if scales:
        extra["scales"] = "+".join(map(str, scales))
    if runtime:
        extra["runtime"] = runtime
    return {
        **extra,
        "n_int8_layers": counts["int8"], "n_fp16_layers": counts["fp16"], "n_fp32_layers": counts["fp32"],
        "mean_weight_bits": round(float(mean_bits), 3),
        "params_kept": round(params / source_params, 4) if source_params else 1.0,
        "weight_sparsity": round(1 - nonzero / params, 4) if params else 0.0,
        "n_pruned_groups": len(sparsity),
        "n_cut_groups": len(channels),
        "channels_pruned": round(removed / before, 4) if before else 0.0,
        "config_hash": manifest.get("config_hash", ""),
    }


def short_label(summary: dict, baseline: str | None, *, refined_from: int | None = None) -> str:
    """What was done, in words: ``int8 80/99 layers, 25% channels pruned in 6 groups, 40% weights zero``,
    ``outputs at stride 8 only``, then ``at 224 px`` / ``on openvino`` where the trial chose them (a baseline: its name, and its runtime
    when the sweep searches runtimes), and ``, refined from #N`` for a refined trial."""
    if refined_from is not None:
        return short_label(summary, baseline) + f", refined from #{refined_from}"
    where = f" on {summary['runtime']}" if summary.get("runtime") else ""
    if baseline:  # "int8-uniform@openvino" reads "int8-uniform on openvino"
        return baseline.partition("@")[0] + where
    total = sum(int(summary.get(f"n_{p}_layers") or 0) for p in ("fp32", "fp16", "int8"))
    parts = [f"{p} {summary[f'n_{p}_layers']}/{total} layers" for p in ("int8", "fp16")
             if summary.get(f"n_{p}_layers")]
    if summary.get("channels_pruned"):
        n = summary.get("n_cut_groups") or 0
        parts.append(f"{summary['channels_pruned']:.0%} channels pruned in {n} group{'s' if n != 1 else ''}")
    elif summary.get("params_kept", 1.0) < 0.999:  # records from before channel counts were kept
        parts.append(f"{1 - summary['params_kept']:.0%} params pruned")
    if summary.get("weight_sparsity", 0) > 0.01:
        parts.append(f"{summary['weight_sparsity']:.0%} weights zero")
    if summary.get("scales"):
        parts.append(f"outputs at stride {summary['scales'].replace('+', ', ')} only")
    at = f" at {summary['input_size']} px" if summary.get("input_size") else ""
    return (", ".join(parts) or "fp32") + at + where


def realised_text(record: TrialRecord) -> str | None:
    """Where a device ran other precisions than the config asked (``TrialRecord.realised``), in words; None
    when every device that reported ran what was asked (fp32 run as bf16 / fp16 is said too: OpenVINO does
    it by default on CPUs that have bf16)."""
    parts = []
    for device, r in sorted(record.realised.items()):
        what = []
        if r.get("asked_not_run"):
            what.append(f"{len(r['asked_not_run'])} int8 layer(s) ran in float")
        if r.get("run_not_asked"):
            what.append(f"{len(r['run_not_asked'])} float layer(s) ran in int8")
        low = {k: v for k, v in (r.get("counts") or {}).items() if k in ("bf16", "fp16")}
        if low:
            what.append(", ".join(f"{v} layer(s) in {k}" for k, v in low.items()))
        if what:
            parts.append(f"{device}: int8 asked on {r['int8_asked']}, ran on {r['int8_run']} ({'; '.join(what)})")
    return "; ".join(parts) or None


def latency_ci_columns(record: TrialRecord) -> dict[str, float]:
    """``ci95_low_latency_p50_ms@dev`` / ``ci95_high_...``: the 95% CI of each device's median latency, as
    the trial measured it (from the record's fingerprints): of a paired trial (``search.paired``), the CI
    of its paired ratio on the same scale as its ``latency_p50_ms`` (x the anchor)."""
    from edgetune.search.side_by_side import CI_HIGH, CI_LOW

    out = {}
    for device, fp in record.fingerprints.items():
        low, high = (fp.get("latency_ci95_ms") or [None, None])[:2]
        ratio, value = record.values.get(f"latency_ratio@{device}"), record.values.get(f"latency_p50_ms@{device}")
        ratio_ci = fp.get("paired_ratio_ci95") or [None, None]
        if ratio and value and None not in ratio_ci[:2]:
            low, high = (float(c) * value / ratio for c in ratio_ci[:2])
        if low is not None and high is not None:
            out[f"{CI_LOW}latency_p50_ms@{device}"], out[f"{CI_HIGH}latency_p50_ms@{device}"] = low, high
    return out


def trials_frame(trials: Sequence, objective_keys: Sequence[str], *, ranks: dict[int, int] | None = None,
                 run_ids: dict[int, str] | None = None, side_by_side: dict | None = None):
    """One row per trial: number, state, baseline, config summary, objective values, front rank, run id,
    and the ``sbs_*`` side-by-side timings of the fp32 baseline and the front (see ``search.side_by_side``)."""
    import pandas as pd

    from edgetune.search.side_by_side import sbs_columns

    ranks, run_ids = ranks or {}, run_ids or {}
    rows = []
    for t in trials:
        rec = TrialRecord.of(t)
        baseline = t.user_attrs.get(BASELINE_ATTR)
        label = short_label(rec.summary, baseline, refined_from=rec.refined_from) if rec.summary else rec.label
        row = {"trial": t.number, "state": "SKIPPED" if rec.skipped else t.state.name, "baseline": baseline,
               "label": label, "feasible": rec.feasible, "refined_from": rec.refined_from,
               "pareto": ranks.get(t.number) == 0, "pareto_rank": ranks.get(t.number),
               "mlflow_run_id": run_ids.get(t.number), "artifact": rec.artifact_hash,
               "error": rec.error, "skip_reason": (rec.screen or {}).get("skip") if rec.skipped else None,
               "throttled": ";".join(f"{d}: {','.join(c)}" for d, c in rec.throttled.items()) or None,
               "recovery_cut": (f"{rec.recovery_cut.get('steps')}/{rec.recovery_cut.get('steps_asked')} steps"
                                if rec.recovery_cut else None)}
        row["realised"] = realised_text(rec)
        row["int8_mismatch"] = any(r.get("asked_not_run") or r.get("run_not_asked") for r in rec.realised.values())
        row.update(rec.summary)
        values = rec.values
        for k in objective_keys:
            row[k] = values.get(k)
        for k, v in values.items():
            row.setdefault(k, v)
        row.update(latency_ci_columns(rec))
        row.update(sbs_columns(side_by_side, t.number))
        rows.append(row)
    return pd.DataFrame(rows)
