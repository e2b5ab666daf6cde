"""The sweep's MLflow mirror: every finished trial as a child run (from its :class:`TrialRecord`, never
from anything else), the front's ``pareto`` tags (and run colours), each trial's speed-up over fp32 and
the parent run's sweep metrics kept in step with Optuna's storage, the MLflow UI's saved views of the
sweep, and a resumed sweep reconciled (trials that finished before an interruption logged once).

MLflow is a mirror: Optuna's storage is the sweep's source of truth, so all of this can be rebuilt from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgetune._logging import get_logger
from edgetune.search.front import accuracy_key, front_ranks, latency_key, speedup_vs_fp32, sweep_hypervolume
from edgetune.search.records import TrialRecord, mlflow_key
from edgetune.search.side_by_side import PREFIX as SBS_PREFIX
from edgetune.search.tracking import FRONT_COLOR, OTHER_COLOR, RUN_COLOR_TAG, Tracker

log = get_logger(__name__)

__all__ = ["MlflowMirror"]


class MlflowMirror:
    """Keeps ``tracker`` (the sweep's parent run and its children) in step with the study's trials."""

    def __init__(self, tracker: Tracker, *, keys: Sequence[str], goals: Sequence[str], sampler: str):
        self.tracker, self.keys, self.goals, self.sampler = tracker, list(keys), list(goals), sampler
        self.run_ids: dict[int, str] = {}
        self._pareto_tagged: dict[int, str] = {}
        self._best_of: dict[str, str] = {}
        self._speedup_logged: set[int] = set()  # trials whose run has its speedup.<device> metrics
        self._views_saved = False

    def log_trial(self, frozen, files: dict[str, Path] | None = None) -> None:
        """One finished trial as a child run (FINISHED; a skipped one FINISHED with its ``skip_reason`` tag;
        FAILED with its ``error`` tag)."""
        rec = TrialRecord.of(frozen)
        params, metrics, tags, artifacts = rec.mlflow(number=frozen.number, state=frozen.state.name,
                                                      sampler=self.sampler)
        ok = frozen.state.name == "COMPLETE" or rec.skipped
        self.run_ids[frozen.number] = self.tracker.log_trial(frozen.number, params=params, metrics=metrics, tags=tags,
                                                             json_artifacts=artifacts, files=files,
                                                             status="FINISHED" if ok else "FAILED")

    def reconcile(self, trials) -> None:
        """After a restart: drop child runs a killed process left RUNNING, log finished trials MLflow lacks."""
        logged = self.tracker.reconcile()
        runs = self.tracker.child_runs()
        self.run_ids = {n: r.info.run_id for n, r in runs.items() if n in logged}
        self._speedup_logged |= {n for n, r in runs.items() if _has_speedup(r)}
        for t in trials:
            if t.state.is_finished() and t.number not in logged:
                log.info("logging trial %d to MLflow (finished before the sweep was interrupted)", t.number)
                self.log_trial(t)

    def adopt(self, trials) -> None:
        """Take the run ids of finished trials another controller of the study logged (for the front's tags)."""
        missing = {t.number for t in trials if t.state.is_finished() and t.number not in self.run_ids}
        if missing:
            runs = {n: r for n, r in self.tracker.child_runs().items() if n in missing and r.info.status != "RUNNING"}
            self.run_ids.update({n: r.info.run_id for n, r in runs.items()})
            self._speedup_logged |= {n for n, r in runs.items() if _has_speedup(r)}

    def refresh_front(self, trials, *, step: int, baseline: dict[str, float] | None) -> dict:
        """Re-tag ``pareto`` / ``pareto_rank`` (and the run colour) where they changed; log each trial's
        ``speedup.<device>`` once fp32 is measured; log hypervolume, feasible count and each objective's best
        feasible value (with the trial it came from) on the parent run; save the MLflow UI's views of the
        sweep the first time. Returns the metrics."""
        if not self._views_saved:
            self._views_saved = True
            try:
                self.save_views()
            except Exception as exc:  # (any store error) a convenience: the review link then filters on the tag
                log.warning("could not save the MLflow UI views of the sweep (%s: %s)", type(exc).__name__, exc)
        ranks = front_ranks(trials, self.keys, self.goals)
        for number, rid in self.run_ids.items():
            want, rank = ("true" if ranks.get(number) == 0 else "false"), ranks.get(number)
            if self._pareto_tagged.get(number) != f"{want}/{rank}":
                self.tracker.set_tags(rid, {"pareto": want, "pareto_rank": "" if rank is None else str(rank),
                                            RUN_COLOR_TAG: FRONT_COLOR if want == "true" else OTHER_COLOR})
                self._pareto_tagged[number] = f"{want}/{rank}"
        records = [(t.number, TrialRecord.of(t)) for t in trials if t.state.name == "COMPLETE"]
        self._log_speedups(records, baseline)
        feasible = [(n, r) for n, r in records if r.feasible]
        metrics = {"hypervolume": sweep_hypervolume(trials, self.keys, self.goals, baseline),
                   "n_feasible": len(feasible), "n_complete": len(records)}
        best_of: dict[str, str] = {}
        for k, g in zip(self.keys, self.goals, strict=True):
            vals = [(r.values[k], n) for n, r in feasible if r.values.get(k) is not None]
            if vals:
                v, n = max(vals) if g == "max" else min(vals)
                metrics[f"best_{mlflow_key(k)}"] = v
                best_of[f"best_{mlflow_key(k)}.trial"] = str(n)  # each best may come from another trial
        if best_of and best_of != self._best_of:
            self.tracker.set_tags(self.tracker.parent_id, best_of)
            self._best_of = best_of
        self.tracker.log_sweep_metrics(step, metrics)
        return metrics

    def _log_speedups(self, records: list[tuple[int, TrialRecord]], baseline: dict[str, float] | None) -> None:
        """``speedup.<device>`` on each completed trial's run, once: fp32's p50 / the trial's, from their
        records as the front table computes it (paired with fp32 when both were, else their own timings; the
        side-by-side one is ``sbs_speedup.<device>``); fp32's is 1."""
        if not baseline:
            return
        latencies = [k for k in self.keys if k.startswith("latency_p50_ms@")]
        for number, rec in records:
            rid = self.run_ids.get(number)
            if rid is None or number in self._speedup_logged:
                continue
            metrics = {f"speedup.{k.split('@')[1]}": speedup_vs_fp32(rec.values, baseline, k)[0] for k in latencies}
            if any(v is not None for v in metrics.values()):
                self.tracker.log_metrics(rid, metrics)
            self._speedup_logged.add(number)

    def save_views(self) -> None:
        """The MLflow UI's saved views of the sweep (:meth:`Tracker.save_review_views`): the columns are the
        accuracy, the p50 latency, the speed-ups over fp32 (as the table has it; side by side), the other objectives,
        the ONNX size, the runtime (searched / reported by the device) and the label; the scatters plot the
        accuracy against the latency first, then every other pair of objectives."""
        acc, lat = accuracy_key(self.keys), latency_key(self.keys)
        first = [k for k in (acc, lat) if k]
        devices = list(dict.fromkeys(k.split("@")[1] for k in self.keys if "@" in k))
        lat_devices = [k.split("@")[1] for k in self.keys if k.startswith("latency_p50_ms@")]
        metrics = [mlflow_key(k) for k in first] + [f"{p}speedup.{d}" for d in lat_devices for p in ("", SBS_PREFIX)]
        metrics += [mlflow_key(k) for k in self.keys if k not in first]
        metrics += [] if "size_bytes" in metrics else ["size_bytes"]
        pairs = [(lat, acc)] if acc and lat else []
        pairs += [(x, y) for i, x in enumerate(self.keys) for y in self.keys[i + 1:] if {x, y} != {acc, lat}]
        order = acc or self.keys[0]
        self.tracker.save_review_views(
            metrics=metrics, params=["runtime"], tags=[f"fingerprint.{d}.runtime" for d in devices] + ["label"],
            order_by=mlflow_key(order), ascending=self.goals[self.keys.index(order)] == "min",
            scatters=[(mlflow_key(x), mlflow_key(y)) for x, y in pairs])


def _has_speedup(run) -> bool:
    return any(k.startswith("speedup.") for k in run.data.metrics)
