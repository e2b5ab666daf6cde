"""The Ray backend runs the same sweep (compression on Ray workers, devices through one fleet actor)."""

from __future__ import annotations

import os

import pytest

from edgetune.search.tracking import Tracker
from edgetune.search.wiring import prepare_sweep

pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_backend_produces_the_same_records(tmp_path, make_sweep, local_agent, sweep_workdir, monkeypatch):
    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="etray", dir="/tmp")  # Ray's unix sockets need a path < 108 bytes
    monkeypatch.setenv("EDGETUNE_RAY_TMP", ray_tmp)
    path = make_sweep(tmp_path, name="ray", trials=4, extra={})
    text = path.read_text().replace("backend: local", "backend: ray").replace("storage:", "concurrency: 2\n  storage:")
    path.write_text(text)
    sweep, space, cfg = prepare_sweep(path, workdir=sweep_workdir, local_agents=local_agent)
    assert cfg.search.backend == "ray" and cfg.search.concurrency == 2
    try:
        sweep.run(space)
    finally:
        ray.shutdown()
    trials = sweep.study.get_trials()
    assert len(trials) == 4 and all(t.state.name == "COMPLETE" for t in trials)
    assert {t.user_attrs.get("baseline") for t in trials} >= {"fp32", "int8-uniform"}
    for t in trials:
        rec = t.user_attrs["record"]
        assert {"map50_95@local", "latency_p50_ms@local", "size_bytes"} <= set(rec["values"])
        assert rec["fingerprints"]["local"]["kind"] == "local-cpu"
    tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.name, sweep=cfg.name, readonly=True)
    assert sorted(tracker.child_runs()) == [0, 1, 2, 3]
    assert os.path.isdir(ray_tmp)
    import shutil

    shutil.rmtree(ray_tmp, ignore_errors=True)
