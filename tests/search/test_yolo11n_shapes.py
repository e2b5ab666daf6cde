"""The builtin ``yolo11n`` and ``yolo26n`` (Ultralytics YOLO11n / YOLO26n trained on the builtin shapes data,
shipped as fp16 weights) and the loader: each checkpoint loads and scores above its floor through edgetune's
evaluation (ONNX export, onnxruntime; YOLO26n NMS-free), and a changed weights file is refused. The yolo11n
sweep config is tested in test_yolo11n_sweep.py."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

if importlib.util.find_spec("ultralytics") is None:  # not imported here: importing it patches PIL
    pytest.skip("the yolo extra (make test installs it)", allow_module_level=True)

# mAP50-95 / mAP50 of the shipped weights on the first 100 val images at 256 px (ORT): the recipes' values are in
# docs/models.md; the floor only catches a broken checkpoint or loader
FLOOR_MAP50_95, FLOOR_MAP50 = 0.80, 0.95
PARAMS = {"yolo11n": (2.4e6, 2.7e6),  # YOLO11n with 6 classes (2.58 M)
          "yolo26n": (2.2e6, 2.6e6)}  # YOLO26n with 6 classes, one-to-one head only (2.38 M)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_the_builtin_yolo_loads_and_scores_above_its_floor(name):
    r = subprocess.run([sys.executable, "-m", "edgetune.cli", "eval", "--model", f"builtin:{name}", "--data",
                        "builtin:shapes", "--val-images", "100", "--runs", "5", "--json"],
                       capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert r.returncode == 0, r.stderr[-3000:]
    row = json.loads(r.stdout)
    assert row["model"] == name and row["val_images"] == 100
    assert row["map50_95"] >= FLOOR_MAP50_95 and row["map50"] >= FLOOR_MAP50, row
    low, high = PARAMS[name]
    assert low <= row["params"] <= high, row
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
