"""MLflow tracking of a sweep through ``MlflowClient`` with explicit run ids (thread- and worker-safe).

One parent run per sweep (tag ``edgetune.sweep``), one child run per trial (tag ``edgetune.trial``).
A child run is written in one go after its trial ends and marked FINISHED / FAILED; on resume, child
runs left RUNNING by a dead process are deleted and re-logged from the Optuna record, so no trial is
lost or logged twice. Params are written once; per-layer maps go in a JSON artifact.

The review link opens a *saved view* of MLflow's experiment page (checked on MLflow 3.17.2): the UI reads
``?viewStateShareKey=<key>`` and loads the experiment tag ``mlflow.sharedViewState.<key>``, a JSON of its
search facets (filter, sort) and UI state (visible columns, their order and widths, charts), which a URL
cannot carry. :meth:`Tracker.save_review_views` writes two such views per sweep (the front as a flat table;
all its trials with a scatter of the objectives) and a line of links in the experiment's description.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

from edgetune._logging import get_logger

log = get_logger(__name__)

__all__ = ["Tracker", "TRIAL_TAG", "SWEEP_TAG", "review_url", "ui_base", "ui_serve_args", "UI_ENV", "RUN_COLOR_TAG",
           "FRONT_COLOR", "OTHER_COLOR"]

SWEEP_TAG = "edgetune.sweep"
TRIAL_TAG = "edgetune.trial"
UI_ENV = "EDGETUNE_MLFLOW_UI"  # the MLflow UI the links point at, when it is not the tracking server itself
DEFAULT_UI = "http://127.0.0.1:5000"  # what `mlflow ui` serves by default
VIEW_TAG_PREFIX = "mlflow.sharedViewState."  # experiment tag of a saved view (MLflow UI: ?viewStateShareKey=)
NOTE_TAG = "mlflow.note.content"  # a run's or an experiment's description in the MLflow UI (markdown)
RUN_COLOR_TAG = "mlflow.runColor"  # a run's colour in the MLflow UI's table and charts
FRONT_COLOR, OTHER_COLOR = "#d6336c", "#9aa5b1"  # the front and the other trials (as in pareto.html / pareto.png)
_LINE_MARK = re.compile(r"<!-- edgetune:[A-Za-z0-9_.-]+ -->\s*$")  # ends a sweep's line in the description


def artifact_root(uri: str) -> str | None:
    """Artifacts beside a sqlite store (``sqlite:///x/mlflow.db`` -> ``x/mlartifacts``)."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///")).resolve()
        return (db.parent / "mlartifacts").as_uri()
    return None


def ui_base(uri: str) -> str:
    """The MLflow UI that serves the store ``uri``: ``$EDGETUNE_MLFLOW_UI`` when set, else the tracking server
    itself when ``uri`` is http(s), else ``http://127.0.0.1:5000`` (``mlflow ui``'s default address)."""
    if env := os.environ.get(UI_ENV, "").strip():
        return env.rstrip("/")
    if uri.startswith(("http://", "https://")):
        return uri.rstrip("/")
    return DEFAULT_UI


def ui_serve_args(uri: str, base: str) -> str | None:
    """The arguments of the ``mlflow`` command that serves ``base`` for the store ``uri`` (``ui
    --backend-store-uri sqlite:///mlflow.db --port 5001``); None when ``uri`` is a server (it serves its UI)."""
    if uri.startswith(("http://", "https://")):
        return None
    parts = urlsplit(base)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    args = ["ui", "--backend-store-uri", uri]
    if parts.hostname not in ("127.0.0.1", "localhost"):  # MLflow >= 3.5 answers other Host headers with 403
        args += ["--host", "0.0.0.0", "--allowed-hosts", f"{parts.hostname}:{port}"]
    if port != 5000:
        args += ["--port", str(port)]
    return " ".join(args)


def view_key(sweep: str, view: str) -> str:
    """The share key of a sweep's saved view (``edgetune-<sweep>-front`` / ``-trials``)."""
    return f"edgetune-{sweep}-{view}"


def review_url(experiment_id: str, *, sweep: str, base: str = DEFAULT_UI, view: str = "front") -> str:
    """The MLflow UI address of a sweep's saved view: ``front`` (its table) or ``trials`` (the chart view)."""
    chart = "&compareRunsMode=CHART" if view == "trials" else ""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={view_key(sweep, view)}{chart}"


def filter_url(experiment_id: str, *, sweep: str, base: str = DEFAULT_UI) -> str:
    """The front without a saved view (a sweep logged before edgetune wrote them): the runs filtered on the
    sweep's ``pareto`` tag, sorted by name (any order but the default, start time, keeps the rows flat
    instead of nested under the sweep's parent run), all dates; MLflow's default columns."""
    flt = quote(f"tags.`{SWEEP_TAG}` = '{sweep}' and tags.pareto = 'true'", safe="")
    order = quote("tags.`mlflow.runName`", safe="")
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?searchFilter={flt}"
            f"&orderByKey={order}&orderByAsc=true&startTime=ALL")


def _canonical(kind: str, key: str) -> str:
    """A column of the MLflow runs table: ``metrics.`map50_95.local```, ``params.`runtime```, ``tags.`label```."""
    return f"{kind}.`{key}`"


def _view_state(*, section_name: str, search_filter: str, order_by: str, ascending: bool, columns: list[str],
                 charts: list[dict], section_id: str) -> dict:
    """A saved view of MLflow's experiment page. The UI picks its search facets and UI-state fields and
    merges them over its defaults (``useSharedExperimentViewState``); a URL cannot carry the columns."""
    order = [_canonical("attributes", "Run Name"), "runDateAndNestInfo", *columns]  # widths apply to these only
    widths = {c: 170 for c in columns} | {order[0]: 300, _canonical("tags", "label"): 340}
    return {"searchFilter": search_filter, "orderByKey": order_by, "orderByAsc": ascending, "startTime": "ALL",
            "selectedColumns": columns, "columnOrder": order, "columnWidths": widths,
            "runsHiddenMode": "SHOW_ALL",  # charts plot every run, not the first 10
            "compareRunCharts": charts, "isAccordionReordered": False, "hideEmptyCharts": True,
            "compareRunSections": [{"uuid": section_id, "name": section_name, "display": True, "isReordered": False,
                                    "deleted": False, "isGenerated": False, "columns": 2, "cardHeight": 480}]}


def _view_tag_value(name: str, state: dict, created_ms: int) -> str:
    """The experiment-tag value of a saved view, for both readers: the named envelope ``{name, createdAt,
    state}`` that MLflow 3.17 reads (and lists in the page's saved-views menu), and the state's fields at the
    top level, which earlier MLflow versions read (their share links held the bare state)."""
    return json.dumps({**state, "name": name, "createdAt": created_ms, "state": json.dumps(state)})


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

    def review_url(self, base: str | None = None, *, view: str = "front") -> str:
        """The MLflow UI address of this sweep's saved view (:meth:`save_review_views`): ``front``, the front
        members as a flat table with their objectives as columns, or ``trials``, the chart view of all its
        trials. ``base``: the UI (default :func:`ui_base`). A sweep without saved views: its front filtered."""
        base = base or ui_base(self.uri)
        if VIEW_TAG_PREFIX + view_key(self.sweep, view) in self.client.get_experiment(self.experiment_id).tags:
            return review_url(self.experiment_id, sweep=self.sweep, base=base, view=view)
        return filter_url(self.experiment_id, sweep=self.sweep, base=base)

    def save_review_views(self, *, metrics: list[str], params: list[str], tags: list[str], order_by: str,
                          ascending: bool, scatters: list[tuple[str, str]]) -> None:
        """Write this sweep's two saved views of the MLflow experiment page and its line of links at the top
        of the experiment's description (above any text a user wrote there, which is kept).

        ``front``: the runs tagged ``pareto = true``, flat (sorted by ``order_by``, a metric key), the columns
        ``metrics`` / ``params`` / ``tags`` (MLflow keys) in this order; ``trials``: every trial of the sweep,
        the front first. Both: a chart section with a scatter per (x, y) metric pair of ``scatters`` where each
        run has its colour (:data:`RUN_COLOR_TAG`: the front red, the rest grey)."""
        columns = ([_canonical("metrics", k) for k in metrics] + [_canonical("params", k) for k in params]
                   + [_canonical("tags", k) for k in tags])
        section = f"edgetune-{self.sweep}-objectives"
        charts = [{"uuid": f"edgetune-{self.sweep}-{i}", "type": "SCATTER", "metricSectionId": section,
                   "xaxis": {"key": x, "type": "METRIC"}, "yaxis": {"key": y, "type": "METRIC"},
                   "deleted": False, "isGenerated": False}
                  for i, (x, y) in enumerate(scatters)]
        common = {"section_name": f"edgetune {self.sweep}: objectives (the front red, other trials grey)",
                  "columns": columns, "charts": charts, "section_id": section}
        views = {  # view -> (its name in the saved-views menu, its state)
            "front": (f"edgetune {self.sweep}: the front", _view_state(
                search_filter=f"tags.`{SWEEP_TAG}` = '{self.sweep}' and tags.pareto = 'true'",
                order_by=_canonical("metrics", order_by), ascending=ascending, **common)),
            "trials": (f"edgetune {self.sweep}: all trials", _view_state(
                search_filter=f"tags.`mlflow.parentRunId` = '{self.parent_id}'",
                order_by=_canonical("tags", "pareto"), ascending=False, **common)),  # the front in the first page
        }
        now = int(time.time() * 1000)
        for i, (view, (title, state)) in enumerate(views.items()):  # newest first in the saved-views menu
            self.client.set_experiment_tag(self.experiment_id, VIEW_TAG_PREFIX + view_key(self.sweep, view),
                                           _view_tag_value(title, state, now - i))
        self._set_description_line(self._review_line())

    def _review_line(self) -> str:
        """This sweep's links in the experiment's description (relative: they work from any host)."""
        exp, run = f"#/experiments/{self.experiment_id}", f"#/experiments/{self.experiment_id}/runs/{self.parent_id}"
        links = [("the front", f"{exp}/runs?viewStateShareKey={view_key(self.sweep, 'front')}"),
                 ("all trials as a scatter", f"{exp}/runs?viewStateShareKey={view_key(self.sweep, 'trials')}"
                                             "&compareRunsMode=CHART"),
                 (f"summary: run sweep-{self.sweep}", run),
                 ("pareto.png", f"{run}/artifacts/pareto.png"), ("pareto.html", f"{run}/artifacts/pareto.html")]
        return f"**edgetune sweep `{self.sweep}`**: " + " · ".join(f"[{t}]({u})" for t, u in links)

    def _set_description_line(self, line: str) -> None:
        """Put ``line`` first in the experiment's description, then the other sweeps' lines, then the rest."""
        mark = f"<!-- edgetune:{self.sweep} -->"
        old = self.client.get_experiment(self.experiment_id).tags.get(NOTE_TAG, "")
        lines = [x for x in old.splitlines() if not x.rstrip().endswith(mark)]
        others = [x for x in lines if _LINE_MARK.search(x)]
        rest = "\n".join(x for x in lines if not _LINE_MARK.search(x)).strip()
        text = "\n\n".join([f"{line} {mark}", *others, *([rest] if rest else [])])
        if text != old:
            self.client.set_experiment_tag(self.experiment_id, NOTE_TAG, text)

    def set_note(self, markdown: str) -> None:
        """The parent run's description in the MLflow UI; when the parent holds ``pareto.png``, the plot
        follows it inline (the UI serves it at ``get-artifact``) with a link to ``pareto.html``."""
        files = {f.path for f in self.client.list_artifacts(self.parent_id)}
        if "pareto.png" in files:
            run = f"#/experiments/{self.experiment_id}/runs/{self.parent_id}"
            markdown += (f"\n\n![pareto.png: every trial, the front in colour](get-artifact?path=pareto.png"
                         f"&run_uuid={self.parent_id})\n\n"
                         + (f"[pareto.html]({run}/artifacts/pareto.html): the same, interactive."
                            if "pareto.html" in files else ""))
        self.client.set_tag(self.parent_id, NOTE_TAG, markdown.rstrip())

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
