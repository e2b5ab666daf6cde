"""Helpers for the device-agent tests: start a real agent process, a bare onnxruntime loop."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

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
                host_lock: Path | None = None) -> AgentProcess:
    """``python -m edgetune.device_agents serve`` on a free 127.0.0.1 port; waits for its ready file."""
    workdir.mkdir(parents=True, exist_ok=True)
    token = token or secrets.token_urlsafe(16)
    (workdir / "token").write_text(token)
    ready = workdir / "ready.json"
    ready.unlink(missing_ok=True)
    cpus = (last_cpu(),)
    cmd = [sys.executable, "-m", "edgetune.device_agents", "serve", "--port", "0", "--token-file", str(workdir / "token"),
           "--workdir", str(workdir), "--threads", "1", "--cpus", ",".join(map(str, cpus)), "--kind", "local-cpu",
           "--name", workdir.name, "--ready-file", str(ready),
           "--host-lock", str(host_lock or workdir / "host.lock"), *args]
    log = open(workdir / "agent.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    deadline = time.monotonic() + 60
    while not ready.is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("agent did not start: " + (workdir / "agent.log").read_text()[-2000:])
        time.sleep(0.05)
    return AgentProcess(json.loads(ready.read_text())["url"], token, proc, workdir, cpus)


BARE_LOOP = r"""
import os, sys, time, statistics
os.sched_setaffinity(0, {int(sys.argv[2])})
import numpy as np, onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
sess = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
for _ in range(int(sys.argv[3])):
    sess.run(None, {name: x})
t = []
for _ in range(int(sys.argv[4])):
    t0 = time.perf_counter(); sess.run(None, {name: x}); t.append((time.perf_counter() - t0) * 1e3)
print(statistics.median(t))
"""


def bare_ort_p50(onnx_path: Path, *, cpu: int, warmup: int = 20, runs: int = 200) -> float:
    """p50 (ms) of a bare onnxruntime loop in a fresh process pinned to ``cpu`` (1 thread)."""
    out = subprocess.run([sys.executable, "-c", BARE_LOOP, str(onnx_path), str(cpu), str(warmup), str(runs)],
                         capture_output=True, text=True, check=True, timeout=300)
    return float(out.stdout.strip())


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
