"""Several controllers on one study: they share its trials and its budget (no trial run twice, none
logged twice to MLflow), and controllers starting at once on a fresh storage create one study with one
set of baselines."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from edgetune.search._shared import OWNER_ATTR
from edgetune.search.tracking import SWEEP_TAG, TRIAL_TAG, Tracker
from edgetune.search.wiring import prepare_sweep

TRIALS = 4


def owner_pid(trial) -> int | None:
    owner = trial.system_attrs.get(OWNER_ATTR)
    return int(owner["pid"]) if isinstance(owner, dict) else None


@pytest.mark.slow
def test_a_second_controller_shares_the_study_without_rerunning_a_trial_in_flight(tmp_path, make_sweep, local_agent,
                                                                                  sweep_workdir):
    agent = local_agent.agents[0]
    path = make_sweep(tmp_path, name="shared", trials=TRIALS, ratios=(0.0,), url=agent.url)
    sweep, space, cfg = prepare_sweep(path, workdir=sweep_workdir, local_agents=local_agent)
    env = {**os.environ, "EDGETUNE_AGENT_TOKEN": local_agent.token, "OMP_NUM_THREADS": "1"}
    second: list[subprocess.Popen] = []
    real_measure = sweep.hooks.measure

    def claimed_by(pid: int) -> bool:
        return any(t.state.name == "RUNNING" and owner_pid(t) == pid for t in sweep.study.get_trials())

    def measure(artifact, device, runtime=None):
        running = [t.number for t in sweep.study.get_trials() if t.state.name == "RUNNING"]
        if not second and running == [1]:  # trial 1 in flight here: a second controller joins the study
            second.append(subprocess.Popen([sys.executable, "-m", "edgetune.cli", "search", str(path), "--workdir",
                                            str(sweep_workdir)], env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True))
            deadline = time.time() + 240
            while not claimed_by(second[0].pid) and second[0].poll() is None and time.time() < deadline:
                time.sleep(0.2)  # until it runs a trial of its own
            assert claimed_by(second[0].pid), second[0].stdout.read() if second[0].poll() is not None else "timeout"
        return real_measure(artifact, device, runtime)

    sweep.hooks.measure = measure
    sweep.run(space)
    out, _ = second[0].communicate(timeout=300)
    assert second[0].returncode == 0, out
    assert "UpdateFinishedTrialError" not in out

    trials = sweep.study.get_trials()
    assert [t.number for t in trials] == list(range(TRIALS))  # the budget, shared: no trial added, none twice
    assert all(t.state.name == "COMPLETE" for t in trials)
    pids = {owner_pid(t) for t in trials}
    assert pids == {os.getpid(), second[0].pid}  # each ran some of them
    assert owner_pid(trials[1]) == os.getpid()  # the trial in flight stayed with its controller
    tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.name, sweep=cfg.name, readonly=True)
    children = tracker.client.search_runs([tracker.experiment_id],
                                          filter_string=f"tags.`mlflow.parentRunId` = '{tracker.parent_id}'")
    assert sorted(int(r.data.tags[TRIAL_TAG]) for r in children) == list(range(TRIALS))  # one MLflow run each
    assert all(r.info.status == "FINISHED" for r in children)
    parents = tracker.client.search_runs([tracker.experiment_id], filter_string=f"tags.`{SWEEP_TAG}` = 'shared' and "
                                         "tags.`edgetune.role` = 'sweep'")
    assert len(parents) == 1


OPEN = """
import sys, time
import optuna  # imported before the start signal: the three open the storage together
from pathlib import Path
from edgetune.search._shared import StudyLock
from edgetune.search.study import enqueue_baselines, open_study
url, go = sys.argv[1], Path(sys.argv[2])
while not go.exists():
    time.sleep(0.01)
with StudyLock(url):
    study = open_study(storage=url, name="race", goals=["max", "min"], sampler="random", seed=0, keys=["a", "b"])
    enqueue_baselines(study, {"fp32": {"x": "fp32"}, "int8-uniform": {"x": "int8"}})
"""


def test_controllers_starting_at_once_on_fresh_storage_create_one_study(tmp_path):
    import optuna

    url, go = f"sqlite:///{tmp_path / 'optuna.db'}", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", OPEN, url, str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    time.sleep(2.0)  # each has imported edgetune and waits: start them together
    go.touch()
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    summaries = optuna.get_all_study_summaries(storage=url)
    assert [s.study_name for s in summaries] == ["race"]
    trials = optuna.load_study(study_name="race", storage=url).get_trials()
    assert sorted(t.user_attrs["baseline"] for t in trials) == ["fp32", "int8-uniform"]  # enqueued once
    assert all(t.state.name == "WAITING" for t in trials)
