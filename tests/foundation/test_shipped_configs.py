"""Every sweep config shipped in configs/ validates (the README and docs point users at them)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgetune.config import load_sweep_config

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")
                 if p.name != "fleet.example.yaml")


def test_the_ready_configs_are_shipped():
    names = {p.name for p in CONFIGS}
    assert {"demo.yaml", "yolo11n_rpi5.yaml", "classifier_imagefolder.yaml", "onnx_only.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_validates(path):
    cfg = load_sweep_config(path)
    assert cfg.name and cfg.devices and cfg.objectives
