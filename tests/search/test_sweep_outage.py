"""A device agent killed while it measures and back a little later: the trials that need it wait (the
progress says so), the cut measurement is made again once, and the sweep ends with every requested
trial, none twice, in Optuna and in MLflow."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlparse

import pytest

from edgetune.search.tracking import Tracker
from edgetune.search.wiring import prepare_sweep

TRIALS = 3
CUT = 2  # the trial whose measurement the agent dies in


@pytest.mark.slow
def test_an_agent_killed_mid_measurement_is_waited_for_and_the_cut_trial_measured_again(tmp_path, make_sweep,
                                                                                          sweep_workdir):
    from edgetune.device_agents.client import AgentClient
    from edgetune.device_agents.local import start_local_agents

    path = make_sweep(tmp_path, name="outage", trials=TRIALS, ratios=(0.0,), search={"outage_wait_s": 120})
    phases: list[str] = []
    down = threading.Event()
    restarted: list = []
    with start_local_agents(1, threads=1) as agents:
        agent = agents.agents[0]
        sweep, space, cfg = prepare_sweep(path, workdir=sweep_workdir, local_agents=agents)

        def on_progress(p) -> None:
            phases.append(p.phase)
            if p.phase.startswith("waiting for device"):
                down.set()

        def kill_then_restart() -> None:
            with AgentClient(agent.url, token=agents.token, name="probe", retries=0) as probe:
                while not probe.queue().running:  # the cut trial's measurement has started
                    time.sleep(0.02)
            agent.process.kill()
            agent.process.wait()
            down.wait(timeout=60)  # the sweep noticed; the agent comes back on its port, with an empty workdir
            port = str(urlparse(agent.url).port)
            restarted.append(start_local_agents(1, threads=1, workdir=tmp_path / "agent-again", token=agents.token,
                                                extra_args=("--port", port)))

        numbers: list[int] = []
        real_compress, real_measure = sweep.hooks.compress, sweep.hooks.measure
        killer = threading.Thread(target=kill_then_restart, daemon=True)

        def measure(artifact, device, runtime=None):
            if numbers[-1] == CUT and not killer.is_alive() and not restarted:
                killer.start()
            return real_measure(artifact, device, runtime)

        sweep.hooks.compress = lambda plan: (numbers.append(plan.number), real_compress(plan))[1]
        sweep.hooks.measure = measure
        sweep.on_progress = on_progress
        try:
            sweep.run(space)
        finally:
            for again in restarted:
                again.stop()

    trials = sweep.study.get_trials()
    assert [t.number for t in trials] == list(range(TRIALS))  # every requested trial, none added
    assert [t.state.name for t in trials] == ["COMPLETE"] * TRIALS
    records = [t.user_attrs["record"] for t in trials]
    assert records[CUT]["measure_retries"] == 1  # the cut measurement, made again once
    assert records[CUT]["outage_wait_s"] is not None
    assert all(r["outage_wait_s"] is None and r["measure_retries"] == 0 for i, r in enumerate(records) if i != CUT)
    assert any(p.startswith("waiting for device local (down since ") for p in phases)
    assert phases[-1] == ""  # the wait ended
    tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.name, sweep=cfg.name, readonly=True)
    runs = tracker.child_runs()
    assert sorted(runs) == list(range(TRIALS))  # one run per trial
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert runs[CUT].data.tags["outage_wait_s"] == f"{records[CUT]['outage_wait_s']:.1f}"
    assert runs[CUT].data.tags["measure_retries"] == "1"
    assert "outage_wait_s" not in runs[0].data.tags
