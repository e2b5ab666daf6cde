"""A sweep whose objectives name two devices measures each trial on both at once: two local agents without
a shared host lock (two boards, as far as the controller can tell), every trial on both, and their
measurements of one trial overlapping in time (agents on one host that share the lock take turns instead:
tests/device_agents/test_agent_fleet.py). A point proposed twice is measured once: the second trial takes
the first one's values and says so."""

from __future__ import annotations

import pytest

from edgetune.search.records import RECORD_ATTR
from edgetune.search.tracking import Tracker
from edgetune.search.wiring import prepare_sweep

pytestmark = pytest.mark.slow


def test_each_trial_is_measured_on_both_devices_at_once_and_a_point_measured_before_is_not_again(
        tmp_path, make_sweep, sweep_workdir):
    from edgetune.device_agents.local import start_local_agents
    from edgetune.search.study import enqueue_baselines

    extra = {"devices": [{"name": "board-a", "url": "http://127.0.0.1:1", "kind": "local-cpu"},
                         {"name": "board-b", "url": "http://127.0.0.1:1", "kind": "local-cpu"}],
             "objectives": [{"metric": "map50_95", "device": "board-a"},
                            {"metric": "latency_p50_ms", "device": "board-a"},
                            {"metric": "latency_p50_ms", "device": "board-b"}],
             "constraints": []}
    # each timed loop runs >= 1 s, so two measurements sent together overlap however busy the machine is
    path = make_sweep(tmp_path, name="two-devices", trials=4, ratios=(0.0,), extra=extra,
                      search={"latency_min_seconds": 1.0})
    with start_local_agents(2, threads=1, workdir=tmp_path / "agents", extra_args=("--no-host-lock",)) as agents:
        sweep, space, cfg = prepare_sweep(path, workdir=sweep_workdir, local_agents=agents)
        enqueue_baselines(sweep.study, sweep.baseline_params(space))
        point = sweep._uniform_params(space, precision="int8")  # as a sampler proposing one point twice
        for _ in range(2):
            sweep.study.enqueue_trial(point, skip_if_exists=False)
        sweep.run(space)
    trials = sweep.study.get_trials()
    records = [t.user_attrs[RECORD_ATTR] for t in trials]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4, [r.get("error") for r in records]
    first, again = records[2:]
    assert again["artifact_hash"] == first["artifact_hash"] and again["reused_from"] == 2 and "reused_from" not in [
        k for k, v in first.items() if v is not None]
    assert again["values"] == first["values"] and again["fingerprints"] == first["fingerprints"]
    assert trials[3].values == trials[2].values
    runs = Tracker(uri=cfg.tracking.uri, experiment=cfg.tracking.experiment, sweep=cfg.name, readonly=True).child_runs()
    assert runs[3].data.tags["reused_from"] == "2" and "reused_from" not in runs[2].data.tags
    records = records[:3]  # each measured by the agents
    for rec in records:
        assert {"latency_p50_ms@board-a", "latency_p50_ms@board-b", "map50_95@board-a"} <= set(rec["values"])
        assert {fp["name"] for fp in rec["fingerprints"].values()} == {"local-0", "local-1"}
    windows = [[rec["fingerprints"][d]["measured_at"] for d in ("board-a", "board-b")] for rec in records]
    assert all(a[0] < a[1] and b[0] < b[1] for a, b in windows)
    assert all(a[0] < b[1] and b[0] < a[1] for a, b in windows), windows  # overlapping: measured at once
