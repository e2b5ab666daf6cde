"""The sweep's MLflow mirror: every finished trial as a child run (from its :class:`TrialRecord`, never
from anything else), the front's ``pareto`` tags and the parent run's sweep metrics kept in step with
Optuna's storage, and a resumed sweep reconciled (trials that finished before an interruption logged once).

MLflow is a mirror: Optuna's storage is the sweep's source of truth, so all of this can be rebuilt from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgetune._logging import get_logger
from edgetune.search.front import front_ranks, sweep_hypervolume
from edgetune.search.records import TrialRecord, mlflow_key
from edgetune.search.tracking import Tracker

log = get_logger(__name__)

__all__ = ["MlflowMirror"]


class MlflowMirror:
    """Keeps ``tracker`` (the sweep's parent run and its children) in step with the study's trials."""

    def __init__(self, tracker: Tracker, *, keys: Sequence[str], goals: Sequence[str], sampler: str):
        self.tracker, self.keys, self.goals, self.sampler = tracker, list(keys), list(goals), sampler
        self.run_ids: dict[int, str] = {}
        self._pareto_tagged: dict[int, str] = {}
        self._best_of: dict[str, str] = {}

    def log_trial(self, frozen, files: dict[str, Path] | None = None) -> None:
        """One finished trial as a child run (FINISHED, or FAILED with its ``error`` tag)."""
        rec = TrialRecord.of(frozen)
        params, metrics, tags, artifacts = rec.mlflow(number=frozen.number, state=frozen.state.name,
                                                      sampler=self.sampler)
        ok = frozen.state.name == "COMPLETE"
        self.run_ids[frozen.number] = self.tracker.log_trial(frozen.number, params=params, metrics=metrics, tags=tags,
                                                             json_artifacts=artifacts, files=files,
                                                             status="FINISHED" if ok else "FAILED")

    def reconcile(self, trials) -> None:
        """After a restart: drop child runs a killed process left RUNNING, log finished trials MLflow lacks."""
        logged = self.tracker.reconcile()
        self.run_ids = {n: r.info.run_id for n, r in self.tracker.child_runs().items() if n in logged}
        for t in trials:
            if t.state.is_finished() and t.number not in logged:
                log.info("logging trial %d to MLflow (finished before the sweep was interrupted)", t.number)
                self.log_trial(t)

    def adopt(self, trials) -> None:
        """Take the run ids of finished trials another controller of the study logged (for the front's tags)."""
        missing = {t.number for t in trials if t.state.is_finished() and t.number not in self.run_ids}
        if missing:
            self.run_ids.update({n: r.info.run_id for n, r in self.tracker.child_runs().items()
                                 if n in missing and r.info.status != "RUNNING"})

    def refresh_front(self, trials, *, step: int, baseline: dict[str, float] | None) -> dict:
        """Re-tag ``pareto`` / ``pareto_rank`` where they changed; log hypervolume, feasible count and each
        objective's best feasible value (with the trial it came from) on the parent run. Returns the metrics."""
        ranks = front_ranks(trials, self.keys, self.goals)
        for number, rid in self.run_ids.items():
            want, rank = ("true" if ranks.get(number) == 0 else "false"), ranks.get(number)
            if self._pareto_tagged.get(number) != f"{want}/{rank}":
                self.tracker.set_tags(rid, {"pareto": want, "pareto_rank": "" if rank is None else str(rank)})
                self._pareto_tagged[number] = f"{want}/{rank}"
        records = [(t.number, TrialRecord.of(t)) for t in trials if t.state.name == "COMPLETE"]
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
