"""Fixtures for sweep tests: one real local agent, small sweep YAMLs with sqlite Optuna + MLflow stores."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="session")
def local_agent():
    from edgetune.device_agents.local import start_local_agents

    with start_local_agents(1, threads=1) as agents:
        yield agents


@pytest.fixture(scope="session")
def make_sweep(mlflow_db):
    """write_sweep(tmp_path, name=, trials=, ...) -> path of a small sweep YAML, its empty MLflow store in place
    (``mlflow_db``; ``mlflow_db=None``: none, the sweep makes it)."""
    return functools.partial(write_sweep, mlflow_db=mlflow_db)


def write_sweep(tmp_path: Path, *, name: str, trials: int, url: str = "http://127.0.0.1:1", backend: str = "local",
                ratios=(0.0, 0.5), extra: dict | None = None, sbs_runs: int = 0, search: dict | None = None,
                mlflow_db: Path | None = None) -> Path:
    """``extra``: sections replaced whole; ``search``: keys set in the ``search`` section; ``mlflow_db``: an empty
    MLflow store copied to ``tmp_path / 'mlflow.db'`` (the default tracking URI) unless one is there."""
    cfg = {
        "name": name,
        "model": {"source": "builtin", "name": "det-s"},
        "data": {"source": "builtin", "name": "shapes", "val_images": 40, "calib_images": 16, "train_size": 64},
        "space": {"precision": ["fp32", "int8"], "sparsity": {"kind": "channel", "ratios": list(ratios)},
                  "keep": {"precision": {"fp32": ["first", "last"]}}, "tie": "stage"},
        "recovery": {"steps": 0},
        "devices": [{"name": "local", "url": url, "kind": "local-cpu"}],
        "objectives": [{"metric": "map50_95", "device": "local"}, {"metric": "latency_p50_ms", "device": "local"},
                       {"metric": "size_bytes"}],
        "constraints": ["size_bytes <= 1.5 * baseline.size_bytes"],
        "search": {"sampler": "random", "trials": trials, "seed": 0, "backend": backend, "n_startup": 2,
                   "storage": f"sqlite:///{tmp_path / 'optuna.db'}", "latency_runs": 10, "latency_warmup": 2,
                   "side_by_side_runs": sbs_runs,
                   # the agent shares 2 cores with the test workers: never quiet, so no retakes (measure_quiet is
                   # tested on its own, tests/search/test_paired.py)
                   "paired_retakes": 0, "latency_min_seconds": 0,
                   # screening (evidence on every trial) is tested in test_sweep_e2e / test_screen; off elsewhere
                   "screen": "off"},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": name},
    }
    cfg["search"].update(search or {})
    for k, v in (extra or {}).items():
        cfg[k] = v
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    if mlflow_db is not None and not (tmp_path / "mlflow.db").exists():
        shutil.copyfile(mlflow_db, tmp_path / "mlflow.db")
    return path
