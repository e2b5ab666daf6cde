"""``edgetune eval``: one model on one dataset, the row users know from ``yolo benchmark``."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from edgetune.data import load_data

__all__ = ["evaluate_model", "ort_session", "time_session"]


def ort_session(path: Path, *, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def time_session(sess, *, input_size: int, warmup: int = 20, runs: int = 200) -> list[float]:
    """Model-only latency samples in ms of one input (1x3xSxS)."""
    x = np.random.default_rng(0).random((1, 3, input_size, input_size), dtype=np.float32)
    name = sess.get_inputs()[0].name
    for _ in range(warmup):
        sess.run(None, {name: x})
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        samples.append((time.perf_counter() - t) * 1e3)
    return samples


def evaluate_model(mspec, dspec, *, runs: int = 200) -> dict:
    """Export (parity-checked), then mAP / params / GFLOPs / size / 1-thread latency through onnxruntime."""
    with tempfile.TemporaryDirectory(prefix="edgetune-eval-") as tmp:
        return _evaluate(mspec, dspec, runs=runs, tmp=Path(tmp))


def _evaluate(mspec, dspec, *, runs: int, tmp: Path) -> dict:
    import onnxruntime as ort

    from edgetune.models import evaluate, load_model

    splits = load_data(dspec)
    val = splits.val
    loaded = load_model(mspec, class_names=val.class_names, category_ids=val.category_ids)
    params = gflops = None
    diff = float("nan")
    if loaded.module is not None:
        import torch
        import torch_pruning as tp

        from edgetune.compress.export import cached_export

        onnx_path = tmp / "model.onnx"
        diff = cached_export(loaded.module, onnx_path, input_size=loaded.input_size).max_abs_diff
        macs, n_params = tp.utils.count_ops_and_params(
            loaded.module, torch.zeros(1, 3, loaded.input_size, loaded.input_size))
        params, gflops = int(n_params), 2 * float(macs) / 1e9
    else:
        onnx_path = loaded.onnx_path
    sess = ort_session(onnx_path, threads=1)
    name = sess.get_inputs()[0].name
    metrics = evaluate(lambda x: np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))]),
                       val, loaded.head, size=loaded.input_size)
    samples = time_session(sess, input_size=loaded.input_size, runs=runs)
    q = statistics.quantiles(samples, n=10)
    return {
        "model": loaded.name, "data": f"{dspec.source}:{dspec.name or dspec.path}", "val_images": len(val),
        **{k: round(v, 6) for k, v in metrics.items()},
        "params": params, "gflops": gflops, "onnx_bytes": onnx_path.stat().st_size,
        "latency_p50_ms": statistics.median(samples), "latency_p90_ms": q[8], "latency_n": len(samples),
        "threads": 1, "runtime": "onnxruntime", "runtime_version": ort.__version__,
        "export_max_abs_diff": diff, "source_sha256": loaded.source_hash,
    }
