"""Agent overhead: p50 of the builtin detector measured through a local agent vs a bare onnxruntime loop.

Both run in fresh processes pinned to the same core with 1 intra-op thread, in alternating rounds, in
one run. Prints each round and the ratio of the medians (agent / bare); the agent's measurement adds
HTTP, a child process and statistics around the same ``session.run`` loop, so the ratio should be ~1.

    nice -n 10 .venv/bin/python benchmarks/bench_agent_overhead.py [--rounds 5] [--runs 300] [--onnx PATH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE_LOOP = r"""
import os, sys, time, statistics
os.sched_setaffinity(0, {int(sys.argv[2])})
import numpy as np, onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
sess = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
x = np.random.default_rng(0).random(shape, dtype=np.float32)
for _ in range(int(sys.argv[3])):
    sess.run(None, {name: x})
t = []
for _ in range(int(sys.argv[4])):
    t0 = time.perf_counter(); sess.run(None, {name: x}); t.append((time.perf_counter() - t0) * 1e3)
print(statistics.median(t))
"""


def export_builtin(path: Path) -> Path:
    from edgetune.compress.export import export_onnx
    from edgetune.config import ModelSpec
    from edgetune.data.shapes import CLASSES
    from edgetune.models import load_model

    loaded = load_model(ModelSpec(source="builtin", name="det-s"), class_names=CLASSES,
                        category_ids=tuple(range(1, len(CLASSES) + 1)))
    export_onnx(loaded.module, path, input_size=loaded.input_size)
    return path


def bare_p50(onnx: Path, cpu: int, warmup: int, runs: int) -> float:
    out = subprocess.run([sys.executable, "-c", BARE_LOOP, str(onnx), str(cpu), str(warmup), str(runs)],
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", type=Path, default=None, help="ONNX to time (default: export the builtin det-s)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=30)
    args = ap.parse_args()

    from edgetune.device_agents import LatencySpec, start_local_agents

    with tempfile.TemporaryDirectory() as tmp:
        onnx = args.onnx or export_builtin(Path(tmp) / "det-s.onnx")
        spec = LatencySpec(warmup=args.warmup, min_runs=args.runs, max_runs=args.runs, min_seconds=0.0,
                           end_to_end=False, keep_samples=False)
        with start_local_agents(1, workdir=Path(tmp) / "agents") as agents:
            agent = agents.agents[0]
            cpu = agent.cpus[0]
            print(f"model {onnx.name}, cpu {cpu}, 1 thread, {args.runs} timed runs per round, "
                  f"{args.rounds} alternating rounds (agent first), nproc {os.cpu_count()}")
            agent_p50, bare = [], []
            with agents.fleet(measure_timeout=600) as fleet, fleet.lease(agent.name) as client:
                client.upload_artifact(onnx)
                for r in range(args.rounds):
                    t0 = time.perf_counter()
                    m = client.measure(onnx, latency=spec)
                    wall = time.perf_counter() - t0
                    agent_p50.append(m.latency.p50_ms)
                    bare.append(bare_p50(onnx, cpu, args.warmup, args.runs))
                    print(f"round {r}: agent p50 {agent_p50[-1]:.4f} ms (measure call {wall:.2f} s, "
                          f"agent wall {m.wall_s:.2f} s, load {m.session_load_s:.3f} s)  bare p50 {bare[-1]:.4f} ms  "
                          f"ratio {agent_p50[-1] / bare[-1]:.3f}")
    ratio = statistics.median(agent_p50) / statistics.median(bare)
    print(f"median agent p50 {statistics.median(agent_p50):.4f} ms, median bare onnxruntime p50 "
          f"{statistics.median(bare):.4f} ms, ratio {ratio:.3f}")


if __name__ == "__main__":
    main()
