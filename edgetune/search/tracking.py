"""MLflow tracking of a sweep through ``MlflowClient`` with explicit run ids (thread- and worker-safe).

One parent run per sweep (tag ``edgetune.sweep``), one child run per trial (tag ``edgetune.trial``).
A child run is written in one go after its trial ends and marked FINISHED / FAILED; on resume, child
runs left RUNNING by a dead process are deleted and re-logged from the Optuna record, so no trial is
lost or logged twice. Params are written once; per-layer maps go in a JSON artifact.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from edgetune._logging import get_logger

log = get_logger(__name__)

__all__ = ["Tracker", "TRIAL_TAG", "SWEEP_TAG", "review_url"]

SWEEP_TAG = "edgetune.sweep"
TRIAL_TAG = "edgetune.trial"


def artifact_root(uri: str) -> str | None:
    """Artifacts beside a sqlite store (``sqlite:///x/mlflow.db`` -> ``x/mlartifacts``)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///")).resolve()
        return (db.parent / "mlartifacts").as_uri()
    return None


def review_url(experiment_id: str, base: str = "http://127.0.0.1:5000") -> str:
    """The MLflow UI runs view of an experiment filtered on ``tags.pareto = 'true'`` (the front), all dates."""
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
            "&searchFilter=tags.pareto%20%3D%20%27true%27&startTime=ALL")


class Tracker:
    """Writes one sweep to MLflow. Safe to call from several threads (each call names its run id)."""

    def __init__(self, *, uri: str, experiment: str, sweep: str, readonly: bool = False):
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        from mlflow import MlflowClient

        self.uri, self.sweep = uri, sweep
        if readonly:
            from edgetune._paths import missing_sqlite_file

            if (gone := missing_sqlite_file(uri)) is not None:  # MlflowClient would create an empty store
                raise LookupError(f"MLflow store {uri} does not exist ({gone})")
        self.client = MlflowClient(tracking_uri=uri)
        self.readonly = readonly
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None and readonly:
            raise LookupError(f"MLflow experiment {experiment!r} does not exist in {uri}")
        self.experiment_id = exp.experiment_id if exp else self.client.create_experiment(
            experiment, artifact_location=artifact_root(uri))
        self.parent_id = self._parent()

    # -- parent -------------------------------------------------------------------------------------
    def _parent(self) -> str:
        runs = self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.`{SWEEP_TAG}` = '{self.sweep}' and tags.`edgetune.role` = 'sweep'",
                                       max_results=1)
        if runs:
            run_id = runs[0].info.run_id
            if not self.readonly:
                self.client.update_run(run_id, status="RUNNING")
            return run_id
        if self.readonly:
            raise LookupError(f"no MLflow parent run for sweep {self.sweep!r}")
        run = self.client.create_run(self.experiment_id, run_name=f"sweep-{self.sweep}",
                                     tags={SWEEP_TAG: self.sweep, "edgetune.role": "sweep"})
        return run.info.run_id

    def log_sweep_config(self, yaml_text: str, params: dict[str, object]) -> None:
        self.client.log_text(self.parent_id, yaml_text, "sweep.yaml")
        existing = self.client.get_run(self.parent_id).data.params
        new = {k: str(v) for k, v in params.items() if k not in existing}
        if new:
            from mlflow.entities import Param

            self.client.log_batch(self.parent_id, params=[Param(k, v) for k, v in new.items()])

    def log_sweep_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.client.log_batch(self.parent_id, metrics=_metric_list(metrics, step=step))

    def log_parent_file(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.parent_id, str(path), artifact_path)

    def review_url(self, base: str = "http://127.0.0.1:5000") -> str:
        """The MLflow UI view of this sweep's front: the experiment's runs table filtered on ``pareto``, all
        dates (the address ``mlflow ui`` serves by default)."""
        return review_url(self.experiment_id, base)

    def set_note(self, markdown: str) -> None:
        """The parent run's description in the MLflow UI."""
        self.client.set_tag(self.parent_id, "mlflow.note.content", markdown)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_id, status)

    # -- children -----------------------------------------------------------------------------------
    def child_runs(self) -> dict[int, object]:
        """trial number -> Run of this sweep's child runs (all statuses)."""
        runs = self.client.search_runs([self.experiment_id],
                                       filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_id}'",
                                       max_results=50000)
        return {int(r.data.tags[TRIAL_TAG]): r for r in runs if TRIAL_TAG in r.data.tags}

    def reconcile(self) -> set[int]:
        """Delete child runs a dead process left RUNNING; return the trial numbers already logged."""
        logged = set()
        for number, run in self.child_runs().items():
            if run.info.status == "RUNNING":
                log.warning("deleting half-logged MLflow run of trial %d (left by an interrupted sweep)", number)
                self.client.delete_run(run.info.run_id)
            else:
                logged.add(number)
        return logged

    def log_trial(self, number: int, *, params: dict[str, object], metrics: dict[str, float],
                  tags: dict[str, str], json_artifacts: dict[str, object], files: dict[str, Path] | None = None,
                  status: str = "FINISHED") -> str:
        """Write one trial's child run in one go and terminate it with ``status``."""
        from mlflow.entities import Param, RunTag

        label = tags.get("label") or ""
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{number}" + (f" {label}" if label else ""), tags={
            "mlflow.parentRunId": self.parent_id, TRIAL_TAG: str(number), SWEEP_TAG: self.sweep})
        rid = run.info.run_id
        self.client.log_batch(
            rid,
            metrics=_metric_list(metrics),
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            tags=[RunTag(k, str(v)[:8000]) for k, v in tags.items()],
        )
        for name, obj in json_artifacts.items():
            self.client.log_dict(rid, obj, name)
        for artifact_dir, path in (files or {}).items():
            self.client.log_artifact(rid, str(path), artifact_dir)
        self.client.set_terminated(rid, status)
        return rid

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Add metrics to a finished run (the side-by-side timings of front members)."""
        self.client.log_batch(run_id, metrics=_metric_list(metrics))

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(run_id, k, str(v))

    def log_json_to_parent(self, obj: object, name: str) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            p.write_text(json.dumps(obj, indent=2))
            self.client.log_artifact(self.parent_id, str(p))


def _metric_list(metrics: dict[str, float], *, step: int = 0) -> list:
    """MLflow Metric entities (one timestamp, ``step``) for the non-None values of ``metrics``."""
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    return [Metric(k, float(v), ts, step) for k, v in metrics.items() if v is not None]
