"""The agent's deployment slots (in-process app, real files): verified pushes, versions kept for rollback,
atomic commits, auth and limits. The end-to-end flow over HTTP is in ``test_deploy_e2e.py``."""

from __future__ import annotations

import hashlib
import json

import pytest
from fastapi.testclient import TestClient

from edgetune.device_agents.server import AgentConfig, create_app
from edgetune.device_agents.server import _deployments as deployments_mod

TOKEN = "t0ken-for-deploy-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def tiny_onnx(tag: float) -> bytes:
    """A valid single-file ONNX whose bytes depend on ``tag``."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.full((1,), tag, np.float32), "w")
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


@pytest.fixture
def agent(tmp_path):
    app = create_app(AgentConfig(token=TOKEN, workdir=tmp_path / "agent", host_lock=None, keep_deployments=3))
    with TestClient(app) as c:
        yield c, tmp_path / "agent" / "deployments"


def push(c, name: str, data: bytes, *, sha: str | None = None, manifest: dict | None = None, headers=AUTH):
    sha = sha or hashlib.sha256(data).hexdigest()
    manifest = manifest if manifest is not None else {"onnx_sha256": sha, "deployment": {"label": f"m{len(data)}"}}
    return c.put(f"/deployments/{name}", headers=headers, files={"model": ("model.onnx", data)},
                 data={"sha256": sha, "manifest": json.dumps(manifest)})


def test_versions_rollback_and_the_current_link(agent):
    c, root = agent
    models = [tiny_onnx(float(i)) for i in range(5)]
    for i, m in enumerate(models[:2]):
        r = push(c, "det", m)
        assert r.status_code == 200, r.text
        assert r.json()["created"] and r.json()["deployment"]["active"] == i + 1
    again = push(c, "det", models[1]).json()  # the active bytes again: nothing changes
    assert again["created"] is False and again["deployment"]["active"] == 2
    current = root / "det" / "current" / "model.onnx"
    assert current.read_bytes() == models[1]
    assert json.loads((root / "det" / "v2" / "manifest.json").read_text())["onnx_sha256"] == hashlib.sha256(models[1]).hexdigest()
    # the deployed bytes can be re-measured by hash: they are in the artifact store too
    assert c.head(f"/artifacts/{hashlib.sha256(models[1]).hexdigest()}", headers=AUTH).status_code == 200

    r = c.post("/deployments/det/rollback", headers=AUTH)
    assert r.status_code == 200 and r.json()["active"] == 1
    assert current.read_bytes() == models[0]
    r = c.post("/deployments/det/rollback", headers=AUTH)
    assert r.status_code == 409 and r.json()["error"]["type"] == "NothingToRollBack"
    assert c.post("/deployments/det/rollback", headers=AUTH, json={"version": 2}).json()["active"] == 2

    for m in models[2:]:
        push(c, "det", m)
    listed = c.get("/deployments", headers=AUTH).json()["deployments"]
    assert [d["name"] for d in listed] == ["det"]
    versions = [v["version"] for v in listed[0]["versions"]]
    assert versions == [3, 4, 5] and listed[0]["active"] == 5  # the newest 3 are kept
    assert sorted(p.name for p in (root / "det").glob("v*")) == ["v3", "v4", "v5"]
    r = c.post("/deployments/det/rollback", headers=AUTH, json={"version": 1})
    assert r.status_code == 404 and "v3, v4, v5" in r.json()["error"]["message"]


def test_a_corrupted_push_is_refused_and_nothing_is_replaced(agent):
    c, root = agent
    good, other = tiny_onnx(1.0), tiny_onnx(2.0)
    assert push(c, "det", good).status_code == 200
    before = c.get("/deployments/det", headers=AUTH).json()
    bad = bytearray(other)
    bad[-3] ^= 0xFF
    r = push(c, "det", bytes(bad), sha=hashlib.sha256(other).hexdigest())
    assert r.status_code == 400 and r.json()["error"]["type"] == "HashMismatch"
    assert "stays at v1" in r.json()["error"]["message"]
    r = push(c, "det", b"\x80\x04not onnx, a pickle")
    assert r.status_code == 415
    r = push(c, "det", other, manifest={"onnx_sha256": "0" * 64})
    assert r.status_code == 400 and r.json()["error"]["type"] == "ManifestMismatch"
    assert c.get("/deployments/det", headers=AUTH).json() == before
    assert (root / "det" / "current" / "model.onnx").read_bytes() == good
    assert not list((root / ".tmp").iterdir())  # no temp file left behind


def test_a_commit_that_dies_midway_leaves_the_previous_version_active(agent, monkeypatch):
    c, root = agent
    first, second, third = tiny_onnx(1.0), tiny_onnx(2.0), tiny_onnx(3.0)
    push(c, "det", first)

    def crash(path, obj):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(deployments_mod, "_write_json", crash)
    with pytest.raises(OSError):
        push(c, "det", second)
    monkeypatch.undo()
    dep = c.get("/deployments/det", headers=AUTH).json()
    assert dep["active"] == 1 and [v["version"] for v in dep["versions"]] == [1]
    assert (root / "det" / "current" / "model.onnx").read_bytes() == first
    assert not (root / "det" / "v2").exists()
    assert push(c, "det", third).json()["deployment"]["active"] == 2  # the number is free again


def test_auth_names_and_limits(agent):
    c, _ = agent
    data = tiny_onnx(1.0)
    assert push(c, "det", data, headers={}).status_code == 401
    assert c.get("/deployments").status_code == 401
    r = push(c, "../etc", data)
    assert r.status_code in (400, 404)
    r = push(c, "bad name!", data)
    assert r.status_code == 400 and "invalid" in r.json()["error"]["message"]
    r = c.get("/deployments/nothing", headers=AUTH)
    assert r.status_code == 404 and r.json()["error"]["type"] == "DeploymentMissing"
    r = c.put("/deployments/det", headers=AUTH, data={"sha256": hashlib.sha256(data).hexdigest(), "manifest": "{}"})
    assert r.status_code == 400 and "`model`" in r.json()["error"]["message"]
    r = c.put("/deployments/det", headers=AUTH, files={"model": ("m", data)},
              data={"sha256": hashlib.sha256(data).hexdigest(), "manifest": "[1, 2]"})
    assert r.status_code == 400 and "JSON object" in r.json()["error"]["message"]
