"""The sweep: prepare (config, data, model, space, devices, tracking), run trials, keep MLflow and the
front in step with Optuna's storage, write the reports.

Resumable: rerunning the same config continues the study. Trials a killed process left RUNNING are
re-run under their own numbers, child runs it left RUNNING in MLflow are deleted, and finished trials
missing from MLflow are logged from their Optuna record, so each trial ends in MLflow exactly once. A
resume draws new points (``study.resume_seed``), retries each failed trial once (``search.retry_failed``)
and refuses a changed config (``study.check_fingerprint``). Several controllers may run one study at
once: they share its trials and its budget (``search._shared``).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgetune._logging import get_logger
from edgetune.objectives import objective_keys
from edgetune.objectives.constraints import parse_constraint
from edgetune.search._report import SweepReport, all_failed_message
from edgetune.search._shared import StudyLock, TrialOwners
from edgetune.search.backends import get_backend
from edgetune.search.front import front_ranks
from edgetune.search.mirror import MlflowMirror
from edgetune.search.paired import ANCHOR_ATTR, anchor_values
from edgetune.search.records import RECORD_ATTR, TrialRecord
from edgetune.search.runner import SweepHooks, TrialPlan, tell
from edgetune.search.screen import Screen
from edgetune.search.study import (
    BASELINE_ATTR,
    REFINE_ATTR,
    RETRY_ATTR,
    START_ATTR,
    check_fingerprint,
    enqueue_baselines,
    enqueue_retries,
    enqueue_start_points,
    open_study,
    stale_trials,
)
from edgetune.search.tracking import Tracker
from edgetune.spaces import Sparsity

log = get_logger(__name__)

__all__ = ["Sweep", "SweepProgress", "all_failed_message"]


@dataclass
class SweepProgress:
    """What the CLI shows while the sweep runs."""

    total: int
    done: int = 0
    failed: int = 0
    hypervolume: float = 0.0
    n_feasible: int = 0
    best: dict[str, float] = field(default_factory=dict)
    last: str = ""
    phase: str = ""  # what runs now, when it is not a trial (the side-by-side check, a wait for a device)
    values: dict[str, float] = field(default_factory=dict)  # the objectives the trial in ``last`` measured
    on_front: bool = False  # whether that trial is on the front (as of now)


class Sweep(SweepReport):
    """Runs one sweep config. ``hooks`` provides compression and measurement (``search.hooks``); the
    backend named by ``search.backend`` runs the trials (``search.backends``)."""

    def __init__(self, cfg, *, config_text: str, hooks: SweepHooks, workdir: Path, config_path: Path | None = None,
                 on_progress: Callable[[SweepProgress], None] | None = None, fingerprint: dict | None = None,
                 force_resume: bool = False):
        """``fingerprint``: the config parts the trials depend on (``study.config_fingerprint``), checked
        against the stored study's before anything is written; ``force_resume``: continue it even so."""
        self.cfg, self.hooks, self.workdir = cfg, hooks, Path(workdir)
        self.config_path = config_path  # shown in the deploy commands of the MLflow description
        self.keys, self.goals = objective_keys(cfg)
        names = [d.name for d in cfg.devices]
        self.constraints = [parse_constraint(c, devices=names, where=f"`constraints.{i}`")
                            for i, c in enumerate(cfg.constraints)]
        self.shared = StudyLock(cfg.search.storage)  # serialises the bookkeeping of every controller of the study
        with self.shared:
            self.study = open_study(storage=cfg.search.storage, name=cfg.name, goals=self.goals,
                                    sampler=cfg.search.sampler, seed=cfg.search.seed, n_startup=cfg.search.n_startup,
                                    keys=self.keys)
            if fingerprint is not None:
                check_fingerprint(self.study, fingerprint, storage=cfg.search.storage, name=cfg.name,
                                  force=force_resume)
            self.tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.tracking.experiment or cfg.name,
                                   sweep=cfg.name)
            self.tracker.log_sweep_config(config_text, {
                "sweep": cfg.name, "sampler": cfg.search.sampler, "trials": cfg.search.trials, "seed": cfg.search.seed,
                "objectives": ", ".join(f"{k} ({g})" for k, g in zip(self.keys, self.goals, strict=True)),
                "constraints": "; ".join(cfg.constraints) or "none", "devices": ", ".join(names),
                "model": cfg.model.name or cfg.model.factory or cfg.model.path or "", "backend": cfg.search.backend})
        self.owners = TrialOwners(self.study)
        self.on_progress = on_progress
        self.progress = SweepProgress(total=cfg.search.trials)
        self._lock = threading.Lock()
        self._time_split: list[dict[str, float]] = []  # per trial of this run (``time_split``)
        self._mirror_s = 0.0  # the MLflow part of the trial being recorded
        self.mirror = MlflowMirror(self.tracker, keys=self.keys, goals=self.goals, sampler=cfg.search.sampler)
        hooks.watch_devices(self._on_outage)
        hooks.lookup_measured = self._measured_before
        s = cfg.search
        self.screen = Screen(mode=s.screen, keys=self.keys, goals=self.goals, constraints=self.constraints,
                             devices=hooks.devices_for_objectives(), min_trials=s.screen_min_trials)
        self._records: dict[int, TrialRecord] = {}  # finished trials' records, validated once
        if s.screen != "off":
            hooks.screener = self._screen

    def _finished_records(self, states=("COMPLETE",)) -> list[tuple[int, TrialRecord]]:
        """(number, record) of the study's finished trials in ``states`` (each record validated once)."""
        out = []
        for t in self.study.get_trials(deepcopy=False):
            if t.state.name not in states:
                continue
            rec = self._records.get(t.number)
            if rec is None:
                rec = self._records[t.number] = TrialRecord.of(t)
            out.append((t.number, rec))
        return out

    def _screen(self, plan: TrialPlan, evidence: dict, known: dict[str, float]) -> dict:
        """``search.screen``: the evidence of every trial is kept (it calibrates the predictor); sampled
        candidates are judged (``Screen.judge``), the others only recorded."""
        if not plan.screen:
            return {**evidence, "skip": None, "applied": False}
        with self._lock:
            records = self._finished_records()
        return self.screen.judge(evidence, runtime=plan.runtime, known=known, records=records,
                                 baseline=self.baseline_values())

    def _measured_before(self, artifact_hash: str, runtime: str | None) -> tuple[int, TrialRecord] | None:
        """The first completed trial that measured this model on this runtime on every device the trials are
        measured on, with every objective (its own measurement, not a reuse), or None."""
        from optuna.trial import TrialState

        devices = set(self.hooks.devices_for_objectives())
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if (t.user_attrs.get(RECORD_ATTR) or {}).get("artifact_hash") != artifact_hash:
                continue  # asked before every measurement: validate only the records of the same model
            rec = TrialRecord.of(t)
            if (rec.artifact_hash == artifact_hash and rec.runtime == runtime and rec.reused_from is None
                    and devices <= set(rec.fingerprints) and all(k in rec.values for k in self.keys)):
                return t.number, rec
        return None

    # -- baselines -------------------------------------------------------------------------------------
    @staticmethod
    def _uniform_params(space, *, precision: str, sparsity: str | None = None, runtime: str | None = None) -> dict:
        """One value per dimension: ``precision`` on every layer that offers it (else fp32), ``sparsity`` on every
        group that offers it (else dense), the model's own input size, ``runtime`` (default: the first)."""
        params = {}
        for d in space.dimensions:
            if d.kind == "precision":
                params[d.name] = precision if precision in d.choices else ("fp32" if "fp32" in d.choices
                                                                           else d.choices[0])
            elif d.kind == "input_size":  # at the model's own size
                own = str(space.input_size)
                params[d.name] = own if own in d.choices else d.choices[0]
            elif d.kind == "runtime":
                params[d.name] = runtime or d.choices[0]
            else:
                params[d.name] = _at_most(d.choices, sparsity)
        return params

    def baseline_params(self, space) -> dict[str, dict[str, str]]:
        """Dimension values that describe each baseline (fp32, int8-uniform, fp16-uniform where offered), on
        the first runtime of ``space.runtime``; when the space searches runtimes, the uniform int8 / fp16
        baselines are measured on each other runtime too (``int8-uniform@openvino``: int8 placed as that
        runtime wants it, what a user of that runtime would run)."""
        out = {}
        offered = space.offered_precisions
        runtimes = next((d.choices for d in space.dimensions if d.kind == "runtime"), ())
        for name, prec in (("fp32", "fp32"), ("int8-uniform", "int8"), ("fp16-uniform", "fp16")):
            if prec not in offered:
                continue
            out[name] = params = self._uniform_params(space, precision=prec)
            for rt in runtimes[1:] if name != "fp32" else ():
                out[f"{name}@{rt}"] = {**params, **{d.name: rt for d in space.dimensions if d.kind == "runtime"}}
        return out

    def start_params(self, space) -> dict[str, dict[str, str]]:
        """``search.start_points: uniform``: for each offered channel ratio (0 included) and each runtime, every
        group at that ratio (or the largest lower one it offers, e.g. where ``space.sparsity.max_drop`` removed
        it; dense when none) and every layer int8 where offered
        (``space.keep`` pins stay), at the model's own input size; where ``space.scales`` is searched and a
        sensitivity pass (``max_drop``) kept only the harmless choices, with the fewest output scales left.
        Named ``int8 + 50% channels on openvino``.
        The 0% point matters: with one width per block, a sampled trial almost never leaves every block at
        full width, so without it the sweep may never measure int8 alone."""
        if self.cfg.search.start_points != "uniform":
            return {}
        dims = space.dimensions
        ratios = ["dense"] + sorted({c for d in dims if d.kind == "sparsity" for c in d.choices
                                     if c.startswith("channel:")}, key=lambda c: float(c.split(":")[1]))
        runtimes = next((d.choices for d in dims if d.kind == "runtime"), (None,))
        scales = next((d for d in dims if d.kind == "scales"), None)
        fewest = None  # where a sensitivity pass kept only harmless output scale choices: the fewest scales
        if scales is not None and self.cfg.space.sparsity.max_drop is not None:
            fewest = min(scales.choices, key=lambda c: (c.count("+"), [int(x) for x in c.split("+")]))
        out = {}
        for ratio in ratios:
            for rt in runtimes:
                pct = float(ratio.split(":")[1]) if ":" in ratio else 0.0
                params = self._uniform_params(space, precision="int8", sparsity=ratio, runtime=rt)
                if fewest is not None:
                    params[scales.name] = fewest
                out[f"int8 + {pct:.0%} channels" + (f", outputs {fewest}" if fewest else "")
                    + (f" on {rt}" if rt else "")] = params
        return out

    def baseline_values(self) -> dict[str, float] | None:
        for t in self.study.get_trials(deepcopy=False):
            if t.user_attrs.get(BASELINE_ATTR) == "fp32" and t.state.name == "COMPLETE":
                return TrialRecord.of(t).values or None
        return None

    # -- the loop ---------------------------------------------------------------------------------------
    def run(self, space, *, trials: int | None = None) -> None:
        total = trials or self.cfg.search.trials
        if self.owners.closed:  # run again on this object (``--trials`` raised): a new claim on the study
            self.owners = TrialOwners(self.study)
        with self.shared:
            enqueue_baselines(self.study, self.baseline_params(space))
            room = max(0, total - sum(REFINE_ATTR not in t.user_attrs and RETRY_ATTR not in t.user_attrs
                                      for t in self.study.get_trials(deepcopy=False)))  # waiting baselines count
            dropped = enqueue_start_points(self.study, self.start_params(space), room=room)
            retries = enqueue_retries(self.study, space) if self.cfg.search.retry_failed else []
            self.mirror.reconcile(self.study.get_trials(deepcopy=False))
            stale = stale_trials(self.study, self.owners)
        if dropped:
            log.warning("search.start_points: %d start point(s) do not fit in search.trials=%d beside the baselines "
                        "and were left out; raise `search.trials` to measure them all", dropped, total)
        if retries:
            log.warning("resuming: measuring the point of %d failed trial(s) again (%s; `search.retry_failed`)",
                        len(retries), ", ".join(f"#{n}" for n in retries))
        if stale:
            log.warning("resuming: re-running %d trial(s) left unfinished by an interrupted sweep", len(stale))
        self.progress.total = total + sum(REFINE_ATTR in t.user_attrs or RETRY_ATTR in t.user_attrs
                                          for t in self.study.get_trials(deepcopy=False))

        def plans() -> TrialPlan | None:
            while True:
                with self.shared:
                    trial = self._next_trial(total)
                if trial is not None:
                    return self._plan(trial, space, trial.user_attrs.get(BASELINE_ATTR))
                if not self._wait_for_others():
                    return None

        self._update_progress()
        try:
            get_backend(self.cfg.search.backend, self.cfg).run(plans, self.hooks, self._on_result)
            self.refine(space)
            self.finish()
        finally:
            self.owners.close()

    @staticmethod
    def _counted(trials) -> int:
        """Trials that count towards ``search.trials``: neither waiting, refined nor retries."""
        return sum(t.state.name != "WAITING" and REFINE_ATTR not in t.user_attrs and RETRY_ATTR not in t.user_attrs
                   for t in trials)

    def _next_trial(self, total: int):
        """Under the study lock: a trial left by a controller that is gone (re-run under its own number; a
        kill mid-suggest leaves some params unset), else the next one while the budget lasts (enqueued
        retries run beyond it), claimed for this controller; None when there is none."""
        import optuna

        trials = self.study.get_trials(deepcopy=False)
        stale = [t for t in trials if t.state.name == "RUNNING" and self.owners.state(t) == "stale"]
        if stale:
            log.info("re-running trial %d, left unfinished by a controller that is gone", stale[0].number)
            trial = optuna.trial.Trial(self.study, stale[0]._trial_id)
        elif self._counted(trials) < total or any(t.state.name == "WAITING" and RETRY_ATTR in t.user_attrs
                                                  for t in trials):
            trial = self.study.ask()
        else:
            return None
        self.owners.claim(trial._trial_id)
        return trial

    def _wait_for_others(self, poll: float = 2.0) -> bool:
        """The budget is used up here: while another controller still runs trials of the study, wait (one
        of them may die and leave its trial to this one); False once none does."""
        others = [t.number for t in self.study.get_trials(deepcopy=False)
                  if t.state.name == "RUNNING" and self.owners.state(t) == "live"]
        if not others:
            if self.progress.phase.startswith("waiting for trial"):
                self.progress.phase = ""
            return False
        phase = f"waiting for trial(s) {', '.join(map(str, others))} of another controller"
        if self.progress.phase != phase:
            log.info("%s", phase)
            self.progress.phase = phase
            if self.on_progress:
                self.on_progress(self.progress)
        time.sleep(poll)
        return True

    def _on_outage(self, device: str, since: float | None) -> None:
        """A device went down (``since``) or is back (None): say so in the progress line."""
        if since is not None:
            self.progress.phase = (f"waiting for device {device} (down since "
                                   f"{time.strftime('%H:%M:%S', time.localtime(since))})")
            self.progress.last = f"device {device} does not answer: its trials wait " \
                                 f"(up to {self.cfg.search.outage_wait_s:g} s, `search.outage_wait_s`)"
        else:
            self.progress.phase = ""
            self.progress.last = f"device {device} answers again: the sweep goes on"
        if self.on_progress:
            self.on_progress(self.progress)
        self.progress.last = ""

    def _plan(self, trial, space, baseline: str | None) -> TrialPlan:
        """The trial's plan: its values of the space's dimensions (suggested here; an enqueued trial gets the
        values it was enqueued with), its config and runtime, and a refined trial's own recovery."""
        params = {d.name: trial.suggest_categorical(d.name, list(d.choices)) for d in space.dimensions}
        name, _, on = (baseline or "").partition("@")  # "int8-uniform@openvino": that baseline on that runtime
        runtime = (on or space.baseline_runtime) if baseline else space.runtime_from(params)
        config = space.baseline(name, runtime) if baseline else space.config_from(params)
        source = trial.user_attrs.get(REFINE_ATTR)
        if source is not None:  # a refined trial: its config fine-tuned alone (also when a resume re-runs it)
            return TrialPlan(trial.number, trial, config, None, params, runtime, self.cfg.recovery.refined(),
                             int(source))
        screened = not baseline and not ({START_ATTR, RETRY_ATTR} & set(trial.user_attrs))
        return TrialPlan(trial.number, trial, config, baseline, params, runtime, screen=screened)

    # -- refine ---------------------------------------------------------------------------------------
    def refine_candidates(self) -> list[int]:
        """``recovery.refine``: the ``points`` fastest channel-pruned trials (on the first latency objective)
        whose accuracy (the first accuracy objective) is within ``within`` of the fp32 baseline's, one per
        pruned structure (channel widths and input size: precision and runtime variants share the
        fine-tune); refined trials are no candidates."""
        from edgetune.search.front import accuracy_key, latency_key

        spec = self.cfg.recovery.refine
        acc, lat, base = accuracy_key(self.keys), latency_key(self.keys), self.baseline_values()
        if spec.points <= 0 or acc is None or lat is None or not base or acc not in base:
            return []
        cands = []
        for t in self.study.get_trials(deepcopy=False):
            rec = TrialRecord.of(t)
            if (t.state.name != "COMPLETE" or rec.refined_from is not None or t.user_attrs.get(REFINE_ATTR) is not None
                    or not rec.summary.get("n_cut_groups") or rec.values.get(lat) is None
                    or rec.values.get(acc, float("-inf")) < base[acc] - spec.within):
                continue
            config = rec.config or {}
            structure = json.dumps([config.get("sparsity"), config.get("input_size"), config.get("scales")],
                                   sort_keys=True)
            cands.append((rec.values[lat], t.number, structure))
        out, seen = [], set()
        for _, number, structure in sorted(cands):
            if structure not in seen:
                seen.add(structure)
                out.append(number)
        return out[: spec.points]

    def refine(self, space) -> None:
        """Fine-tune the :meth:`refine_candidates` alone (``recovery.refined()``) and measure each as a new
        trial; a candidate refined before (a resumed sweep) is not refined again, and a sweep never holds more
        than ``refine.points`` refined trials. Refined trials do not count towards ``search.trials``."""
        with self.shared:
            picks = self.refine_candidates()
            trials = self.study.get_trials(deepcopy=False)
            done = {int(t.user_attrs[REFINE_ATTR]) for t in trials if t.user_attrs.get(REFINE_ATTR) is not None}
            new = [n for n in picks if n not in done][: max(0, self.cfg.recovery.refine.points - len(done))]
            by_number = {t.number: t for t in trials}
            for n in new:
                self.study.enqueue_trial(dict(by_number[n].params), user_attrs={REFINE_ATTR: n}, skip_if_exists=False)
        if not new:
            return
        spec = self.cfg.recovery.refine
        log.info("refining trial(s) %s: each config fine-tuned alone for %d steps", ", ".join(map(str, new)), spec.steps)
        self.progress.total += len(new)
        self.progress.phase = f"refining {len(new)} pruned point(s)"

        def plans() -> TrialPlan | None:
            with self.shared:  # an enqueued refined trial (another controller may have taken some)
                if not any(t.state.name == "WAITING" and REFINE_ATTR in t.user_attrs
                           for t in self.study.get_trials(deepcopy=False)):
                    return None
                trial = self.study.ask()
                self.owners.claim(trial._trial_id)
            return self._plan(trial, space, None)

        try:
            get_backend(self.cfg.search.backend, self.cfg).run(plans, self.hooks, self._on_result)
        finally:
            self.progress.phase = ""

    def _on_result(self, plan: TrialPlan, result) -> None:
        t0 = time.time()
        with self._lock:
            self._mirror_s = 0.0
            self._record_result(plan, result)
            timing = result.record.timing
            if timing:
                self._time_split.append({"wall": result.wall_s + time.time() - t0, "compress": timing["compress_s"],
                                         "device": timing["device_s"], "screen": timing.get("screen_s", 0.0),
                                         "retake": timing.get("retake_s", 0.0),
                                         "mlflow": self._mirror_s})

    def time_split(self) -> dict[str, float] | None:
        """Where this run's trial time went, summed over its trials: ``compress_pct`` (getting the artifact:
        compressing, or waiting for the overlapped compression), ``device_pct`` (the agents' own measurement
        jobs), ``screen_pct`` (``search.screen``'s rung and features), ``retake_pct`` (paired timings taken
        again because the device was busy: the waits and the takes not kept) and ``framework_pct``, the rest
        (HTTP and uploads, outage waits, Optuna, MLflow, the front; ``mlflow_pct``: the MLflow part of it,
        logging the trial and refreshing the front): None before a trial finished."""
        if not self._time_split:
            return None
        wall = sum(r["wall"] for r in self._time_split)
        comp = sum(r["compress"] for r in self._time_split)
        dev = sum(r["device"] for r in self._time_split)
        scr = sum(r.get("screen", 0.0) for r in self._time_split)
        mlf = sum(r.get("mlflow", 0.0) for r in self._time_split)
        ret = sum(r.get("retake", 0.0) for r in self._time_split)
        return {"trials": len(self._time_split), "wall_s": round(wall, 1), "mlflow_pct": round(100 * mlf / wall, 1),
                "compress_pct": round(100 * comp / wall, 1), "device_pct": round(100 * dev / wall, 1),
                "screen_pct": round(100 * scr / wall, 1), "retake_pct": round(100 * ret / wall, 1),
                "framework_pct": round(100 * max(0.0, wall - comp - dev - scr - ret) / wall, 1)}

    def _record_result(self, plan: TrialPlan, result) -> None:
        """Tell Optuna, log the trial to MLflow, refresh the front and the progress (under ``_lock``)."""
        with self.shared:  # tell and log in one step: another controller never sees one without the other
            trial_id = plan.trial._trial_id
            self.owners.release(trial_id)
            if self.study._storage.get_trial(trial_id).state.is_finished():
                log.warning("trial %d was finished by another controller meanwhile (this one's heartbeat was "
                            "late); its result here is dropped", plan.number)
                return
            if result.ok and self.cfg.search.paired_timing:
                self._anchor(plan, result)
            record = tell(self.study, plan, result, keys=self.keys, constraints=self.constraints,
                          baseline_values=self.baseline_values() if plan.baseline != "fp32" else None)
            frozen = self.study._storage.get_trial(trial_id)
            t_mirror = time.time()
            self.mirror.log_trial(frozen, files=self._artifact_files(result))
        self.mirror.adopt(self.study.get_trials(deepcopy=False))  # runs other controllers logged
        self._refresh_front(step=plan.number)
        self._mirror_s = time.time() - t_mirror
        self.progress.done = sum(1 for t in self.study.get_trials(deepcopy=False) if t.state.is_finished())
        self.progress.failed += 0 if result.ok or record.skipped else 1
        self.progress.last = f"trial {plan.number}: " + (record.label or "") + (
            f" skipped ({record.screen['skip']})" if record.skipped else
            f" FAILED ({result.error})" if not result.ok else "")
        self.progress.values = {k: result.values[k] for k in self.keys if k in result.values} if result.ok else {}
        self.progress.on_front = result.ok and front_ranks(
            self.study.get_trials(deepcopy=False), self.keys, self.goals).get(plan.number) == 0
        if self.on_progress:
            self.on_progress(self.progress)
        self.progress.values = {}

    def _anchor(self, plan: TrialPlan, result) -> None:
        """The trial's latency objectives on each device's anchor scale (``search.paired``); the first paired
        measurement of a device sets its anchor (a study user attr, so a resume keeps it)."""
        if result.record.reused_from is not None:  # the values of a trial anchored when it was measured
            return
        anchors = dict(self.study.user_attrs.get(ANCHOR_ATTR) or {})
        known = set(anchors)
        values = anchor_values(result.values, self.hooks.devices_for_objectives(), anchors,
                               is_reference=plan.baseline == "fp32", trial=plan.number)
        if set(anchors) != known:
            self.study.set_user_attr(ANCHOR_ATTR, anchors)
        result.values = values
        result.record = result.record.model_copy(update={"values": values})

    def _artifact_files(self, result) -> dict[str, Path]:
        if result.artifact is None or self.cfg.search.keep_artifacts != "all":
            return {}
        return {"artifact": result.artifact.onnx_path}

    def _refresh_front(self, step: int) -> None:
        metrics = self.mirror.refresh_front(self.study.get_trials(deepcopy=False), step=step,
                                            baseline=self.baseline_values())
        self.progress.hypervolume, self.progress.n_feasible = metrics["hypervolume"], metrics["n_feasible"]
        self.progress.best = {k: v for k, v in metrics.items() if k.startswith("best_")}

    def _update_progress(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        self.progress.done = sum(1 for t in trials if t.state.is_finished())
        self.progress.failed = sum(1 for t in trials if t.state.name == "FAIL")


def _at_most(choices: tuple[str, ...], want: str | None) -> str:
    """``want`` if offered; for a channel ratio, else the largest channel ratio below it; else dense."""
    if want in choices:
        return want
    dense = next((c for c in choices if c in ("dense", "0", "0.0", "none")), choices[0])
    if not (want or "").startswith("channel:"):
        return dense
    limit = Sparsity.parse(want).ratio
    lower = [s for s in (Sparsity.parse(c) for c in choices if c.startswith("channel:")) if s.ratio <= limit]
    return max(lower, key=lambda s: s.ratio).label() if lower else dense
