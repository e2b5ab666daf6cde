"""A sweep killed with SIGKILL and restarted ends with exactly N trials and N MLflow child runs."""

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
