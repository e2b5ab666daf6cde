"""The two install lines: `pip install "edgetune[agent]"` resolves to none of the controller's heavy
packages, `edgetune[controller]` names all of them, and an agent whose interpreter holds exactly the agent's
resolved packages (no torch on disk, not merely blocked) serves and measures a model with accuracy.

The resolution is pip's own (``--dry-run --report``: metadata only, nothing installed, no torch wheel
downloaded); it needs the package index the Makefile installs from.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest
from agent_helpers import FAST, start_agent

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"torch", "torch-pruning", "optuna", "ray", "mlflow", "mlflow-skinny", "pandas", "matplotlib", "plotly",
         "onnxscript"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _resolve(extra: str, tmp_path: Path) -> set[str]:
    report = tmp_path / f"{extra}.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--report",
           str(report), f"{ROOT}[{extra}]"]
    try:
        import setuptools  # noqa: F401  (build the project's metadata with the installed one: no download)

        cmd.insert(4, "--no-build-isolation")
    except ImportError:
        pass
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=500)
    if r.returncode != 0 and re.search(r"(?i)connection|network is unreachable|name resolution", r.stderr):
        pytest.skip(f"the package index is not reachable: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr[-3000:]
    return {_norm(i["metadata"]["name"]) for i in json.loads(report.read_text())["install"]}


@pytest.fixture(scope="module")
def agent_set(tmp_path_factory) -> set[str]:
    return _resolve("agent", tmp_path_factory.mktemp("pip-agent"))


def test_the_agent_install_line_pulls_nothing_heavy(agent_set):
    assert {"onnxruntime", "onnx", "numpy", "fastapi", "uvicorn", "faster-coco-eval", "edgetune"} <= agent_set
    assert not agent_set & {_norm(h) for h in HEAVY}, sorted(agent_set & HEAVY)


def test_the_controller_install_line_pulls_everything():
    """From the installed metadata (pip resolving the controller's tree takes a minute): the controller
    extra names every heavy package, and the base requirements name none of them."""
    reqs = metadata.requires("edgetune") or []
    base = {_norm(re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0]) for r in reqs if "extra ==" not in r}
    controller = {_norm(re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0]) for r in reqs if 'extra == "controller"' in r}
    assert {"torch", "torch-pruning", "optuna", "mlflow", "pandas", "matplotlib", "plotly", "onnxscript"} <= controller
    assert not base & {_norm(h) for h in HEAVY}


def _agent_only_python(tmp_path: Path, names: set[str]) -> Path:
    """A venv (no pip) whose site-packages links exactly the resolved distributions from this
    environment, plus this checkout's edgetune: what `pip install "edgetune[agent]"` would give."""
    env_dir = tmp_path / "agent-venv"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(env_dir)
    site = next(env_dir.glob("lib/python*/site-packages"))
    linked = set()
    for name in sorted(names - {"edgetune"}):
        dist = metadata.distribution(name)
        for f in dist.files or []:
            top = Path(str(f)).parts[0]
            src = Path(dist.locate_file(top))
            if top in linked or top == ".." or top.endswith(".pth") or not src.exists():
                continue
            (site / top).symlink_to(src)
            linked.add(top)
    (site / "edgetune.pth").write_text(str(ROOT) + "\n")
    return env_dir / "bin" / "python"


def test_an_agent_with_only_its_packages_measures(tmp_path, agent_set, det_s_onnx, det_s_bundle):
    py = _agent_only_python(tmp_path, agent_set)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    for mod in ("torch", "optuna", "mlflow", "pandas", "matplotlib", "plotly", "torch_pruning"):
        probe = subprocess.run([str(py), "-c", f"import {mod}"], env=env, capture_output=True, text=True)
        assert probe.returncode != 0 and "No module named" in probe.stderr, (mod, probe.stderr)
    agent = start_agent(tmp_path / "agent-only", env=env, python=str(py))
    try:
        with agent.client(measure_timeout=300) as c:
            m = c.measure(det_s_onnx, dataset=det_s_bundle, latency=FAST)
        assert m.accuracy is not None and m.accuracy["map50_95"] > 0.5 and m.accuracy_images == det_s_bundle.num_images
    finally:
        agent.stop()
