"""Each sampler a sweep offers drives a short real sweep (a local agent over HTTP, sqlite
Optuna and MLflow stores), and a trial that breaks a constraint is kept off the front and flagged in MLflow.

The space is precision-only (no pruning: the fp32 export and the int8 baseline are compressed once for the
sweeps in the session's workdir). The constraint ``size_bytes <= 0.5 * baseline.size_bytes`` is broken
by the fp32 baseline every time (its size is the baseline's) and met by the all-int8 one (~0.27x), so every
sweep has an infeasible trial and a non-empty front whatever its sampler draws. TPE, the default, is not
repeated here: the shipped YOLO11n config's sweep (tests/search/test_yolo11n_sweep.py) and the demo's run it."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.search.records import RECORD_ATTR, mlflow_key
from edgetune.search.tracking import Tracker
from edgetune.search.wiring import load_front, prepare_sweep

TRIALS = 3  # the two baselines, then one point of the sampler (GP models it: n_startup is 2)
SAMPLERS = {"nsga2": "NSGAIISampler", "gp": "GPSampler"}  # GP needs scipy and torch
SIZE_RULE = 0.5

pytestmark = pytest.mark.slow  # one real 4-trial sweep per sampler (~25 s each on 2 cores)


@pytest.fixture(scope="module", params=list(SAMPLERS))
def sampled_sweep(request, tmp_path_factory, make_sweep, local_agent, sweep_workdir):
    name = request.param
    tmp = tmp_path_factory.mktemp(f"sampler-{name}")
    data = {"source": "builtin", "name": "shapes", "val_images": 16, "calib_images": 16, "train_size": 64}
    path = make_sweep(tmp, name=f"sampler-{name}", trials=TRIALS, ratios=(0.0,), search={"sampler": name},
                      extra={"data": data, "constraints": [f"size_bytes <= {SIZE_RULE} * baseline.size_bytes"]})
    sweep, space, cfg = prepare_sweep(path, workdir=sweep_workdir, local_agents=local_agent)
    sweep.run(space)
    return name, path, sweep, space, cfg


def test_each_sampler_runs_a_short_real_sweep(sampled_sweep):
    name, path, sweep, space, cfg = sampled_sweep
    study = sweep.study
    assert type(study.sampler).__name__ == SAMPLERS[name]
    trials = study.get_trials()
    records = [t.user_attrs.get(RECORD_ATTR, {}) for t in trials]
    assert [t.state.name for t in trials] == ["COMPLETE"] * TRIALS, [r.get("error") for r in records]
    assert [t.user_attrs.get("baseline") for t in trials[:2]] == ["fp32", "int8-uniform"]
    dims = {d.name for d in space.dimensions}
    assert {d.kind for d in space.dimensions} == {"precision"}
    for t in trials[2:]:  # points the sampler drew: a choice for every dimension of the space
        assert set(t.params) == dims and all(t.params[d.name] in d.choices for d in space.dimensions)
    assert all(r["values"][k] > 0 for r in records for k in ("map50_95@local", "latency_p50_ms@local", "size_bytes"))
    runs = Tracker(uri=cfg.tracking.uri, experiment=cfg.name, sweep=cfg.name, readonly=True).child_runs()
    assert sorted(runs) == list(range(TRIALS))
    assert {r.data.params["sampler"] for r in runs.values()} == {name}
    df, keys, goals, _ = load_front(path)
    feasible = df[(df["state"] == "COMPLETE") & (df["feasible"].astype(bool))]
    pts = np.array([[-r[k] if g == "max" else r[k] for k, g in zip(keys, goals, strict=True)]
                    for _, r in feasible.iterrows()])
    assert list(feasible["pareto"]) == [not any(np.all(q <= p) and np.any(q < p) for q in pts) for p in pts]
    assert df["pareto"].sum() >= 1  # the front is not empty


def test_a_trial_that_breaks_a_constraint_is_off_the_front_and_flagged_in_mlflow(sampled_sweep):
    _, path, sweep, _, cfg = sampled_sweep
    trials = sweep.study.get_trials()
    df, _, _, _ = load_front(path)
    fp32_size = df.loc[df["baseline"] == "fp32", "size_bytes"].iloc[0]
    assert list(df["feasible"]) == [s <= SIZE_RULE * fp32_size for s in df["size_bytes"]]
    fp32 = df[df["baseline"] == "fp32"].iloc[0]
    assert not fp32["feasible"] and not fp32["pareto"]
    assert not df.loc[~df["feasible"].astype(bool), "pareto"].any()
    assert df.loc[df["baseline"] == "int8-uniform", "feasible"].iloc[0]
    assert trials[0].constraints["c0"] > 0 >= trials[1].constraints["c0"]  # stored in Optuna for the sampler
    runs = Tracker(uri=cfg.tracking.uri, experiment=cfg.name, sweep=cfg.name, readonly=True).child_runs()
    broken = runs[int(fp32["trial"])]
    assert broken.info.status == "FINISHED"  # measured and logged like any trial
    assert (broken.data.tags["feasible"], broken.data.tags["pareto"]) == ("false", "false")
    assert broken.data.metrics["constraint_0"] == pytest.approx(trials[0].constraints["c0"])
    assert broken.data.metrics[mlflow_key("map50_95@local")] == pytest.approx(fp32["map50_95@local"])
    assert broken.data.metrics["size_bytes"] == fp32_size
    for number, run in runs.items():
        row = df[df["trial"] == number].iloc[0]
        assert run.data.tags["feasible"] == str(bool(row["feasible"])).lower()
        assert run.data.tags["pareto"] == str(bool(row["pareto"])).lower()
