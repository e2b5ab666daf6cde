"""``edgetune space --config``: the table of layers, groups and choices."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner


def pruning_config(tmp_path):
    """configs/demo.yaml with the channel ratios offered (whatever the demo currently offers)."""
    text = Path("configs/demo.yaml").read_text()
    path = tmp_path / "sweep.yaml"
    text, n = re.subn(r"ratios: \[[0-9., ]*\]", "ratios: [0.0, 0.25, 0.5]", text)
    assert n == 1, "configs/demo.yaml no longer has one `ratios: [...]` line"
    path.write_text(text)
    return path


def test_space_command_prints_layers_groups_and_pins(tmp_path):
    from edgetune.cli import app

    result = CliRunner().invoke(app, ["space", "--config", str(pruning_config(tmp_path))], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "det-s: 99 layers" in out and "58 coupling groups" in out
    assert "keep.precision.fp32: first" in out and "never pruned" in out
    assert "dense, channel:0.25, channel:0.5" in out
    assert "targets: local-cpu" in out and "uint8 activations" in out


def test_space_command_json_and_target_override():
    from edgetune.cli import app

    result = CliRunner().invoke(app, ["space", "--config", "configs/demo.yaml", "--json", "--target", "jetson-orin"])
    assert result.exit_code == 0, result.output
    d = json.loads(result.output)
    assert d["targets"] == ["jetson-orin"] and d["quant"]["activation_symmetric"] is True
    assert len(d["layers"]) == 99 and len(d["groups"]) == 58
