"""``edgetune train-builtin --name det-s`` (the command that reproduces the shipped weights, README and
docs/models.md) runs and writes its weights: 2 steps on 8 images here; the recipe itself is in docs/models.md."""

from __future__ import annotations

import os
import subprocess
import sys


def test_train_builtin_as_the_readme_shows_it_writes_weights(tmp_path):
    out = tmp_path / "det-s.pt"
    r = subprocess.run([sys.executable, "-m", "edgetune.cli", "train-builtin", "--name", "det-s", "--iters", "2",
                        "--batch", "2", "--train-size", "8", "--threads", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, "EDGETUNE_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.stat().st_size > 100_000 and f"wrote {out}" in r.stdout
