"""The agent on a shared network, against real agent processes: half-open and slow connections never
make it unreachable (header and write deadlines, a connection cap that closes those waiting longest on
their client), a stalled body gets 408, a body over its cap gets 413 on every route however it is sent,
and a client that drops mid-upload is one log line."""

from __future__ import annotations

import hashlib
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest
from agent_helpers import send_chunked, start_agent, wait_until
from onnx import TensorProto, helper, numpy_helper

MiB = 1 << 20


def _connect(agent, *, rcvbuf: int | None = None) -> socket.socket:
    host, port = agent.url.removeprefix("http://").split(":")
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)  # before connect: a small window
    s.settimeout(30)
    s.connect((host, int(port)))
    return s


def _closed_by_agent(s: socket.socket) -> bool:
    """True once the agent has closed ``s`` (EOF or reset); reads and drops what is buffered."""
    s.setblocking(False)
    try:
        while True:
            if not s.recv(65536):
                return True
    except BlockingIOError:
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


def _health(agent) -> int:
    return httpx.get(agent.url + "/health", timeout=30).status_code


def test_hundreds_of_half_open_connections_never_make_the_agent_unreachable(tmp_path):
    """At an open-file limit of 200, 600 sockets, opened by 32 clients at once, that send half a request
    line and headers and wait: without a cap the agent runs out of files and nobody connects; with it,
    the connections that waited longest are closed (no header deadline helps here: it is 10 minutes) and
    /health answers while every one of the 600 is still held open by its client. Clients at once, as a
    crowd comes: asyncio then holds several accept batches beyond the cap (the agent's reserve)."""
    agent = start_agent(tmp_path / "agent-crowd", max_open_files=200, args=("--header-timeout", "600"))
    socks = []

    def half_open(_) -> socket.socket:
        s = _connect(agent)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: agent\r\nX-Slow: ")
        return s

    try:
        with ThreadPoolExecutor(32) as clients:
            for s in clients.map(half_open, range(600)):
                socks.append(s)
        assert _health(agent) == 200  # while all 600 are open on this side
        wait_until(lambda: sum(_closed_by_agent(s) for s in socks) >= 100, what="the agent to shed connections",
                   timeout=30)
        assert psutil.Process(agent.proc.pid).num_fds() < 200
        assert _health(agent) == 200
    finally:
        for s in socks:
            s.close()
        agent.stop()
    log = (agent.workdir / "agent.log").read_text()
    assert "Too many open files" not in log and "Traceback" not in log, log[-2000:]
    assert log.count("connections open, the agent's limit") == 1  # one line a minute, not one per socket


@pytest.fixture(scope="module")
def strict_agent(tmp_path_factory):
    """Second-long deadlines and 1 MiB caps on uploads, so that every limit is reached in a moment."""
    a = start_agent(tmp_path_factory.mktemp("strict") / "agent-strict",
                    args=("--header-timeout", "1", "--stall-timeout", "1", "--max-artifact-mb", "1",
                          "--max-dataset-mb", "1"))
    yield a
    a.stop()


def _agent_ports(agent) -> set[int]:
    proc = psutil.Process(agent.proc.pid)
    conns = proc.net_connections() if hasattr(proc, "net_connections") else proc.connections()
    return {c.raddr.port for c in conns if c.raddr}


def test_slow_clients_are_cut_off(strict_agent):
    auth = f"Authorization: Bearer {strict_agent.token}\r\n"
    silent = _connect(strict_agent)
    partial = _connect(strict_agent)
    partial.sendall(b"GET /health HTTP/1.1\r\nHost: agent\r\n")
    keep_alive = _connect(strict_agent)  # one request, then half of the next
    keep_alive.sendall(b"GET /health HTTP/1.1\r\nHost: agent\r\n\r\nGET /heal")
    stalled = _connect(strict_agent)  # headers, then 10 of 1000 body bytes
    stalled.sendall(f"PUT /artifacts/{'0' * 64} HTTP/1.1\r\nHost: agent\r\n{auth}Content-Length: 1000\r\n\r\n"
                    .encode() + b"x" * 10)
    unread = _connect(strict_agent, rcvbuf=4096)  # ~10 MB of responses asked for, none read
    unread.sendall(f"GET /openapi.json HTTP/1.1\r\nHost: agent\r\n{auth}\r\n".encode() * 200)
    unread_port = unread.getsockname()[1]
    try:
        wait_until(lambda: unread_port in _agent_ports(strict_agent), what="the agent to accept", timeout=30)
        wait_until(lambda: unread_port not in _agent_ports(strict_agent), what="the agent to drop the unread "
                   "responses", timeout=60)
        for name, s in [("silent", silent), ("partial", partial), ("keep-alive", keep_alive)]:
            wait_until(lambda s=s: _closed_by_agent(s), what=f"the agent to close the {name} connection", timeout=30)
        stalled.setblocking(True)
        answer = stalled.recv(65536).decode("latin-1")
        assert answer.startswith("HTTP/1.1 408") and '"RequestTimeout"' in answer, answer
        assert "connection: close" in answer.lower()
        wait_until(lambda: _closed_by_agent(stalled), what="the stalled upload's connection to close", timeout=30)
    finally:
        for s in (silent, partial, keep_alive, stalled, unread):
            s.close()
    assert _health(strict_agent) == 200
    assert list((strict_agent.workdir / "artifacts" / ".tmp").iterdir()) == []


def _tiny_onnx() -> bytes:
    import numpy as np

    w = numpy_helper.from_array(np.ones(4, np.float32), "w")
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _form_part(name: str) -> bytes:
    return (f'--B\r\nContent-Disposition: form-data; name="{name}"; filename="f"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()


def test_a_body_over_its_cap_gets_413_on_every_route_chunked_or_not(strict_agent):
    model = _tiny_onnx()
    sha = hashlib.sha256(model).hexdigest()
    auth = {"Authorization": f"Bearer {strict_agent.token}"}
    r = httpx.put(f"{strict_agent.url}/deployments/det", headers=auth, files={"model": ("m.onnx", model)}, timeout=60,
                  data={"sha256": sha, "manifest": json.dumps({"onnx_sha256": sha, "head": {}})})
    assert r.status_code == 200, r.text  # so that /predict reads the body it is sent
    json_ = {**auth, "Content-Type": "application/json"}
    form = {**auth, "Content-Type": "multipart/form-data; boundary=B"}
    cases = [  # (method, path, headers, first bytes, bytes offered: the route's cap (1, 16, 3 MiB) + 16 MiB)
        ("POST", "/measure", json_, b'{"artifact": "', 17 * MiB),
        ("POST", "/compare", json_, b'{"artifacts": [', 17 * MiB),
        ("POST", "/deployments/det/rollback", json_, b"{", 17 * MiB),
        ("POST", "/deployments/det/predict", form, _form_part("image"), 32 * MiB),
        ("PUT", "/deployments/det", form, _form_part("model"), 19 * MiB),
        ("PUT", f"/artifacts/{'1' * 64}", auth, b"", 17 * MiB),
        ("PUT", f"/datasets/{'1' * 64}", auth, b"", 17 * MiB),
    ]
    for method, path, headers, first, total in cases:
        sent, status, head = send_chunked(strict_agent.url, method, path, total=total, headers=headers, first=first,
                                          fill=b" ")
        assert status == 413, (method, path, status, head)
        assert sent < total, f"{method} {path}: all {sent} bytes were read before the answer"
    with httpx.Client(base_url=strict_agent.url, headers=json_, timeout=60) as c:  # declared, not chunked
        r = c.post("/measure", content=b"{" + b" " * (2 * MiB) + b"}")
        assert r.status_code == 413 and r.json()["error"]["type"] == "PayloadTooLarge", r.text[:300]
        assert c.get("/deployments/det").json()["active"] == 1  # nothing replaced the deployment
    assert _health(strict_agent) == 200


def test_a_client_that_drops_mid_upload_is_one_log_line(strict_agent):
    log = strict_agent.workdir / "agent.log"
    before = log.read_text()
    auth = f"Authorization: Bearer {strict_agent.token}\r\n"
    drops = [
        f"PUT /artifacts/{'2' * 64} HTTP/1.1\r\nHost: agent\r\n{auth}Content-Length: 500000\r\n\r\n".encode()
        + b"x" * 1000,
        (f"PUT /deployments/det HTTP/1.1\r\nHost: agent\r\n{auth}Content-Length: 500000\r\n"
         "Content-Type: multipart/form-data; boundary=B\r\n\r\n").encode() + _form_part("model") + b"x" * 1000,
    ]
    for request in drops:
        s = _connect(strict_agent)
        s.sendall(request)
        time.sleep(0.2)  # the agent is reading the body
        s.close()
    wait_until(lambda: log.read_text().count("closed the connection during") - before.count(
        "closed the connection during") == len(drops), what="one warning line per dropped upload", timeout=30)
    new = log.read_text()[len(before):]
    assert "Traceback" not in new and "unexpected" not in new.lower(), new[-3000:]
    assert len(new.strip().splitlines()) == len(drops), new
    assert list((strict_agent.workdir / "artifacts" / ".tmp").iterdir()) == []
