"""Failed trials are results: a compression that raises and an agent that dies (and stays dead past
``search.outage_wait_s``) end as FAILED runs with a reason, and the sweep completes. Config errors fail
before any work, naming the field."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgetune.errors import CompressionError
from edgetune.search.tracking import Tracker
from edgetune.search.wiring import prepare_sweep


def test_failures_are_recorded_and_the_sweep_goes_on(tmp_path, make_sweep, sweep_workdir):
    from edgetune.device_agents.local import start_local_agents

    path = make_sweep(tmp_path, name="failing", trials=4, sbs_runs=20, ratios=(0.0,), search={"outage_wait_s": 1})
    with start_local_agents(1, threads=1) as agents:
        sweep, space, cfg = prepare_sweep(path, workdir=sweep_workdir, local_agents=agents)
        hooks = sweep.hooks
        real_compress, real_measure = hooks.compress, hooks.measure

        def compress(plan):
            if plan.number == 2:  # injected: stands for any error inside compression
                raise CompressionError("injected failure for trial 2")
            return real_compress(plan)

        def measure(artifact, device, runtime=None):
            if plan_numbers and plan_numbers[-1] == 3:
                agents.agents[0].process.kill()  # the device agent dies mid-sweep
                agents.agents[0].process.wait()
            return real_measure(artifact, device, runtime)

        plan_numbers: list[int] = []
        hooks.compress = lambda plan: (plan_numbers.append(plan.number), compress(plan))[1]
        hooks.measure = measure
        sweep.run(space)

    trials = sweep.study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    errors = [t.user_attrs["record"].get("error") for t in trials]
    assert "injected failure for trial 2" in errors[2]
    assert "measurement on 'local' failed: device 'local'" in errors[3]
    assert "has not answered since" in errors[3] and "`search.outage_wait_s` = 1 s" in errors[3]
    assert trials[3].user_attrs["record"]["outage_wait_s"] is not None  # it waited for the device, then gave up
    tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.name, sweep=cfg.name, readonly=True)
    runs = tracker.child_runs()
    assert sorted(runs) == [0, 1, 2, 3]
    for n in (2, 3):
        assert runs[n].info.status == "FAILED"
        assert runs[n].data.tags["error"] == errors[n]
    assert "outage_wait_s" in runs[3].data.tags and "outage_wait_s" not in runs[2].data.tags
    assert runs[0].info.status == "FINISHED"
    # the side-by-side check at the end found the agent dead: no check recorded, the reports are still there
    assert sweep.study.user_attrs.get("side_by_side") is None
    files = {f.path for f in tracker.client.list_artifacts(tracker.parent_id)}
    assert {"pareto.csv", "pareto.html", "pareto.png"} <= files


def test_a_sweep_whose_every_trial_failed_says_why(tmp_path, make_sweep, sweep_workdir, local_agent):
    from edgetune.errors import SweepError

    path = make_sweep(tmp_path, name="all-failing", trials=3)
    sweep, space, cfg = prepare_sweep(path, workdir=sweep_workdir, local_agents=local_agent)

    def compress(plan):  # injected: two distinct causes over three trials
        raise CompressionError("out of disk" if plan.number % 2 else "graph surgery broke")

    sweep.hooks.compress = compress
    with pytest.raises(SweepError, match=r"every trial of the sweep failed \(3\), for 2 distinct reason") as err:
        sweep.run(space)
    assert "2x compression failed: graph surgery broke" in str(err.value)
    assert "compression failed: out of disk" in str(err.value)
    tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.name, sweep=cfg.name, readonly=True)
    assert tracker.client.get_run(tracker.parent_id).info.status == "FAILED"
    assert sorted(tracker.child_runs()) == [0, 1, 2]  # every failed trial is still logged


@pytest.mark.parametrize(("patch", "match"), [
    ({"objectives": [{"metric": "map5095"}]}, "unknown metric 'map5095'"),
    ({"objectives": [{"metric": "latency_p50_ms", "device": "pi"}]}, "`objectives.0.device` 'pi' is not in `devices:`"),
    ({"constraints": ["map50_95 >>= 3"]}, "`constraints.0` 'map50_95 >>= 3' does not parse"),
    ({"search": {"sampler": "cmaes"}}, "`search.sampler`"),
])
def test_config_errors_fail_before_any_work(tmp_path, make_sweep, patch, match):
    path = make_sweep(tmp_path, name="bad", trials=2, extra=patch, mlflow_db=None)  # none: the CLI must make none
    r = subprocess.run([sys.executable, "-m", "edgetune.cli", "search", str(path), "--workdir", str(tmp_path / "w")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert match in r.stderr.replace("\n", " "), r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "w").exists()
