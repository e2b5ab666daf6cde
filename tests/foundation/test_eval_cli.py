"""`edgetune eval` on the embedded default: the quality bar of the builtin detector, measured through ORT."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgetune.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


@pytest.mark.slow
def test_eval_builtin_meets_quality_bar():
    r = run_cli("eval", "--model", "builtin:det-s", "--data", "builtin:shapes", "--val-images", "300",
                "--runs", "30", "--json")
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout)
    assert row["val_images"] == 300  # det-s on these 300: 0.758 / 0.930 (ORT)
    assert row["map50_95"] >= 0.75, row
    assert row["map50"] >= 0.92, row
    assert 0.5e6 <= row["params"] <= 3e6
    assert row["onnx_bytes"] > 4 * 0.5e6  # fp32 weights
    assert 0 < row["latency_p50_ms"] <= row["latency_p90_ms"]
    assert row["runtime"] == "onnxruntime" and row["threads"] == 1


def test_cli_errors_are_one_line_without_traceback():
    r = run_cli("eval", "--model", "builtin:nope", "--data", "builtin:shapes", "--val-images", "5")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "unknown builtin model 'nope'" in r.stderr and "det-s" in r.stderr


def test_cli_debug_shows_traceback():
    r = run_cli("--debug", "eval", "--model", "builtin:nope", "--data", "builtin:shapes", "--val-images", "5")
    assert r.returncode != 0
    assert "Traceback" in r.stderr


def test_cli_bad_reference_names_the_option():
    r = run_cli("eval", "--model", "det-s")
    assert r.returncode == 2
    assert "--model 'det-s'" in r.stderr and "builtin:NAME" in r.stderr
