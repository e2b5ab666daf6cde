"""Timed loops: model-only and end-to-end (letterbox + run + decode/NMS + unletterbox on real images).

``time_loop`` runs ``warmup`` untimed calls, then times calls with ``perf_counter_ns`` until both
``min_runs`` and ``min_seconds`` are reached (or ``max_runs``), with the garbage collector paused so a
collection does not land inside a sample.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Sequence

import numpy as np

from edgetune.data import letterbox, to_input, unletterbox
from edgetune.device_agents.protocol import LatencySpec
from edgetune.models.heads import ClassifyHead, DetectHead, decode_detections, topk

__all__ = ["time_loop", "time_interleaved", "end_to_end_step", "synthetic_images"]


def time_loop(fn: Callable[[], object], spec: LatencySpec) -> list[float]:
    """Latency samples in milliseconds of ``fn()`` under ``spec``."""
    for _ in range(spec.warmup):
        fn()
    clock = time.perf_counter_ns
    samples: list[float] = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        t_end = clock() + int(spec.min_seconds * 1e9)
        while len(samples) < spec.max_runs:
            t0 = clock()
            fn()
            t1 = clock()
            samples.append((t1 - t0) / 1e6)
            if len(samples) >= spec.min_runs and t1 >= t_end:
                break
    finally:
        if was_enabled:
            gc.enable()
    return samples


def time_interleaved(fns: dict[str, Callable[[], object]], *, runs: int, burst: int) -> dict[str, list[float]]:
    """Latency samples (ms) of several callables timed in turns: each turn gives every callable one untimed
    call (its weights back in cache) and then up to ``burst`` timed calls; the order rotates every turn.
    Ends when each has ``runs`` samples. The callers warm every callable up first."""
    names = list(fns)
    samples: dict[str, list[float]] = {n: [] for n in names}
    clock = time.perf_counter_ns
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        turn = 0
        while any(len(v) < runs for v in samples.values()):
            shift = turn % len(names)
            for name in names[shift:] + names[:shift]:
                left = runs - len(samples[name])
                if left <= 0:
                    continue
                fn = fns[name]
                fn()
                for _ in range(min(burst, left)):
                    t0 = clock()
                    fn()
                    samples[name].append((clock() - t0) / 1e6)
            turn += 1
    finally:
        if was_enabled:
            gc.enable()
    return samples


def synthetic_images(n: int = 4, *, width: int = 640, height: int = 480, seed: int = 0) -> list[np.ndarray]:
    """Seeded random HxWx3 uint8 images, for end-to-end timing when no dataset was uploaded."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(n)]


def end_to_end_step(run: Callable[[np.ndarray], np.ndarray], head: DetectHead | ClassifyHead, images: Sequence[np.ndarray],
                    *, size: int, batch: int, dtype: np.dtype) -> Callable[[], object]:
    """A closure doing one end-to-end inference of ``batch`` images (cycling through ``images``)."""
    state = {"i": 0}

    def step() -> object:
        i = state["i"]
        state["i"] = i + batch
        picked = [images[(i + k) % len(images)] for k in range(batch)]
        boxed = [letterbox(img, size) for img in picked]
        x = to_input(np.stack([b for b, _ in boxed]))
        out = run(x if x.dtype == dtype else x.astype(dtype))
        if isinstance(head, DetectHead):
            result = []
            for o, (_, meta) in zip(out, boxed, strict=True):
                boxes, scores, classes = decode_detections(o, head)
                result.append((unletterbox(boxes, meta), scores, classes))
            return result
        return topk(np.asarray(out, np.float32), 5)

    return step
