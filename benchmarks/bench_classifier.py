"""A classifier brought by ``python`` factory, side by side: fp32 / int8-uniform / 25% channels cut without
recovery / with the default recovery / with recovery + int8.

The same recipe as ``tests/compress/test_classifier_recovery.py``, with the numbers printed: an ImageFolder of
six shape classes (32 px) is written, ``tests/tiny_models.shape_cnn`` is trained from scratch on it in plain
torch (as its user would have), then each variant is compressed by edgetune (every offered group cut by the
ratio). top-1 is edgetune's scoring of the ONNX with onnxruntime on the val split (with its standard error);
latency is the p50 at 1 thread, each measurement in a fresh process pinned to one core, the variants
alternating over rounds (the median of the rounds is printed). "recovery s" is the fine-tuning time.

    nice -n 10 .venv/bin/python benchmarks/bench_classifier.py [--ratio 0.25] [--rounds 5] [--runs 300]
        [--train 300] [--val 100] [--steps 600]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from bench_compress import machine  # noqa: E402
from bench_front import rotated_p50  # noqa: E402

SIZE = 32


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ratio", type=float, default=0.25)
    ap.add_argument("--train", type=int, default=300, help="training images per class")
    ap.add_argument("--val", type=int, default=100, help="validation images per class")
    ap.add_argument("--steps", type=int, default=600, help="steps of the fp32 model's own training")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()

    import onnxruntime as ort
    from dataset_files import write_shape_folders
    from tiny_models import FACTORY, train_classifier

    from edgetune.compress import RecoverySpec, compress
    from edgetune.config import DataSpec, ModelSpec
    from edgetune.data import load_data
    from edgetune.device_agents import evaluate_bundle, make_bundle, read_bundle
    from edgetune.models import load_model
    from edgetune.spaces import CompressionConfig, SpaceSpec, build_space

    work = Path(tempfile.mkdtemp(prefix="bench-cls-"))
    write_shape_folders(work / "data", {"train": args.train, "val": args.val}, size=SIZE)
    splits = load_data(DataSpec(source="imagefolder", path=str(work / "data"), val_images=6 * args.val,
                                calib_images=32), need_train=True)
    spec = ModelSpec(source="python", factory=FACTORY, task="classify", input_size=SIZE)
    kw = {"class_names": splits.val.class_names, "category_ids": splits.val.category_ids}
    t0 = time.perf_counter()
    weights = train_classifier(load_model(spec, **kw), splits.train, work / "fp32.pt", steps=args.steps)
    train_s = time.perf_counter() - t0
    model = load_model(spec.model_copy(update={"weights": str(weights)}), **kw)
    space = build_space(model, SpaceSpec(precision=["fp32", "int8"],
                                         sparsity={"kind": "channel", "ratios": [0.0, args.ratio]}))
    choice = f"channel:{args.ratio:g}"
    cut = {g.name: {"ratio": args.ratio} for g in space.groups if choice in space.sparsity_choices[g.name]}
    int8 = {lay.name: "int8" for lay in space.layers}
    pct = f"{args.ratio:.0%} channels"
    variants = {
        "fp32": (CompressionConfig(), RecoverySpec(steps=0)),
        "int8-uniform": (CompressionConfig(precision=int8), RecoverySpec(steps=0)),
        f"{pct}, no recovery": (CompressionConfig(sparsity=cut), RecoverySpec(steps=0)),
        f"{pct} + default recovery": (CompressionConfig(sparsity=cut), RecoverySpec()),
        f"{pct} + default recovery + int8": (CompressionConfig(sparsity=cut, precision=int8), RecoverySpec()),
    }
    bundle = read_bundle(make_bundle(splits.val, model.head, size=SIZE).data)
    arts, scores, rec_s = {}, {}, {}
    for name, (config, rec) in variants.items():
        arts[name] = art = compress(model, config, calib=splits.calib, train=splits.train, workdir=work,
                                    recovery=rec, space=space)
        result = (art.manifest.get("recovery") or {}).get("result") or {}
        rec_s[name] = result.get("seconds", 0.0)
        sess = ort.InferenceSession(str(art.onnx_path), providers=["CPUExecutionProvider"])
        scores[name] = evaluate_bundle(lambda x, s=sess: s.run(None, {s.get_inputs()[0].name: x})[0], bundle)
    cpu = sorted(os.sched_getaffinity(0))[-1]
    lat = rotated_p50({k: (str(a.onnx_path), "ort") for k, a in arts.items()}, cpu, args.rounds, args.runs)
    base_t, base_top1 = lat["fp32"], scores["fp32"]["top1"]
    print(f"\n{FACTORY} at {SIZE} px, {len(splits.train)} train / {len(splits.val)} val images, fp32 trained in "
          f"{args.steps} steps ({train_s:.0f} s); ort, 1 thread on core {cpu}; {machine()}")
    print(f"{len(cut)} of {len(space.groups)} groups cut by {args.ratio:g}\n")
    print(f"| variant | top-1 (± SE) | vs fp32 top-1 | p50 ms (median of {args.rounds}) | speed-up | params "
          "| recovery s |")
    print("|---|---|---|---|---|---|---|")
    for k, art in arts.items():
        s, t = scores[k], lat[k]
        print(f"| {k} | {s['top1']:.3f} ± {s['top1_se']:.3f} | {s['top1'] / base_top1:.3f}x | {t:.3f} | "
              f"{base_t / t:.2f}x | {art.sizes['params']:,} | {rec_s[k]:.1f} |")
    keep = scores[f"{pct} + default recovery"]["top1"] / base_top1
    print(f"\n{pct} + the default recovery keeps {keep:.3f}x of the fp32 top-1 "
          f"({'meets' if keep >= 0.95 else 'misses'} the 0.95x bar).")


if __name__ == "__main__":
    main()
