"""Helpers for the device-agent tests: start a real agent process, wait for a condition, a tiny model."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
FAST = {"warmup": 3, "min_runs": 20, "min_seconds": 0.0, "keep_samples": False}


@dataclass
class AgentProcess:
    url: str
    token: str
    proc: subprocess.Popen
    workdir: Path
    cpus: tuple[int, ...]

    def client(self, **kw):
        from edgetune.device_agents import AgentClient

        return AgentClient(self.url, token=self.token, **kw)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def last_cpu() -> int:
    return max(os.sched_getaffinity(0))


def start_agent(workdir: Path, *, token: str | None = None, args: tuple[str, ...] = (), env: dict | None = None,
                host_lock: Path | None = None, python: str | None = None, prelude: str | None = None,
                max_open_files: int | None = None) -> AgentProcess:
    """``python -m edgetune.device_agents serve`` on a free 127.0.0.1 port; waits for its ready file.
    ``prelude``: Python code run in the agent's interpreter before the command (to patch something);
    ``max_open_files``: the agent's RLIMIT_NOFILE (soft and hard)."""
    workdir.mkdir(parents=True, exist_ok=True)
    token = token or secrets.token_urlsafe(16)
    (workdir / "token").write_text(token)
    ready = workdir / "ready.json"
    ready.unlink(missing_ok=True)
    cpus = (last_cpu(),)
    launcher = ["-m", "edgetune.device_agents"] if prelude is None else \
        ["-c", prelude + "\nfrom edgetune.device_agents.__main__ import main\nmain()"]
    cmd = [python or sys.executable, *launcher, "serve", "--host", "127.0.0.1", "--port", "0", "--token-file",
           str(workdir / "token"),
           "--workdir", str(workdir), "--threads", "1", "--cpus", ",".join(map(str, cpus)), "--kind", "local-cpu",
           "--name", workdir.name, "--ready-file", str(ready),
           "--host-lock", str(host_lock or workdir / "host.lock"), *args]
    log = open(workdir / "agent.log", "ab")  # noqa: SIM115
    limit = None
    if max_open_files is not None:
        import resource

        def limit():
            resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, max_open_files))
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=limit)
    log.close()
    deadline = time.monotonic() + 60
    while not ready.is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError(f"agent did not start (exit {proc.returncode}): "
                               + (workdir / "agent.log").read_text()[-2000:])
        time.sleep(0.05)
    return AgentProcess(json.loads(ready.read_text())["url"], token, proc, workdir, cpus)


def wait_until(condition, *, what: str, timeout: float = 60.0, poll: float = 0.05) -> None:
    """Poll ``condition`` until it holds. The timeout is a hang detector, not a speed check: far longer
    than the thing should ever take, so that a slow or busy machine never fails the test."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting after {timeout:.0f} s for {what}")
        time.sleep(poll)


def send_chunked(url: str, method: str, path: str, *, total: int, headers: dict[str, str] | None = None,
                 first: bytes = b"", fill: bytes = b"x") -> tuple[int, int | None, str]:
    """Send a chunked body of ``total`` bytes (``first``, then ``fill`` repeated) on a raw socket, reading
    as it goes; returns (body bytes sent before the agent answered or closed, the status it answered,
    the response's head)."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n{extra}\r\n".encode())

    def frame(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    chunk = fill * (65536 // len(fill))
    sent, head = 0, b""
    s.setblocking(False)
    try:
        pending = frame(first) if first else b""
        sent = len(first)
        while sent < total or pending:
            try:
                if data := s.recv(65536):
                    head = data
                break  # an answer, or closed
            except BlockingIOError:
                pass
            if not pending:
                pending = frame(chunk)
                sent += len(chunk)
            try:
                pending = pending[s.send(pending):]
            except BlockingIOError:
                time.sleep(0.005)
            except (BrokenPipeError, ConnectionResetError):
                break
        if not head:
            s.setblocking(True)
            head = s.recv(65536)
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    text = head.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status = int(text.split(" ", 2)[1]) if text.startswith("HTTP/") else None
    return sent, status, text


def one_conv_onnx(path: Path) -> Path:
    """A one-Conv model with det-s's input: a second, much cheaper artifact to compare against."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["out"], strides=[4, 4])], "one-conv",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 256, 256])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 8, 64, 64])], initializer=[w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path
