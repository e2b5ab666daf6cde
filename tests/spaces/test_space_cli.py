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


def test_space_sensitivity_reports_each_cut_and_max_drop_shapes_the_space(tmp_path):
    """``--sensitivity`` cuts the one global sparsity dimension of the demo at 50% for real; ``max_drop``
    below what that costs removes the ratio from the space (the dimension goes, with a note)."""
    from edgetune.cli import app

    path = pruning_config(tmp_path)
    text = path.read_text().replace("ratios: [0.0, 0.25, 0.5]", "ratios: [0.0, 0.5]\n    max_drop: 0.001\n"
                                    "    sensitivity_images: 16")
    text = re.sub(r"train_size: \d+", "train_size: 200", text)
    path.write_text(text)
    wd = tmp_path / "wd"
    result = CliRunner().invoke(app, ["space", str(path), "--sensitivity", "--workdir", str(wd)],
                                env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    out = result.output
    assert "sensitivity: each dimension cut alone" in out and "on 16 val images" in out
    row = next(line for line in out.splitlines() if "sparsity/model:all" in line and "│" in line)
    assert " channel:0.5 " in row and "%" in row and "[red]" not in row
    assert "sparsity/model:all: channel:0.5 removed (sensitivity: channel 0.5 alone costs" in out
    assert "max_drop 0.001" in out and len(list((wd / "sensitivity").glob("*.json"))) == 1
    assert "dense, channel:0.5" not in out  # no group offers the cut any more
