"""``edgetune compress --config --point --out``: writes an artifact; a second run is served from the cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner


def small_demo(tmp_path):
    """configs/demo.yaml with the test suite's split sizes (the splits are already cached)."""
    import yaml

    cfg = yaml.safe_load(Path("configs/demo.yaml").read_text())
    cfg["data"].update(val_images=16, calib_images=32)
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
def test_compress_baseline_then_cache_hit(tmp_path):
    from edgetune.cli import app

    out = tmp_path / "out"
    args = ["compress", "--config", str(small_demo(tmp_path)), "--point", "int8-uniform", "--out", str(out)]
    first = CliRunner().invoke(app, [*args, "--no-cache"], env={"COLUMNS": "150"})
    assert first.exit_code == 0, first.output
    assert "(built)" in first.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["default_precision"] == "int8" and manifest["config"]["name"] == "int8-uniform"
    assert (out / "model.onnx").stat().st_size == manifest["sizes"]["bytes"]
    second = CliRunner().invoke(app, args, env={"COLUMNS": "150"})
    assert second.exit_code == 0 and "(from cache)" in second.output


def test_compress_rejects_a_bad_point_naming_the_layer(tmp_path):
    from edgetune.cli import app
    from edgetune.errors import ConfigError

    point = tmp_path / "p.yaml"
    point.write_text("precision: {stem.conv: int8}\n")
    result = CliRunner().invoke(app, ["compress", "--config", str(small_demo(tmp_path)), "--point", str(point),
                                      "--out", str(tmp_path / "o")])
    assert isinstance(result.exception, ConfigError)
    assert "layer 'stem.conv' is pinned to fp32 (keep.precision.fp32: first)" in str(result.exception)
    assert not (tmp_path / "o").exists()
