"""A sweep whose objectives name two devices measures each trial on both at once: two local agents without
a shared host lock (two boards, as far as the controller can tell), every trial on both, and their
measurements of one trial overlapping in time (agents on one host that share the lock take turns instead:
tests/device_agents/test_agent_fleet.py)."""

from __future__ import annotations

import pytest

from edgetune.search.records import RECORD_ATTR
from edgetune.search.wiring import prepare_sweep

pytestmark = pytest.mark.slow


def test_each_trial_is_measured_on_both_devices_at_once(tmp_path, make_sweep, sweep_workdir):
    from edgetune.device_agents.local import start_local_agents

    extra = {"devices": [{"name": "board-a", "url": "http://127.0.0.1:1", "kind": "local-cpu"},
                         {"name": "board-b", "url": "http://127.0.0.1:1", "kind": "local-cpu"}],
             "objectives": [{"metric": "map50_95", "device": "board-a"},
                            {"metric": "latency_p50_ms", "device": "board-a"},
                            {"metric": "latency_p50_ms", "device": "board-b"}],
             "constraints": []}
    # each timed loop runs >= 1 s, so two measurements sent together overlap however busy the machine is
    path = make_sweep(tmp_path, name="two-devices", trials=3, ratios=(0.0,), extra=extra,
                      search={"latency_min_seconds": 1.0})
    with start_local_agents(2, threads=1, workdir=tmp_path / "agents", extra_args=("--no-host-lock",)) as agents:
        sweep, space, _ = prepare_sweep(path, workdir=sweep_workdir, local_agents=agents)
        sweep.run(space)
    trials = sweep.study.get_trials()
    records = [t.user_attrs[RECORD_ATTR] for t in trials]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3, [r.get("error") for r in records]
    for rec in records:
        assert {"latency_p50_ms@board-a", "latency_p50_ms@board-b", "map50_95@board-a"} <= set(rec["values"])
        assert {fp["name"] for fp in rec["fingerprints"].values()} == {"local-0", "local-1"}
    windows = [[rec["fingerprints"][d]["measured_at"] for d in ("board-a", "board-b")] for rec in records]
    assert all(a[0] < a[1] and b[0] < b[1] for a, b in windows)
    assert all(a[0] < b[1] and b[0] < a[1] for a, b in windows), windows  # overlapping: measured at once
