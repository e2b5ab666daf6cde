"""The agent side installs without torch, optuna, ray or mlflow: its modules import, its app serves and a
whole measurement runs where those four cannot be imported."""

from __future__ import annotations

import subprocess
import sys

from agent_helpers import FAST, start_agent
from blocked_imports import BLOCKER, run_blocked


def test_agent_modules_and_app_work_without_heavy_deps(tmp_path):
    r = run_blocked(
        """
        import edgetune.device_agents, edgetune.device_agents.server, edgetune.device_agents._worker
        import edgetune.device_agents._cli, edgetune.device_agents.probes, edgetune.device_agents.runtimes
        import edgetune.device_agents._predict, edgetune.device_agents.deploy_protocol
        import edgetune.device_agents.server.routes_deploy, edgetune.device_agents.server._deployments
        from edgetune.device_agents.runtimes import get_runtime
        from edgetune.device_agents.server import AgentConfig, create_app
        from fastapi.testclient import TestClient
        app = create_app(AgentConfig(token="t0ken-for-test", workdir=sys.argv[1]))
        with TestClient(app) as c:
            assert c.get("/health").json()["status"] == "ok"
            assert c.get("/info").status_code == 401
            info = c.get("/info", headers={"Authorization": "Bearer t0ken-for-test"}).json()
            assert info["runtime"]["name"] == "ort" and info["runtime"]["version"], info
            deps = c.get("/deployments", headers={"Authorization": "Bearer t0ken-for-test"}).json()
            assert deps["deployments"] == [], deps
        get_runtime("ort").info()
        heavy = [m for m in ("torch", "optuna", "ray", "mlflow") if m in sys.modules]
        assert not heavy, heavy
        print("ok")
        """,
        str(tmp_path / "wd"),
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")


def test_agent_serve_help_without_heavy_deps():
    for argv in (["edgetune", "agent", "serve", "--help"], None):
        code = (
            "from edgetune.cli import main\nsys.argv = " + repr(argv) + "\nmain()"
            if argv else "from edgetune.device_agents.__main__ import main\nsys.argv = ['x', 'serve', '--help']\nmain()"
        )
        r = run_blocked(code)
        assert r.returncode == 0, r.stderr
        assert "--token-file" in r.stdout and "--runtime" in r.stdout and "--cpus" in r.stdout


def test_a_whole_measurement_runs_where_torch_cannot_be_imported(tmp_path, det_s_onnx, det_s_bundle):
    """The blocker goes in a sitecustomize on PYTHONPATH, so the agent and its measurement processes
    (fresh interpreters) both run under it."""
    import os

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert "blocked for this test: torch" in probe.stderr
    agent = start_agent(tmp_path / "blocked-agent", env=env)
    try:
        with agent.client(measure_timeout=300) as c:
            m = c.measure(det_s_onnx, dataset=det_s_bundle, latency=FAST)
        assert m.accuracy is not None and m.accuracy_images == det_s_bundle.num_images
        assert m.end_to_end is not None and m.latency.n >= FAST["min_runs"]
        with agent.client(measure_timeout=300) as c:  # a deployment and a prediction, torch-free too
            c.deploy("det", det_s_onnx, manifest={"head": det_s_bundle_head(det_s_bundle)})
            pred = c.predict("det", png_bytes(), score_threshold=0.0)
        assert pred.version == 1 and pred.image_width == 320 and pred.input_size == det_s_bundle.size
    finally:
        agent.stop()


def det_s_bundle_head(bundle) -> dict:
    from edgetune.device_agents import read_bundle

    return read_bundle(bundle.data).head.to_dict()


def png_bytes() -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()
