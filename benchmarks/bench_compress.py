"""Compression of the builtin det-s, side by side: fp32 / int8-uniform / 50%-channel / mixed / 25%+recovery.

This is where the accuracy that recovery keeps is measured (it used to be a test; results are not tests):
the last lines say whether 25% channels + the default recovery keeps >= 0.95x of fp32's mAP50-95 and is
faster than fp32 side by side, on the machine named in the first line.

Each variant is compressed fresh (no cache) and timed; mAP50-95 is measured in process with onnxruntime
on the validation split; latency is the onnxruntime p50 at 1 intra-op thread, each measurement in a
fresh process pinned to one core, the variants alternating over rounds (the median of the rounds is
printed). "compress s" is the time of one compress() WITHOUT the recovery fine-tuning.

    nice -n 10 .venv/bin/python benchmarks/bench_compress.py [--val 500] [--rounds 5] [--runs 200] [--cpu 1]
        [--variants fp32,25%+recovery,50%-channel]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TIME_ONE = r"""
import os, sys, time, statistics
os.sched_setaffinity(0, {int(sys.argv[2])})
import numpy as np, onnxruntime as ort
so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
sess = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
for _ in range(20):
    sess.run(None, {"images": x})
t = []
for _ in range(int(sys.argv[3])):
    t0 = time.perf_counter(); sess.run(None, {"images": x}); t.append((time.perf_counter() - t0) * 1e3)
print(statistics.median(t))
"""


def machine() -> str:
    """CPU model, the SIMD features that decide int8 and bf16 speed, cores, library versions."""
    import onnxruntime
    import torch

    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())  # the first core's lines
    except OSError:
        pass
    model = info.get("model name") or platform.processor() or platform.machine()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "asimddp")
            if f in flags]
    return (f"{model}, {os.cpu_count()} cores, {'/'.join(simd) or 'no avx2'}; python {platform.python_version()}, "
            f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}")


def p50(onnx: Path, cpu: int, runs: int) -> float:
    out = subprocess.run([sys.executable, "-c", TIME_ONE, str(onnx), str(cpu), str(runs)], capture_output=True,
                         text=True, check=True)
    return float(out.stdout.strip())


def ort_metrics(path: Path, val, head, size: int) -> dict:
    import numpy as np
    import onnxruntime as ort

    from edgetune.models._evaluate import evaluate

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return evaluate(lambda x: np.concatenate([sess.run(None, {"images": x[i : i + 1]})[0] for i in range(len(x))]),
                    val, head, size=size)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--val", type=int, default=500, help="validation images for mAP")
    ap.add_argument("--train", type=int, default=2000, help="train images for recovery")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1, help="core the timing processes are pinned to")
    ap.add_argument("--variants", default="", help="comma-separated subset of the variants (fp32 is always in)")
    args = ap.parse_args()
    print(f"machine: {machine()}", flush=True)

    from edgetune.compress import RecoverySpec, compress
    from edgetune.config import ModelSpec
    from edgetune.data.shapes import shapes_split
    from edgetune.models import load_model
    from edgetune.spaces import SpaceSpec, build_space

    val, calib, train = shapes_split("val", args.val), shapes_split("calib", 64), shapes_split("train", args.train)
    model = load_model(ModelSpec(source="builtin", name="det-s"), class_names=val.class_names,
                       category_ids=val.category_ids)
    space = build_space(model, SpaceSpec(keep={"precision": {"fp32": ["first", "last"]}, "sparsity": ["last"]}))

    def groups(label: str) -> dict:
        return {d.name: (label if label in d.choices else "dense") if d.kind == "sparsity" else "fp32"
                for d in space.dimensions}

    variants = {
        "fp32": (space.baseline("fp32"), RecoverySpec(steps=0)),
        "int8-uniform": (space.baseline("int8-uniform"), RecoverySpec(steps=0)),
        "50%-channel": (space.config_from(groups("channel:0.5")), RecoverySpec(steps=0)),
        "mixed": (space.config_from({d.name: "int8" if d.kind == "precision" else "dense" for d in space.dimensions}),
                  RecoverySpec(steps=0)),
        "25%+recovery": (space.config_from(groups("channel:0.25")), RecoverySpec()),
    }
    if args.variants:
        wanted = {"fp32", *(v.strip() for v in args.variants.split(",") if v.strip())}
        unknown = wanted - set(variants)
        if unknown:
            ap.error(f"unknown variants {sorted(unknown)}; valid: {', '.join(variants)}")
        variants = {k: v for k, v in variants.items() if k in wanted}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (cfg, rec) in variants.items():
            art = compress(model, cfg, calib=calib, train=train, recovery=rec, workdir=Path(tmp), space=space,
                           use_cache=False)
            t = art.manifest["timings_s"]
            m = ort_metrics(art.onnx_path, val, model.head, model.input_size)
            rows[name] = {"art": art, "map": m["map50_95"], "map50": m["map50"], "recover_s": t.get("recover", 0.0),
                          "compress_s": t["total"] - t.get("recover", 0.0), "lat": []}
            print(f"compressed {name}: {t}", flush=True)
        for r in range(args.rounds):
            for _name, row in rows.items():
                row["lat"].append(p50(row["art"].onnx_path, args.cpu, args.runs))
            print(f"round {r + 1}: " + ", ".join(f"{n} {row['lat'][-1]:.2f}" for n, row in rows.items()), flush=True)
    base = rows["fp32"]
    t32 = statistics.median(base["lat"])
    print(f"\ndet-s (weights sha256 {model.source_hash[:12]}), {len(val)} val images, onnxruntime 1 thread, "
          f"p50 = median of {args.rounds} alternating rounds x {args.runs} runs")
    print(f"{'variant':<14}{'mAP50-95':>9}{'x fp32':>8}{'mAP50':>7}{'p50 ms':>8}{'speed-up':>9}{'KB':>7}{'zstd KB':>8}"
          f"{'params':>9}{'compress s':>11}{'recover s':>10}")
    for name, row in rows.items():
        s, lat = row["art"].sizes, statistics.median(row["lat"])
        print(f"{name:<14}{row['map']:>9.4f}{row['map'] / max(base['map'], 1e-9):>8.3f}{row['map50']:>7.3f}{lat:>8.2f}"
              f"{t32 / lat:>8.2f}x{s['bytes'] / 1024:>7.0f}{s['zstd_bytes'] / 1024:>8.0f}{s['params']:>9,}"
              f"{row['compress_s']:>11.1f}{row['recover_s']:>10.1f}")
    rec = rows.get("25%+recovery")
    if rec is not None:
        kept, speed = rec["map"] / max(base["map"], 1e-9), t32 / statistics.median(rec["lat"])
        result = rec["art"].manifest["recovery"]["result"]
        print(f"\n25% channels + default recovery ({result['steps']}/{result['steps_asked']} steps, stopped by "
              f"{result['stopped']}): keeps {kept:.3f}x of fp32's mAP50-95 (bar: 0.95x: "
              f"{'met' if kept >= 0.95 else 'NOT met'}), {speed:.2f}x fp32's speed side by side "
              f"({'faster' if speed > 1 else 'NOT faster'})")


if __name__ == "__main__":
    main()
