"""edgetune's front against what users run today, side by side on this machine.

After a sweep (``make demo``, or any sweep of a builtin detector), this times, in ONE run:

- ``ORT fp32``: the sweep's fp32 baseline on onnxruntime (the reference of every ratio),
- ``ORT int8-uniform``: every layer int8, what onnxruntime users do today,
- ``OpenVINO fp32`` (true fp32: ``INFERENCE_PRECISION_HINT=f32``) and ``OpenVINO int8-uniform`` (the same
  QDQ file read by OpenVINO),
- ``NNCF int8 (OpenVINO)``: the fp32 ONNX quantized by NNCF's post-training quantization (the OpenVINO
  user's path: ``nncf.quantize`` on the OpenVINO model, calibrated on the sweep's calibration images,
  preset PERFORMANCE), run by OpenVINO,
- for an Ultralytics model (the builtin ``yolo11n``, or ``source: ultralytics`` with a ``best.pt``): what a
  YOLO user runs today, made by Ultralytics' own exporter from the same weights: ``Ultralytics ONNX export
  (ORT)`` and ``Ultralytics int8 export (OpenVINO)`` (``export(format="openvino", int8=True)``, NNCF
  underneath, calibrated on the sweep's calibration images written as a YOLO dataset),
- edgetune's suggested front points (fastest within 1 mAP50-95 point of fp32, the knee, the smallest),
  each on the runtime and at the input size the sweep measured it with.

Latency: p50 of ``--runs`` single-image runs at 1 thread, each model in a FRESH process pinned to one
core, the models taking turns over ``--rounds`` rounds in rotated order (the median of the rounds is
printed), so drift hits every model alike. mAP50-95: edgetune's own scoring (the agent's bundle path) on
the sweep's validation images, letterboxed to each model's input size, through the model's runtime.

    .venv/bin/pip install -e ".[controller,bench]"      # openvino + nncf
    nice -n 10 .venv/bin/python benchmarks/bench_front.py configs/demo.yaml [--rounds 5] [--runs 200] [--cpu 1] [--trials 12 31]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_compress import machine  # noqa: E402

TIME_ONE = r"""
import json, os, sys, time, statistics
os.sched_setaffinity(0, {int(sys.argv[3])})
import numpy as np
from pathlib import Path
from edgetune.device_agents.runtimes import get_runtime
s = get_runtime(sys.argv[2]).load(Path(sys.argv[1]), threads=1)
x = np.ascontiguousarray(np.random.default_rng(0).random(s.shape_for(1), dtype=np.float32).astype(s.input_dtype))
for _ in range(20):
    s.run(x)
t = []
for _ in range(int(sys.argv[4])):
    t0 = time.perf_counter(); s.run(x); t.append((time.perf_counter() - t0) * 1e3)
print(json.dumps(statistics.median(t)))
"""


def p50(path: str, runtime: str, cpu: int, runs: int) -> float:
    out = subprocess.run([sys.executable, "-c", TIME_ONE, path, runtime, str(cpu), str(runs)], capture_output=True,
                         text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def rotated_p50(models: dict[str, tuple[str, str]], cpu: int, rounds: int, runs: int, on_round=None) -> dict[str, float]:
    """name -> (path, runtime): each model's p50 per round (fresh process each), the models taking turns in
    rotated order so that drift hits every one alike; the median over the rounds."""
    names = list(models)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names):] + names[: r % len(names)]:
            times[k].append(p50(models[k][0], models[k][1], cpu, runs))
        if on_round:
            on_round(r)
    return {k: statistics.median(v) for k, v in times.items()}


def nncf_int8(fp32_onnx: Path, calib, size: int, out_dir: Path) -> Path:
    """NNCF post-training int8 of the fp32 ONNX, as an OpenVINO user would do it (IR written to out_dir)."""
    import nncf
    import openvino as ov

    from edgetune.data import letterbox, to_input

    items = [to_input(letterbox(calib.load_image(i), size)[0][None]) for i in range(len(calib))]
    model = ov.Core().read_model(str(fp32_onnx))
    q = nncf.quantize(model, nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(items))
    path = out_dir / "nncf_int8.xml"
    ov.save_model(q, str(path))
    return path


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _is_ultralytics(spec) -> bool:
    from edgetune.models.sources import BUILTIN_MODELS

    return spec.source == "ultralytics" or (spec.source == "builtin" and
                                            BUILTIN_MODELS.get(spec.name, {}).get("family") == "ultralytics")


def ultralytics_exports(spec, calib, size: int, out_dir: Path) -> dict[str, Path]:
    """What a YOLO user runs today, made by Ultralytics' own exporter from the same weights: its ONNX export
    (run by onnxruntime) and ``export(format="openvino", int8=True)`` (NNCF underneath) calibrated on the same
    calibration images (written as a YOLO-format dataset). Offline: nothing is downloaded.

    An NMS-free model (YOLO26) is exported as it is deployed NMS-free: ``nms=False`` (Ultralytics' default,
    ``nms=None``, exports the one-to-many branch for an external NMS), its outputs the top ``max_det``
    detections ``(x1, y1, x2, y2, score, class)``; the returned ``layout`` says so (else None)."""
    import shutil

    from edgetune.models.ultralytics_yolo import build_from_yaml, import_ultralytics, is_end2end

    import_ultralytics()
    from ultralytics import YOLO

    nc = len(calib.class_names)
    if spec.source == "builtin":
        from edgetune.models.sources import BUILTIN_MODELS, builtin_weights_path, load_state_dict

        arch = BUILTIN_MODELS[spec.name]["arch"]
        det = build_from_yaml(arch, nc)
        load_state_dict(det, builtin_weights_path(spec.name), spec.name)
        yolo = YOLO(arch)
        det.args, det.task = yolo.model.args, "detect"
        yolo.model = det.float()
    elif spec.weights and not (spec.name or spec.path):
        yolo = YOLO(str(spec.weights))
    else:
        raise SystemExit("--ultralytics needs a builtin Ultralytics model or `model.weights` (a best.pt)")
    root = out_dir / "calib-yolo"
    cls_of = {c: k for k, c in enumerate(calib.category_ids)}
    for split in ("train", "val"):  # the same calibration images under both names (Ultralytics reads val)
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for rec in calib.records:
            shutil.copyfile(rec.file, root / "images" / split / Path(rec.file).name)
            lines = [f"{cls_of[a['category_id']]} {(a['bbox'][0] + a['bbox'][2] / 2) / rec.width:.6f} "
                     f"{(a['bbox'][1] + a['bbox'][3] / 2) / rec.height:.6f} {a['bbox'][2] / rec.width:.6f} "
                     f"{a['bbox'][3] / rec.height:.6f}" for a in calib.annotations[rec.id]]
            (root / "labels" / split / f"{Path(rec.file).stem}.txt").write_text("\n".join(lines) + "\n")
    names = "\n".join(f"  {k}: {n}" for k, n in enumerate(calib.class_names))
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    end2end = is_end2end(yolo.model)
    kw = {"nms": False} if end2end else {}
    cwd = os.getcwd()
    os.chdir(out_dir)  # the exporter writes beside the weights / in the working directory
    try:
        onnx_path = Path(yolo.export(format="onnx", imgsz=size, dynamic=False, simplify=_has("onnxslim"), batch=1,
                                     **kw))
        ov_dir = Path(yolo.export(format="openvino", imgsz=size, int8=True, data=str(root / "data.yaml"), batch=1,
                                  **kw))
    finally:
        os.chdir(cwd)
    onnx_path = onnx_path if onnx_path.is_absolute() else out_dir / onnx_path
    ov_dir = ov_dir if ov_dir.is_absolute() else out_dir / ov_dir
    return {"onnx": onnx_path, "openvino-int8": next(ov_dir.glob("*.xml")),
            "layout": "xyxy_score_class" if end2end else None}


ULTRA_INT8 = "Ultralytics int8 export (OpenVINO)"


def model_bytes(path: Path) -> int:
    """Bytes of a model file (an OpenVINO IR: the .xml and its .bin)."""
    return path.stat().st_size + (path.with_suffix(".bin").stat().st_size if path.suffix == ".xml" else 0)


def accuracy(path: str, runtime: str, val, head, size: int) -> float:
    import numpy as np

    from edgetune.device_agents.bundle import evaluate_bundle, make_bundle, read_bundle
    from edgetune.device_agents.runtimes import get_runtime

    bundle = read_bundle(make_bundle(val, head, size=size).data)
    s = get_runtime(runtime).load(Path(path), threads=1)
    return float(evaluate_bundle(lambda x: s.run(np.ascontiguousarray(x.astype(s.input_dtype))), bundle)["map50_95"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("config", type=Path, help="the sweep YAML (its storage and .edgetune/ artifacts are read)")
    ap.add_argument("--workdir", type=Path, default=Path(".edgetune"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)))
    ap.add_argument("--trials", type=int, nargs="*", default=[],
                    help="also time these trials (any state of the front: e.g. points a constraint left out)")
    args = ap.parse_args()

    from edgetune.data import load_data
    from edgetune.models.heads import head_from_dict
    from edgetune.search.front import suggestions
    from edgetune.search.wiring import load_front

    df, keys, goals, cfg = load_front(args.config)
    done = df[df["state"] == "COMPLETE"]

    def artifact(row) -> Path:
        p = args.workdir / "artifacts" / str(row["artifact"]) / "model.onnx"
        if not p.is_file():
            sys.exit(f"trial {row['trial']}: {p} is missing; run this from the directory the sweep ran in "
                     "(or pass --workdir).")
        return p

    def size_of(path: Path) -> int:
        return int(json.loads((path.parent / "manifest.json").read_text())["input"]["shape"][-1])

    base = {b: done[done["baseline"] == b].iloc[0] for b in ("fp32", "int8-uniform", "int8-uniform@openvino")
            if (done["baseline"] == b).any()}
    if "fp32" not in base:
        sys.exit("the sweep has no completed fp32 baseline")
    fp32 = artifact(base["fp32"])
    own = size_of(fp32)
    splits = load_data(cfg.data)
    head = head_from_dict(json.loads((fp32.parent / "manifest.json").read_text())["head"])

    models: list[tuple[str, str, str, int]] = [("ORT fp32", str(fp32), "ort", own)]
    if "int8-uniform" in base:
        int8 = artifact(base["int8-uniform"])
        models.append(("ORT int8-uniform", str(int8), "ort", own))
    models.append(("OpenVINO fp32", str(fp32), "openvino", own))
    if "int8-uniform" in base:  # int8 placed for OpenVINO when the sweep measured that baseline
        ov8 = artifact(base["int8-uniform@openvino"]) if "int8-uniform@openvino" in base else int8
        models.append(("OpenVINO int8-uniform", str(ov8), "openvino", own))
    heads = {}  # model -> its own DetectHead where it differs from the sweep's
    tmp = Path(tempfile.mkdtemp(prefix="bench-front-"))
    print(f"quantizing the fp32 model with NNCF on {len(splits.calib)} calibration images ...", flush=True)
    models.append(("NNCF int8 (OpenVINO)", str(nncf_int8(fp32, splits.calib, own, tmp)), "openvino", own))
    if _is_ultralytics(cfg.model):
        print("exporting with Ultralytics' own exporter (ONNX; OpenVINO int8 calibrated on the same images) ...",
              flush=True)
        ux = ultralytics_exports(cfg.model, splits.calib, own, tmp)
        models.append(("Ultralytics ONNX export (ORT)", str(ux["onnx"]), "ort", own))
        models.append((ULTRA_INT8, str(ux["openvino-int8"]), "openvino", own))
        if ux["layout"]:  # NMS-free export: Ultralytics' own output layout
            heads.update(dict.fromkeys(("Ultralytics ONNX export (ORT)", ULTRA_INT8),
                                       dataclasses.replace(head, layout=ux["layout"])))
    seen = set()
    for s in suggestions(df, keys, goals):
        row = done[done["trial"] == s["trial"]].iloc[0]
        runtime = row.get("runtime") if isinstance(row.get("runtime"), str) else "ort"
        key = (int(row["trial"]), runtime)
        if key in seen:
            continue
        seen.add(key)
        path = artifact(row)
        models.append((f"edgetune {s['kind']} #{int(row['trial'])}: {row['label']}", str(path), runtime, size_of(path)))

    for number in args.trials:
        row = done[done["trial"] == number]
        if row.empty:
            sys.exit(f"trial {number} is not a completed trial of this sweep")
        row = row.iloc[0]
        runtime = row.get("runtime") if isinstance(row.get("runtime"), str) else "ort"
        if (number, runtime) not in seen:
            seen.add((number, runtime))
            path = artifact(row)
            models.append((f"edgetune trial #{number}: {row['label']}", str(path), runtime, size_of(path)))

    print(machine())
    print(f"sweep '{cfg.name}': {len(done)} complete trials; {len(splits.val)} val images; {args.rounds} rounds x "
          f"{args.runs} runs per model, fresh process each, cpu {args.cpu}", flush=True)
    maps = {name: accuracy(path, rt, splits.val, heads.get(name, head), size) for name, path, rt, size in models}
    lat = rotated_p50({name: (path, rt) for name, path, rt, _ in models}, args.cpu, args.rounds, args.runs,
                      on_round=lambda r: print(f"round {r + 1}/{args.rounds} done", flush=True))
    refs = [k for k in ("ORT fp32", "ORT int8-uniform", "NNCF int8 (OpenVINO)", ULTRA_INT8) if k in lat]
    short = {"ORT fp32": "ORT fp32", "ORT int8-uniform": "ORT int8", "NNCF int8 (OpenVINO)": "NNCF int8",
             ULTRA_INT8: "Ultralytics int8"}
    files = {name: model_bytes(Path(path)) for name, path, _, _ in models}
    print()
    print("| model | runtime | input | mAP50-95 | p50 ms | size KiB | " + " | ".join(f"vs {short[k]}" for k in refs) + " |")
    print("|---|---|---|---|---|---|" + "---|" * len(refs))
    for name, _, rt, size in models:
        ratios = [f"{lat[k] / lat[name]:.2f}x" for k in refs]
        print(f"| {name} | {rt} | {size} | {maps[name]:.4f} | {lat[name]:.2f} | {files[name] / 1024:.0f} | "
              + " | ".join(ratios) + " |")
    fp32_map = maps["ORT fp32"]
    close = [n for n, *_ in models if n.startswith("edgetune") and maps[n] >= fp32_map - 0.01]
    if close:
        best = min(close, key=lambda n: lat[n])
        print(f"\nfastest edgetune point within 1 mAP50-95 point of fp32: {best}: "
              + ", ".join(f"{lat[k] / lat[best]:.2f}x vs {short[k]}" for k in refs)
              + f"; {files['ORT fp32'] / files[best]:.2f}x smaller than the fp32 ONNX")
    else:
        print("\nno edgetune suggestion within 1 mAP50-95 point of fp32")


if __name__ == "__main__":
    main()
