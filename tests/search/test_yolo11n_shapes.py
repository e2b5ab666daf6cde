"""The builtin ``yolo11n`` (Ultralytics YOLO11n trained on the builtin shapes data, shipped as fp16 weights) and
the loader: the checkpoint loads and scores above its floor through edgetune's evaluation (ONNX export,
onnxruntime), and a changed weights file is refused. Its sweep config is tested in test_yolo11n_sweep.py."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

if importlib.util.find_spec("ultralytics") is None:  # not imported here: importing it patches PIL
    pytest.skip("the yolo extra (make test installs it)", allow_module_level=True)

# mAP50-95 of the shipped weights on the first 100 val images at 256 px (ORT): the recipe's value is in
# docs/models.md; the floor only catches a broken checkpoint or loader
FLOOR_MAP50_95, FLOOR_MAP50 = 0.80, 0.95


@pytest.mark.slow
def test_the_builtin_yolo11n_loads_and_scores_above_its_floor():
    r = subprocess.run([sys.executable, "-m", "edgetune.cli", "eval", "--model", "builtin:yolo11n", "--data",
                        "builtin:shapes", "--val-images", "100", "--runs", "5", "--json"],
                       capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert r.returncode == 0, r.stderr[-3000:]
    row = json.loads(r.stdout)
    assert row["model"] == "yolo11n" and row["val_images"] == 100
    assert row["map50_95"] >= FLOOR_MAP50_95 and row["map50"] >= FLOOR_MAP50, row
    assert 2.4e6 <= row["params"] <= 2.7e6  # YOLO11n with 6 classes (2.58 M)
    assert row["export_max_abs_diff"] < 1e-3  # ORT vs torch


def test_the_builtin_yolo11n_needs_its_exact_weights(tmp_path, monkeypatch):
    from edgetune.config import ModelSpec
    from edgetune.errors import ModelError
    from edgetune.models import load_model, sources

    bad = tmp_path / "yolo11n.pt"
    bad.write_bytes(sources.builtin_weights_path("yolo11n").read_bytes()[:-10] + b"0123456789")
    monkeypatch.setattr(sources, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ModelError, match="corrupt or was replaced"):
        load_model(ModelSpec(source="builtin", name="yolo11n"), class_names=tuple("abcdef"),
                   category_ids=tuple(range(1, 7)))
