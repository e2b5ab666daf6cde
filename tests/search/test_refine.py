"""``recovery.refine``: after the search, the fastest channel-pruned trial within reach of fp32 is fine-tuned
alone (per config, its own steps) and measured again as a new trial that names its source; a resumed sweep
does not refine it twice, and refined trials do not count towards the trial budget."""

from __future__ import annotations

import json

import pytest

from edgetune.search.records import TrialRecord
from edgetune.search.wiring import prepare_sweep


@pytest.mark.slow
def test_the_fastest_pruned_trial_is_refined_once(tmp_path, local_agent, sweep_workdir, make_sweep):
    # magnitude importance: the refine is the point, not taylor's gradient passes (one per fine-tune, ~5 s each)
    path = make_sweep(tmp_path, name="refine", trials=3, ratios=(0.5,), extra={
        "space": {"precision": ["fp32", "int8"], "sparsity": {"kind": "channel", "ratios": [0.5], "importance": "magnitude"},
                  "keep": {"precision": {"fp32": ["first", "last"]}}, "tie": "stage"},
        "recovery": {"mode": "elastic", "steps": 2, "batch": 4, "refine": {"points": 1, "steps": 3, "within": 1.0}},
        "search": {"sampler": "random", "trials": 3, "seed": 0, "n_startup": 2, "start_points": "uniform",
                   "storage": f"sqlite:///{tmp_path / 'optuna.db'}", "latency_runs": 5, "latency_warmup": 1,
                   "side_by_side_runs": 0, "paired_retakes": 0,
                   "latency_min_seconds": 0}})
    sweep, space, _ = prepare_sweep(path, workdir=sweep_workdir, local_agents=local_agent)
    sweep.run(space)
    trials = sweep.study.get_trials()
    records = [TrialRecord.of(t) for t in trials]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4, [r.error for r in records]
    assert records[2].summary["n_cut_groups"] > 0  # the start point: every group at its one width, 50%
    refined, source = records[3], records[2]
    assert refined.refined_from == 2 and refined.label.endswith("refined from #2")
    assert refined.config == source.config and refined.artifact_hash != source.artifact_hash
    manifest = json.loads((sweep.hooks.artifact_dir(refined.artifact_hash) / "manifest.json").read_text())
    assert manifest["recovery"]["steps"] == 3 and "mode" not in manifest["recovery"]  # per config
    assert manifest["recovery"]["result"]["steps"] == 3
    df = sweep.frame()
    assert df.loc[df["trial"] == 3, "refined_from"].item() == 2
    sweep.run(space)  # resumed: nothing left to do, nothing refined twice
    assert len(sweep.study.get_trials()) == 4
    sweep.run(space, trials=4)  # one more: the refined trial does not count towards the budget, no second refine
    trials = sweep.study.get_trials()
    assert len(trials) == 5 and sum(TrialRecord.of(t).refined_from is not None for t in trials) == 1
