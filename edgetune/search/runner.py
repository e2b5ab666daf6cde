"""One sweep, end to end: ask -> compress (cached) -> measure on every device the objectives name ->
objectives + constraints -> tell -> MLflow -> front.

Failures are results: a trial whose compression raises or whose device fails is told FAIL with the
reason, logged as a FAILED MLflow run with an ``error`` tag, and the sweep goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from edgetune._logging import get_logger
from edgetune.errors import EdgetuneError
from edgetune.search.records import (
    RECORD_ATTR,
    artifact_values,
    config_summary,
    measurement_values,
    short_label,
)
from edgetune.search.study import BASELINE_ATTR

log = get_logger(__name__)

__all__ = ["TrialPlan", "TrialResult", "execute_trials"]


@dataclass
class TrialPlan:
    """What to run for one Optuna trial: its number, the config (a CompressionConfig) and baseline name."""

    number: int
    trial: object  # optuna.trial.Trial
    config: object
    baseline: str | None
    params: dict


@dataclass
class TrialResult:
    number: int
    ok: bool
    values: dict[str, float] = field(default_factory=dict)
    record: dict = field(default_factory=dict)
    artifact: object | None = None
    error: str | None = None
    wall_s: float = 0.0


class SweepHooks:
    """What the runner needs from the outside world (compression, devices); see ``search.sweep``."""

    def compress(self, plan: TrialPlan):  # -> Artifact
        raise NotImplementedError

    def measure(self, artifact, device: str):  # -> Measurement (pydantic) or dict
        raise NotImplementedError

    def devices_for_objectives(self) -> list[str]:
        raise NotImplementedError

    def compare_latency(self, onnx_paths: list[str], device: str) -> dict[str, dict]:  # path -> latency stats
        raise NotImplementedError


def run_one(plan: TrialPlan, hooks: SweepHooks, artifact_future: Future | None = None) -> TrialResult:
    """Compress (or take the overlapped result) and measure one trial; never raises for trial failures."""
    t0 = time.time()
    record: dict = {"baseline": plan.baseline, "params": plan.params}
    try:
        artifact = artifact_future.result() if artifact_future is not None else hooks.compress(plan)
    except EdgetuneError as exc:
        return _failed(plan, record, f"compression failed: {exc}", t0)
    except Exception as exc:  # a bug or a library error in compression must not kill the sweep
        log.exception("trial %d: compression raised", plan.number)
        return _failed(plan, record, f"compression failed: {type(exc).__name__}: {exc}", t0)
    manifest = artifact.manifest
    summary = config_summary(manifest)
    record.update({"artifact_hash": artifact.hash, "summary": summary, "label": short_label(summary, plan.baseline),
                   "config": manifest.get("config"), "sizes": manifest.get("sizes")})
    values = artifact_values(manifest.get("sizes") or {})
    fingerprints: dict[str, dict] = {}
    for device in hooks.devices_for_objectives():
        try:
            m = hooks.measure(artifact, device)
        except EdgetuneError as exc:
            return _failed(plan, record, f"measurement on '{device}' failed: {exc}", t0, artifact)
        except Exception as exc:
            log.exception("trial %d: measuring on %s raised", plan.number, device)
            return _failed(plan, record, f"measurement on '{device}' failed: {type(exc).__name__}: {exc}", t0, artifact)
        d = m if isinstance(m, dict) else m.model_dump(exclude={"latency": {"samples_ms"}, "end_to_end": {"samples_ms"}})
        values.update(measurement_values(d, device))
        fingerprints[device] = device_fingerprint(d)
    record.update({"values": values, "fingerprints": fingerprints})
    return TrialResult(plan.number, True, values, record, artifact, None, time.time() - t0)


def _failed(plan, record, error: str, t0: float, artifact=None) -> TrialResult:
    log.warning("trial %d failed: %s", plan.number, error)
    record["error"] = error
    return TrialResult(plan.number, False, {}, record, artifact, error, time.time() - t0)


def device_fingerprint(d: dict) -> dict:
    dev = d.get("device") or {}
    rt = d.get("runtime") or {}
    return {
        "name": dev.get("name"), "kind": dev.get("kind"), "board": (dev.get("board") or {}).get("model"),
        "cpu": (dev.get("cpu") or {}).get("model"), "os": (dev.get("os") or {}).get("name"),
        "runtime": f"{rt.get('name')} {rt.get('version')}", "providers": ",".join(rt.get("providers_used") or []),
        "threads": d.get("threads"), "cpus": ",".join(str(c) for c in d.get("cpus") or []),
        "power_mode": dev.get("power_mode"), "temperatures_c": dev.get("temperatures_c"),
        "latency_n": (d.get("latency") or {}).get("n"),
        "latency_ci95_ms": [(d.get("latency") or {}).get("ci95_low_ms"), (d.get("latency") or {}).get("ci95_high_ms")],
    }


def execute_trials(plans: Callable[[], TrialPlan | None], hooks: SweepHooks, *, overlap: bool,
                   on_result: Callable[[TrialPlan, TrialResult], None]) -> None:
    """Run plans until ``plans()`` returns None. With ``overlap``, the next trial's compression runs in a
    worker thread while the current one is measured (the next trial is asked before the current one is
    told, as with any parallel sampler)."""
    if not overlap:
        while (plan := plans()) is not None:
            on_result(plan, run_one(plan, hooks))
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="edgetune-compress") as pool:
        current = plans()
        fut = pool.submit(hooks.compress, current) if current else None
        while current is not None:
            nxt = plans()
            wait([fut])  # current compressed (or failed): start the next compression, then measure
            nfut = pool.submit(hooks.compress, nxt) if nxt is not None else None
            on_result(current, run_one(current, hooks, fut))
            current, fut = nxt, nfut


def tell(study, plan: TrialPlan, result: TrialResult, *, keys: list[str], constraints: list,
         baseline_values: dict[str, float] | None) -> dict:
    """Tell Optuna the outcome (values + constraints, or FAIL) with the full record in user attrs."""
    from optuna.trial import TrialState

    record = dict(result.record)
    record["wall_s"] = round(result.wall_s, 3)
    if result.ok:
        missing = [k for k in keys if k not in result.values]
        if missing:
            result.ok, result.error = False, f"the devices did not report {', '.join(missing)}"
            record["error"] = result.error
    if result.ok:
        viol = {}
        for c in constraints:
            try:
                viol[c.text] = float(c.violation(result.values, baseline_values or result.values))
            except KeyError as exc:  # the metric was not measured: treat as violated, say why
                viol[c.text] = float("inf")
                record.setdefault("warnings", []).append(f"constraint '{c.text}': {exc}")
        record["constraints"] = {k: (v if v != float("inf") else 1e30) for k, v in viol.items()}
        record["feasible"] = all(v <= 0 for v in viol.values())
        for i, (text, v) in enumerate(viol.items()):
            plan.trial.set_constraint(f"c{i}", v if v != float("inf") else 1e30)
            del text
    plan.trial.set_user_attr(RECORD_ATTR, record)
    if result.ok:
        study.tell(plan.number, [result.values[k] for k in keys])
    else:
        study.tell(plan.number, state=TrialState.FAIL)
    if plan.baseline:
        record[BASELINE_ATTR] = plan.baseline
    return record
