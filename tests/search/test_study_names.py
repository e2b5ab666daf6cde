"""The study stores its objectives' names: optuna-dashboard labels them, and a resume whose objectives
changed (same directions, another metric) is refused instead of mixing values into the old columns."""

from __future__ import annotations

import pytest


def test_objective_names_are_stored_and_a_swapped_objective_is_refused(tmp_path):
    from edgetune.errors import ConfigError
    from edgetune.search.study import open_study

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    keys = ["map50_95", "latency_p50_ms@local", "size_bytes"]
    study = open_study(storage=storage, name="s", goals=["max", "min", "min"], sampler="random", seed=0, keys=keys)
    assert study.metric_names == keys
    again = open_study(storage=storage, name="s", goals=["max", "min", "min"], sampler="random", seed=0, keys=keys)
    assert again.metric_names == keys  # the same objectives resume
    swapped = ["map50_95", "latency_p90_ms@local", "size_bytes"]
    with pytest.raises(ConfigError, match="latency_p50_ms@local, size_bytes, but the config now has map50_95, "
                                          "latency_p90_ms@local"):
        open_study(storage=storage, name="s", goals=["max", "min", "min"], sampler="random", seed=0, keys=swapped)
