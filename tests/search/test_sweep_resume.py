"""A sweep killed with SIGKILL and restarted ends with exactly N trials and N MLflow child runs; a resumed
sweep draws new points (not its first ones again) and measures a failed trial's point once more; a resume
whose config changed is refused, naming the change, unless forced."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from edgetune.search.tracking import TRIAL_TAG, Tracker

TRIALS = 4


def complete_trials(db) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as con:
            return con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def search(path, workdir, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "edgetune.cli", "search", str(path), "--local", "--workdir",
                             str(workdir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kw)


@pytest.mark.slow
def test_sigkill_then_resume(tmp_path, make_sweep, sweep_workdir):
    import optuna

    path = make_sweep(tmp_path, name="resume", trials=TRIALS, ratios=(0.0,))  # precision only: one export
    db = tmp_path / "optuna.db"
    proc = search(path, sweep_workdir)
    deadline = time.time() + 400
    while complete_trials(db) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.5)
    assert proc.poll() is None, proc.stdout.read()
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its local agent, mid-sweep
    proc.wait()
    killed_at = complete_trials(db)
    assert 2 <= killed_at < TRIALS

    again = search(path, sweep_workdir)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out

    study = optuna.load_study(study_name="resume", storage=f"sqlite:///{db}")
    trials = study.get_trials()
    assert len(trials) == TRIALS
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert sorted(t.number for t in trials) == list(range(TRIALS))
    tracker = Tracker(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="resume", sweep="resume", readonly=True)
    runs = tracker.client.search_runs([tracker.experiment_id],
                                      filter_string=f"tags.`mlflow.parentRunId` = '{tracker.parent_id}'")
    numbers = sorted(int(r.data.tags[TRIAL_TAG]) for r in runs)
    assert numbers == list(range(TRIALS))  # one child per trial: none lost, none twice
    assert all(r.info.status == "FINISHED" for r in runs)


class Killed(BaseException):
    """Stands for SIGKILL in-process: nothing in the sweep catches it, the trial in flight stays RUNNING."""


def controller(sweep, path, workdir, *, kill_at: int | None = None, fail: int | None = None):
    """A new controller of ``sweep``'s study (a resume): same hooks, new Sweep; its measurement of trial
    ``kill_at`` is killed, its compression of trial ``fail`` fails."""
    from edgetune.errors import CompressionError
    from edgetune.search.sweep import Sweep

    hooks = sweep.hooks
    real_compress, real_measure = type(hooks).compress.__get__(hooks), type(hooks).measure.__get__(hooks)
    numbers: list[int] = []

    def compress(plan):
        numbers.append(plan.number)
        if plan.number == fail:
            raise CompressionError(f"injected failure for trial {fail}")
        return real_compress(plan)

    def measure(artifact, device, runtime=None):
        if numbers[-1] == kill_at:
            raise Killed
        return real_measure(artifact, device, runtime)

    hooks.compress, hooks.measure = compress, measure
    return Sweep(sweep.cfg, config_text=path.read_text(), hooks=hooks, workdir=workdir)


def test_a_resumed_sweep_draws_new_points_and_retries_its_failed_trial(tmp_path, make_sweep, local_agent,
                                                                       sweep_workdir):
    from edgetune.search.study import RETRY_ATTR
    from edgetune.search.wiring import prepare_sweep

    trials = 5  # fp32, int8-uniform, then sampled points
    path = make_sweep(tmp_path, name="redraw", trials=trials, ratios=(0.0,))
    first, space, cfg = prepare_sweep(path, workdir=sweep_workdir, local_agents=local_agent)
    runs = [controller(first, path, sweep_workdir, fail=2, kill_at=3),  # #2 fails, killed in #3
            None, None]
    with pytest.raises(Killed):
        runs[0].run(space)
    runs[1] = controller(first, path, sweep_workdir, kill_at=5)  # re-runs #3, retries #2 as #4, killed in #5
    with pytest.raises(Killed):
        runs[1].run(space)
    runs[2] = controller(first, path, sweep_workdir)  # re-runs #5: the budget is used up
    runs[2].run(space)

    done = runs[2].study.get_trials()
    assert [t.number for t in done] == list(range(trials + 1))  # the retry runs beyond the budget
    assert [t.state.name for t in done] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE", "COMPLETE"]
    retry = [t for t in done if RETRY_ATTR in t.user_attrs]
    assert [(t.number, t.user_attrs[RETRY_ATTR]) for t in retry] == [(4, 2)]  # retried once, as a new trial
    assert retry[0].params == done[2].params
    sampled = [t for t in done if not t.user_attrs.get("baseline") and RETRY_ATTR not in t.user_attrs]
    points = {tuple(sorted(t.params.items())) for t in sampled}
    assert len(sampled) == trials - 2 and len(points) == len(sampled)  # as many distinct points as a run unkilled
    tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.name, sweep=cfg.name, readonly=True)
    logged = tracker.client.search_runs([tracker.experiment_id],
                                        filter_string=f"tags.`mlflow.parentRunId` = '{tracker.parent_id}'")
    assert sorted(int(r.data.tags[TRIAL_TAG]) for r in logged) == list(range(trials + 1))  # each once


def test_a_changed_config_is_refused_on_resume_unless_forced(tmp_path, make_sweep, local_agent, sweep_workdir):
    import yaml

    from edgetune.errors import ConfigError
    from edgetune.search.study import FINGERPRINT_ATTR
    from edgetune.search.wiring import prepare_sweep

    path = make_sweep(tmp_path, name="changed", trials=2, ratios=(0.0,))
    sweep, _, _ = prepare_sweep(path, workdir=sweep_workdir, local_agents=local_agent)
    stored = sweep.study.user_attrs[FINGERPRINT_ATTR]
    assert set(stored) == {"space", "objectives", "constraints", "model", "data"}
    again, _, _ = prepare_sweep(path, workdir=sweep_workdir, local_agents=local_agent)  # the same config resumes
    assert again.study.user_attrs[FINGERPRINT_ATTR] == stored

    cfg = yaml.safe_load(path.read_text())
    cfg["constraints"] = ["size_bytes <= 1.2 * baseline.size_bytes"]
    cfg["space"]["sparsity"]["ratios"] = [0.0, 0.5]
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with pytest.raises(ConfigError) as err:
        prepare_sweep(path, workdir=sweep_workdir, local_agents=local_agent)
    msg = str(err.value)
    assert "study 'changed' in sqlite:///" in msg
    assert ("constraints changed (size_bytes <= 1.5 * baseline.size_bytes -> size_bytes <= 1.2 * "
            "baseline.size_bytes)") in msg
    assert "space changed (15 dimensions -> " in msg and ": added sparsity/" in msg
    assert "model changed" not in msg and "data changed" not in msg and "objectives changed" not in msg
    assert "new `name:` or another `search.storage`" in msg and "--force-resume" in msg

    forced, _, _ = prepare_sweep(path, workdir=sweep_workdir, local_agents=local_agent, force_resume=True)
    now = forced.study.user_attrs[FINGERPRINT_ATTR]
    assert now["constraints"]["summary"] == "size_bytes <= 1.2 * baseline.size_bytes"  # the new config, stored
    prepare_sweep(path, workdir=sweep_workdir, local_agents=local_agent)  # and resumed without the flag
