"""Hostile input from the network, against a real agent process: a corpus of files that are not
self-contained ONNX models (each refused at upload with a one-line reason, nothing stored), and
unauthenticated requests of every route and method (401 before any body is read, chunked included)."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import random
import socket
import threading
import time
import zipfile

import httpx
import numpy as np
import onnx
import psutil
import pytest
from agent_helpers import start_agent
from onnx import TensorProto, helper, numpy_helper


def _relu_graph(name="g", initializers=()):
    return helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], name,
                             [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], list(initializers))


def _w(name="w"):
    return numpy_helper.from_array(np.ones(4, np.float32), name)


def _external(t, location: str):
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", "16")):
        e = t.external_data.add()
        e.key, e.value = k, v
    return t


def _model(graph, **kw) -> bytes:
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], **kw).SerializeToString()


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def corpus(det_s_onnx) -> dict[str, bytes]:
    good = _model(_relu_graph(initializers=[_w()]))
    files: dict[str, bytes] = {}
    files["external: relative"] = _model(_relu_graph(initializers=[_external(_w(), "w.bin")]))
    files["external: ../../etc/passwd"] = _model(_relu_graph(initializers=[_external(_w(), "../../etc/passwd")]))
    files["external: absolute"] = _model(_relu_graph(initializers=[_external(_w(), "/etc/passwd")]))
    files["external: another artifact"] = _model(_relu_graph(initializers=[_external(_w(), "../artifacts/x.onnx")]))
    bare = _w()
    bare.ClearField("raw_data")
    bare.data_location = TensorProto.EXTERNAL  # EXTERNAL with no entries
    files["external: location flag only"] = _model(_relu_graph(initializers=[bare]))
    const = helper.make_node("Constant", [], ["w"], value=_external(_w("c"), "/etc/shadow"))
    g = helper.make_graph([const, helper.make_node("Add", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    files["external: Constant attribute"] = _model(g)
    then = _relu_graph("then", [_external(_w(), "/etc/hosts")])
    cond = helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=_relu_graph("else", [_w()]))
    g = helper.make_graph([cond], "g", [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                                        helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    files["external: If subgraph"] = _model(g)
    fn = helper.make_function("local.fn", "F", ["x"], ["y"],
                              [helper.make_node("Constant", [], ["y"], value=_external(_w("f"), "/etc/passwd"))],
                              [helper.make_opsetid("", 17)])
    g = helper.make_graph([helper.make_node("F", ["x"], ["y"], domain="local.fn")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    files["external: inside a function"] = _model(g, functions=[fn])
    sparse = helper.make_sparse_tensor(_external(_w("sv"), "/etc/passwd"),
                                       numpy_helper.from_array(np.arange(4, dtype=np.int64), "si"), [4])
    g = _relu_graph(initializers=[_w()])
    g.sparse_initializer.append(sparse)
    files["external: sparse initializer"] = _model(g)
    # an unknown group field (wire type 3 ... 4) in front of a model with external data
    group = _varint((999 << 3) | 3) + _varint((1 << 3) | 0) + b"\x01" + _varint((999 << 3) | 4)
    files["external: behind an unknown group"] = group + files["external: absolute"]
    for proto in range(6):
        files[f"pickle protocol {proto}"] = pickle.dumps({"state_dict": [1.0, 2.0], "os": "system"}, protocol=proto)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # the layout of torch.save
        zf.writestr("archive/data.pkl", pickle.dumps({"w": 1}, protocol=2))
        zf.writestr("archive/version", "3\n")
    files["torch checkpoint zip"] = buf.getvalue()
    real = det_s_onnx.read_bytes()
    files["truncated ONNX"] = real[: len(real) // 3]
    files["random bytes"] = random.Random(0).randbytes(200_000)
    files["empty"] = b""
    files["text"] = b"hello, this is not a model\n"
    files["no graph"] = helper.make_model(helper.make_graph([], "g", [], [])).SerializeToString()
    files["padded to stall a parser"] = (_varint(1000 << 3) + b"\x01") * 3_000_000 + good
    custom = helper.make_graph([helper.make_node("Evil", ["x"], ["y"], domain="com.evil.ops")], "g",
                               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    files["custom-domain op"] = _model(custom)
    onnx.checker.check_model(onnx.load_from_string(good))  # the control: a real model, accepted
    return files


@pytest.fixture(scope="module")
def hostile_agent(tmp_path_factory):
    a = start_agent(tmp_path_factory.mktemp("hostile") / "agent-hostile", args=("--max-artifact-mb", "64"))
    yield a
    a.stop()


def _stored(agent) -> list[str]:
    root = agent.workdir / "artifacts"
    return sorted(p.name for p in root.glob("*.onnx")) if root.is_dir() else []


def test_every_hostile_file_is_refused_at_upload_and_nothing_is_stored(hostile_agent, det_s_onnx):
    files = corpus(det_s_onnx)
    assert len(files) >= 20
    auth = {"Authorization": f"Bearer {hostile_agent.token}"}
    before = _stored(hostile_agent)
    worst = 0.0
    with httpx.Client(base_url=hostile_agent.url, timeout=120) as c:
        stop = threading.Event()

        def poll_health():  # /health keeps answering while uploads are checked (recorded, printed)
            nonlocal worst
            while not stop.is_set():
                t0 = time.perf_counter()
                assert httpx.get(hostile_agent.url + "/health", timeout=30).status_code == 200
                worst = max(worst, time.perf_counter() - t0)
                time.sleep(0.01)

        poller = threading.Thread(target=poll_health, daemon=True)
        poller.start()
        try:
            reasons = {}
            for name, data in files.items():
                sha = hashlib.sha256(data).hexdigest()
                r = c.put(f"/artifacts/{sha}", content=data, headers=auth)
                assert r.status_code in (415, 422), (name, r.status_code, r.text[:300])
                msg = r.json()["error"]["message"]
                assert "\n" not in msg and len(msg) < 600, (name, msg)
                reasons[name] = msg
                r = c.put("/deployments/hostile", headers=auth, files={"model": ("model.onnx", data)},
                          data={"sha256": sha, "manifest": json.dumps({"onnx_sha256": sha})})
                assert r.status_code in (415, 422), (name, r.status_code, r.text[:300])  # nor as a deployment
            good = _model(_relu_graph(initializers=[_w()]))
            r = c.put(f"/artifacts/{hashlib.sha256(good).hexdigest()}", content=good, headers=auth)
            assert r.status_code == 200, r.text
        finally:
            stop.set()
            poller.join(30)
    assert _stored(hostile_agent) == sorted({*before, f"{hashlib.sha256(good).hexdigest()}.onnx"})
    assert not any((hostile_agent.workdir / "deployments").glob("hostile*/v*"))
    assert "external data" in reasons["external: behind an unknown group"] or "does not define" in \
        reasons["external: behind an unknown group"]
    assert "pickle" in reasons["pickle protocol 0"] and "pickle" in reasons["pickle protocol 5"]
    assert "com.evil.ops" in reasons["custom-domain op"] and "does not define" in reasons["padded to stall a parser"]
    print(f"\nworst /health answer during {len(files)} hostile uploads: {worst * 1000:.1f} ms")
    for name, msg in reasons.items():
        print(f"  {name}: {msg[:120]}")


def _routes(agent) -> list[tuple[str, str]]:
    from edgetune.device_agents.server import AgentConfig, create_app

    app = create_app(AgentConfig(token="x" * 16, workdir=str(agent.workdir / "probe")))
    out = []
    for path, ops in app.openapi()["paths"].items():
        for method in ops:
            out.append((method.upper(), path.replace("{sha}", "0" * 64).replace("{name}", "det")))
    return out + [("GET", "/no/such/route"), ("DELETE", "/artifacts/" + "0" * 64)]


def test_unauthenticated_requests_of_every_route_get_401_without_the_body_read(hostile_agent):
    routes = _routes(hostile_agent)
    assert len(routes) >= 10
    with httpx.Client(base_url=hostile_agent.url, timeout=30) as c:
        for method, path in routes:
            if path == "/health":
                continue
            for headers in ({}, {"Authorization": "Bearer wrong-token-xyz"}):
                r = c.request(method, path, headers=headers, content=b"{not json" if method != "GET" else None)
                assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
    proc = psutil.Process(hostile_agent.proc.pid)
    rss0 = proc.memory_info().rss
    for method, path in [("POST", "/measure"), ("PUT", "/artifacts/" + "0" * 64), ("POST", "/deployments/det/predict")]:
        sent, status = _chunked_unauthenticated(hostile_agent.url, method, path, total=100 * 2**20)
        assert status == 401, (method, path, status)
        assert sent < 100 * 2**20, f"{method} {path}: the agent read all {sent} bytes before answering"
    growth = proc.memory_info().rss - rss0
    assert growth < 20 * 2**20, f"agent RSS grew by {growth / 2**20:.0f} MiB on unauthenticated chunked bodies"


def _chunked_unauthenticated(url: str, method: str, path: str, *, total: int) -> tuple[int, int | None]:
    """Send a chunked body of ``total`` bytes without a token; returns (bytes sent before the agent
    answered or closed, the status it answered)."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
              "Content-Type: application/octet-stream\r\n\r\n".encode())
    chunk = b"x" * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent, status = 0, None
    s.setblocking(False)
    try:
        while sent < total:
            try:
                head = s.recv(4096)
                if head:
                    status = int(head.split(b" ", 2)[1])
                    break
                break  # closed
            except BlockingIOError:
                pass
            try:
                s.send(frame)
                sent += len(chunk)
            except BlockingIOError:
                time.sleep(0.005)
            except (BrokenPipeError, ConnectionResetError):
                break
        if status is None:
            s.setblocking(True)
            head = s.recv(4096)
            status = int(head.split(b" ", 2)[1]) if head else None
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    return sent, status


def test_the_checking_process_never_outlives_the_agent(tmp_path):
    """Killed the hard way (SIGKILL, as the OOM killer does), the agent leaves no checker behind."""
    agent = start_agent(tmp_path / "agent-killed")
    data = pickle.dumps([1], protocol=4)
    r = httpx.put(f"{agent.url}/artifacts/{hashlib.sha256(data).hexdigest()}", content=data,
                  headers={"Authorization": f"Bearer {agent.token}"}, timeout=60)
    assert r.status_code == 415
    checkers = [p for p in psutil.Process(agent.proc.pid).children()
                if "_onnx_check" in " ".join(p.cmdline())]
    assert len(checkers) == 1
    agent.proc.kill()
    agent.proc.wait()
    gone, alive = psutil.wait_procs(checkers, timeout=30)
    assert not alive, "the checker outlived the agent"
