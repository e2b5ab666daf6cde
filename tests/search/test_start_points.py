"""``search.start_points: uniform`` on a budget smaller than baselines + start points: the start points that fit
are measured first, in order, the rest are left out with a warning, and every trial of the budget runs (none
is left WAITING, which the sweep would report as failed)."""

from __future__ import annotations

import logging

from edgetune.search.records import RECORD_ATTR
from edgetune.search.wiring import prepare_sweep


def test_start_points_that_do_not_fit_the_budget_are_left_out(tmp_path, local_agent, sweep_workdir, make_sweep,
                                                             caplog):
    path = make_sweep(tmp_path, name="starts", trials=3, ratios=(0.0, 0.5), extra={
        "search": {"sampler": "random", "trials": 3, "seed": 0, "n_startup": 2, "start_points": "uniform",
                   "storage": f"sqlite:///{tmp_path / 'optuna.db'}", "latency_runs": 5, "latency_warmup": 1,
                   "side_by_side_runs": 0, "paired_retakes": 0,
                   "latency_min_seconds": 0}})
    sweep, space, _ = prepare_sweep(path, workdir=sweep_workdir, local_agents=local_agent)
    with caplog.at_level(logging.WARNING, logger="edgetune"):
        sweep.run(space)
    trials = sweep.study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3, [t.user_attrs.get(RECORD_ATTR, {}).get("error")
                                                                for t in trials]
    assert [t.user_attrs.get("baseline") for t in trials[:2]] == ["fp32", "int8-uniform"]
    assert trials[2].user_attrs.get("start_point") == "int8 + 0% channels"  # the first of the two fits
    assert "1 start point(s) do not fit in search.trials=3" in caplog.text


def test_a_start_point_takes_the_largest_offered_ratio_below_the_asked_one():
    """Where a dimension does not offer the ratio (``max_drop`` removed it), the start point cuts it as far
    as it offers instead of leaving it dense."""
    from edgetune.search.sweep import _at_most

    choices = ("dense", "channel:0.25")
    assert _at_most(choices, "channel:0.5") == "channel:0.25"
    assert _at_most(choices, "channel:0.25") == "channel:0.25"
    assert _at_most(("dense",), "channel:0.5") == "dense"
    assert _at_most(("dense", "channel:0.5"), "channel:0.25") == "dense"
    assert _at_most(("dense", "channel:0.25", "channel:0.5"), "dense") == "dense"
