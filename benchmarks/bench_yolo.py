"""YOLO11n (or YOLOv8n, or your checkpoint) on this machine: fp32 vs int8-uniform vs 30%-pruned variants,
timed side by side (one core, one thread, a fresh process per model, rounds rotated), with their sizes.

    python benchmarks/bench_yolo.py [--model yolo11n.yaml | --weights best.pt] [--size 320] [--rounds 3]
        [--runtime ort] [--runs 200]

With a yaml the weights are random: latency and size are real, accuracy is not (no trained YOLO weights
ship with edgetune and nothing is downloaded), so this script prints none. Needs the yolo extra.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_compress import machine  # noqa: E402
from bench_front import rotated_p50  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="yolo11n.yaml", help="an Ultralytics model yaml (random weights)")
    ap.add_argument("--weights", default=None, help="an Ultralytics training checkpoint (.pt) instead")
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--classes", type=int, default=80)
    ap.add_argument("--ratio", type=float, default=0.3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--runtime", default="ort")
    args = ap.parse_args()

    import numpy as np

    from edgetune.compress import RecoverySpec, compress
    from edgetune.config import ModelSpec
    from edgetune.models import load_model
    from edgetune.spaces import CompressionConfig, SpaceSpec, build_space

    spec = ModelSpec(source="ultralytics", weights=args.weights, name=None if args.weights else args.model,
                     input_size=args.size)
    names = tuple(f"c{k}" for k in range(args.classes))
    model = load_model(spec, class_names=names, category_ids=tuple(range(1, args.classes + 1)))
    space = build_space(model, SpaceSpec(precision=["fp32", "int8"],
                                         sparsity={"kind": "channel", "ratios": [0.0, args.ratio]},
                                         keep={"precision": {"fp32": ["last"]}}))
    offered = [g.name for g in space.groups if f"channel:{args.ratio:g}" in space.sparsity_choices[g.name]]
    prune = {g: {"kind": "channel", "ratio": args.ratio} for g in offered}
    int8 = {lay.name: "int8" for lay in space.layers if not lay.last}
    variants = {
        "fp32": CompressionConfig(),
        "int8 (all but the Detect outputs)": CompressionConfig(precision=int8),
        f"{args.ratio:.0%} channels cut, fp32": CompressionConfig(sparsity=prune),
        f"{args.ratio:.0%} channels cut + int8": CompressionConfig(sparsity=prune, precision=int8),
    }
    rng = np.random.default_rng(0)
    calib = rng.random((16, 3, args.size, args.size), dtype=np.float32)  # random: latency only
    work = Path(tempfile.mkdtemp(prefix="bench-yolo-"))
    arts = {k: compress(model, c, calib=calib, workdir=work, recovery=RecoverySpec(steps=0), space=space)
            for k, c in variants.items()}
    cpu = sorted(os.sched_getaffinity(0))[-1]
    lat = rotated_p50({k: (str(a.onnx_path), args.runtime) for k, a in arts.items()}, cpu, args.rounds, args.runs)
    base = lat["fp32"]
    print(f"\n{spec.weights or spec.name} at {args.size} px, {args.runtime}, 1 thread on core {cpu}; {machine()}")
    print(f"{len(space.layers)} layers, {len(space.groups)} groups, {len(offered)} offered at {args.ratio:g}\n")
    print(f"| variant | p50 ms (median of {args.rounds} rounds) | speed-up vs fp32 | ONNX bytes | params |")
    print("|---|---|---|---|---|")
    for k, art in arts.items():
        t = lat[k]
        print(f"| {k} | {t:.2f} | {base / t:.2f}x | {art.sizes['bytes']:,} | {art.sizes['params']:,} |")


if __name__ == "__main__":
    main()
