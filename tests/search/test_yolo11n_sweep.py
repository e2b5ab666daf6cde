"""The shipped sweep config ``configs/yolo11n_shapes.yaml`` (the builtin ``yolo11n``), shrunk to a few trials,
images and steps: a real sweep on a local agent offering ort and OpenVINO, with per-block precision and
widths, the uniform start points, the baselines, and the front and fp32 baseline tagged in MLflow (its refine
step is off here: tests/search/test_refine.py refines det-s). (Its own
file, so that pytest-xdist runs it beside the checkpoint tests.)"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
import yaml

if importlib.util.find_spec("ultralytics") is None:  # not imported here: importing it patches PIL
    pytest.skip("the yolo extra (make test installs it)", allow_module_level=True)

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "yolo11n_shapes.yaml"


@pytest.mark.slow
def test_the_shipped_yolo11n_config_runs_a_short_sweep(tmp_path, mlflow_db):
    from edgetune.device_agents.local import start_local_agents
    from edgetune.search.records import RECORD_ATTR
    from edgetune.search.tracking import Tracker
    from edgetune.search.wiring import load_front, prepare_sweep

    cfg = yaml.safe_load(CONFIG.read_text())
    assert cfg["model"] == {"source": "builtin", "name": "yolo11n"} and cfg["space"]["tie"] == "stage"
    cfg["data"].update(val_images=24, calib_images=8, train_size=48)
    cfg["space"]["input_size"] = [160, 128]
    assert cfg["space"]["sparsity"].pop("max_drop") == 0.02  # the sensitivity pass: tested on det-s (34 cuts here)
    cfg["recovery"].update(steps=4, batch=4, train_images=48)
    assert cfg["recovery"]["refine"]["points"] == 1
    cfg["recovery"]["refine"]["points"] = 0  # a YOLO11n prune + fine-tune + export more; test_refine refines det-s
    cfg["search"].update(trials=9, n_startup=2, storage=f"sqlite:///{tmp_path / 'optuna.db'}", latency_runs=10,
                         latency_warmup=2, side_by_side_runs=20, paired_retakes=0,
                         latency_min_seconds=0)
    cfg["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "yolo11n-shapes-test"}
    shutil.copyfile(mlflow_db, tmp_path / "mlflow.db")  # the empty store, made once per session
    path = tmp_path / "yolo11n_shapes.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    with start_local_agents(1, threads=1, runtime="ort,openvino", workdir=tmp_path / "agents") as agents:
        # its own workdir: nothing of this sweep is in the session's cache (``sweep_workdir``: det-s)
        sweep, space, _ = prepare_sweep(path, workdir=tmp_path / "work", local_agents=agents)
        # per-block precision and widths: many dimensions, not one for the whole network
        kinds = [d.kind for d in space.dimensions]
        assert kinds.count("precision") >= 10 and kinds.count("sparsity") >= 10
        assert {"input_size", "runtime"} <= set(kinds)
        sweep.run(space)
    assert type(sweep.study.sampler).__name__ == "TPESampler"  # the suite's TPE sweep (test_sweep_samplers: the others)
    trials = sweep.study.get_trials()
    errors = [t.user_attrs.get(RECORD_ATTR, {}).get("error") for t in trials]
    assert [t.state.name for t in trials] == ["COMPLETE"] * len(trials) and len(trials) == 9, errors
    starts = {t.user_attrs.get("start_point") for t in trials} - {None}
    assert starts == {f"int8 + {r} channels on {rt}" for r in ("0%", "25%", "50%") for rt in ("ort", "openvino")}
    df, _, _, _ = load_front(path)
    assert {"fp32", "int8-uniform"} <= set(df["baseline"].dropna())
    assert df["pareto"].sum() >= 1
    tracker = Tracker(uri=cfg["tracking"]["uri"], experiment=cfg["tracking"]["experiment"], sweep=cfg["name"],
                      readonly=True)
    tags = [r.data.tags for r in tracker.child_runs().values()]
    assert len(tags) == len(trials)
    assert any(t.get("baseline") == "fp32" for t in tags) and any(t.get("pareto") == "true" for t in tags)
