"""The end of a sweep, as a part of :class:`~edgetune.search.sweep.Sweep`: the side-by-side check of the front,
the reports (pareto.csv / .html / .png, the front's models) and the note on the MLflow parent run, the
screen's summary, and the trials as a DataFrame."""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgetune._logging import get_logger
from edgetune.errors import SweepError
from edgetune.search.front import front_note, front_ranks, write_reports
from edgetune.search.paired import timing_lines
from edgetune.search.records import TrialRecord, mlflow_key, trials_frame
from edgetune.search.screen import screen_report, summary_lines
from edgetune.search.side_by_side import PREFIX, SBS_ATTR, latency_keys, run_side_by_side

log = get_logger(__name__)

__all__ = ["SweepReport", "all_failed_message"]


def all_failed_message(trials) -> str:
    """Why a sweep has no completed trial: each distinct failure reason, with how many trials it hit."""
    reasons: dict[str, int] = {}
    for t in trials:
        err = TrialRecord.of(t).error or f"trial left {t.state.name}"
        reasons[err] = reasons.get(err, 0) + 1
    listed = "; ".join(f"{n}x {r}" if n > 1 else r for r, n in sorted(reasons.items(), key=lambda x: -x[1]))
    return (f"every trial of the sweep failed ({len(trials)}), for {len(reasons)} distinct "
            f"reason(s): {listed}. Fix the cause, then rerun: the sweep resumes and measures each failed trial "
            "again, once (`search.retry_failed`); `edgetune front --all` lists each trial's error.")


class SweepReport:
    """What a sweep does when its trials are done (mixed into ``Sweep``, whose study, tracker, hooks, mirror,
    progress and config it reads)."""

    def screen_summary(self) -> dict:
        """``search.screen.screen_report`` on the study's finished trials against the current front."""
        trials = self.study.get_trials(deepcopy=False)
        with self._lock:
            records = self._finished_records(states=("COMPLETE", "PRUNED"))
        return screen_report(records, keys=self.keys, ranks=front_ranks(trials, self.keys, self.goals))

    def _screen_lines(self) -> list[str]:
        """Log the screen's summary (``screen.summary_lines``; the parent run gets its metrics) and return
        its lines for the sweep's note."""
        lines, metrics = summary_lines(self.screen_summary(), shadow=self.cfg.search.screen == "shadow")
        for line in lines:
            log.info("%s", line)
        self.tracker.log_sweep_metrics(self.progress.done, metrics)
        return lines

    def frame(self):
        trials = self.study.get_trials(deepcopy=False)
        ranks = front_ranks(trials, self.keys, self.goals)
        run_ids = {n: r.info.run_id for n, r in self.tracker.child_runs().items()}
        return trials_frame(trials, self.keys, ranks=ranks, run_ids=run_ids,
                            side_by_side=self.study.user_attrs.get(SBS_ATTR))

    def side_by_side(self) -> dict | None:
        """Time fp32 and the front again, side by side (``search.side_by_side_runs`` runs each); see
        ``search.side_by_side``. A failure here keeps every trial and reports the sweep's own timings."""
        runs = self.cfg.search.side_by_side_runs
        devices = {d: m for d, m in latency_keys(self.keys).items() if d in self.hooks.devices_for_objectives()}
        self.study.set_user_attr(SBS_ATTR, None)  # a rerun's front may differ: never keep a stale check
        if runs <= 0 or not devices:
            return None
        df = self.frame()
        fp32 = df[(df["baseline"] == "fp32") & (df["state"] == "COMPLETE")]
        rows = [r for _, r in fp32.head(1).iterrows()] + [r for _, r in df[df["pareto"]].iterrows()
                                                          if r.get("baseline") != "fp32"]
        members = {}
        for r in rows:
            art = self.hooks.artifact_dir(r["artifact"]) if r["artifact"] else None
            if art is not None and (art / "model.onnx").is_file():
                runtime = r.get("runtime") if isinstance(r.get("runtime"), str) else None
                members[int(r["trial"])] = (str(art / "model.onnx"), runtime)
        if fp32.empty or int(fp32.iloc[0]["trial"]) not in members or len(members) < 2:
            log.warning("side-by-side check skipped: the fp32 baseline or the front members' ONNX files are missing")
            return None
        base = int(fp32.iloc[0]["trial"])

        self.progress.last = (f"side-by-side check: fp32 and {len(members) - 1} front point(s), {runs} "
                              f"interleaved runs each on {', '.join(devices)}")
        self.progress.phase = "side-by-side check"
        if self.on_progress:
            self.on_progress(self.progress)
        self.progress.last = ""
        try:
            result = run_side_by_side(members, devices=devices, compare=self.hooks.compare_latency)
        except Exception as exc:  # an agent gone at the very end must not cost the sweep its reports
            log.warning("side-by-side check failed (%s: %s); speed-ups come from each trial's own timing",
                        type(exc).__name__, exc)
            return None
        finally:
            self.progress.phase = ""
        result["baseline_trial"] = base
        self.study.set_user_attr(SBS_ATTR, result)
        ref = result["values"][str(base)]
        for number, vals in result["values"].items():
            rid = self.mirror.run_ids.get(int(number))
            if rid is None:
                continue
            metrics = {PREFIX + mlflow_key(k): v for k, v in vals.items()}
            for device in devices:
                key = f"latency_p50_ms@{device}"
                if vals.get(key) and ref.get(key):
                    metrics[f"{PREFIX}speedup.{device}"] = ref[key] / vals[key]
            self.tracker.log_metrics(rid, metrics)
        return result

    def finish(self) -> None:
        self.side_by_side()
        df = self.frame()
        warnings, notes = timing_lines(df, self.keys, max_spread=self.cfg.search.max_paired_spread)
        split = self.time_split()
        if split is not None:
            line = (f"trial time ({split['trials']} trials, {split['wall_s']:.0f} s): compression "
                    f"{split['compress_pct']:.0f}%, device measurement {split['device_pct']:.0f}%, busy-device "
                    f"retakes {split['retake_pct']:.0f}%, screening {split['screen_pct']:.0f}%, framework "
                    f"{split['framework_pct']:.0f}% (HTTP and uploads, Optuna, MLflow: {split['mlflow_pct']:.0f}%)")
            log.info("%s", line)
            notes.append(line)
            self.tracker.log_sweep_metrics(self.progress.done, {f"time_{k}": v for k, v in split.items()
                                                                if k.endswith("_pct")})
        if self.cfg.search.screen != "off":
            notes.extend(self._screen_lines())
        for warning in warnings:
            log.warning("%s", warning)
        with tempfile.TemporaryDirectory() as d:
            paths = write_reports(df, self.keys, self.goals, Path(d), title=f"edgetune sweep '{self.cfg.name}'")
            for p in paths.values():
                self.tracker.log_parent_file(p)
            for _, row in df[df["pareto"]].iterrows():
                art = self.hooks.artifact_dir(row["artifact"]) if row["artifact"] else None
                if art is None:
                    continue
                rid = row.get("mlflow_run_id")
                have = {f.path for f in self.tracker.client.list_artifacts(rid, "model")} if rid else set()
                for f in ("model.onnx", "manifest.json"):
                    if (art / f).is_file():
                        self.tracker.log_parent_file(art / f, f"front/trial-{row['trial']}")
                        if rid and f"model/{f}" not in have:
                            self.tracker.client.log_artifact(rid, str(art / f), "model")
        devices = self.hooks.devices_for_objectives()
        self.tracker.set_note(front_note(df, self.keys, sweep=self.cfg.name, url=self.tracker.review_url(),
                                         config=str(self.config_path or "SWEEP.yaml"),
                                         device=devices[0] if devices else None, goals=self.goals,
                                         timing=[f"**warning**: {w}" for w in warnings] + notes))
        trials = self.study.get_trials(deepcopy=False)
        if trials and not any(t.state.name == "COMPLETE" for t in trials):
            self.tracker.finish("FAILED")
            raise SweepError(all_failed_message(trials))
        self.tracker.finish()
