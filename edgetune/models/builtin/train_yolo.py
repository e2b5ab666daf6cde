"""Training of an Ultralytics YOLO detector (YOLO11n, YOLO26n, ...) from its yaml on the builtin shapes data:
the ``yolo11n`` and ``yolo26n`` builtin models. CPU, reproducible, resumable.

Ultralytics' own trainer does not start beside a CPU torch build without torchvision, so this is a small
loop of edgetune's with Ultralytics' own loss (:class:`~edgetune.models.ultralytics_yolo.UltralyticsDetectAdapter`,
``v8DetectionLoss`` with its default gains; for an end-to-end head as YOLO26's, both branches with E2ELoss's
weighting, the one-to-many share decayed from 0.8 to 0.1 over the steps), AdamW with warmup and cosine decay, weight EMA (Ultralytics'
ramped decay), flips, photometric jitter and multi-scale batches (each batch resized to one of
``cfg.scales``; the last ``full_size_frac`` of the steps at ``cfg.size`` only), so that the model keeps its
accuracy at the smaller input sizes a sweep searches. bf16 autocast where the CPU has native bf16
(``bf16: auto``). The budget is in steps, not seconds: the same command gives the same weights on any
machine (up to float non-associativity across thread counts and bf16 support).

A checkpoint (model, EMA, optimizer, RNG states, step) is written every ``ckpt_every`` steps beside the output
(``<out>.ckpt``, temp file + rename); running the same command again resumes from it. A checkpoint written
with another recipe is refused, never mixed in.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from edgetune._logging import get_logger
from edgetune.errors import ModelError

log = get_logger(__name__)

__all__ = ["YoloTrainConfig", "train_yolo"]


@dataclass(frozen=True)
class YoloTrainConfig:
    arch: str = "yolo11n.yaml"
    steps: int = 8000
    batch: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 300
    size: int = 256
    scales: tuple[int, ...] = (192, 224, 256, 288)
    full_size_frac: float = 0.1
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0
    train_size: int = 8000
    seed: int = 0
    bf16: str = "auto"
    gains: dict = field(default_factory=lambda: {"box": 7.5, "cls": 0.5, "dfl": 1.5})

    def recipe(self) -> dict:
        """What decides the weights (the checkpoint must match it to be resumed)."""
        return {k: v for k, v in asdict(self).items() if k != "bf16"}


def _resize_batch(x: torch.Tensor, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape[-1] == size:
        return x, boxes
    s = size / x.shape[-1]
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=s < 1), boxes * s


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_yolo(cfg: YoloTrainConfig, *, out: Path, ckpt_every: int = 200, threads: int = 2,
               evaluate: Callable[[torch.nn.Module], dict] | None = None, eval_every: int = 0,
               on_step: Callable[[int, float], None] | None = None):
    """Train ``cfg.arch`` on the builtin shapes train split; returns the EMA ``DetectionModel`` (eval mode).

    Resumes from ``<out>.ckpt`` when it exists and was written with the same recipe."""
    from edgetune.data.shapes import CLASSES, shapes_split
    from edgetune.models.builtin.train import optimizer_step
    from edgetune.models.tasks import (
        ModelEMA,
        detection_arrays,
        float_outputs,
        native_bf16,
        sample_detection_batch,
    )
    from edgetune.models.ultralytics_yolo import (
        UltralyticsDetectAdapter,
        build_from_yaml,
        is_end2end,
        wrap_detection_model,
    )

    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_from_yaml(cfg.arch, len(CLASSES), seed=cfg.seed)
    module = wrap_detection_model(model)
    adapter = UltralyticsDetectAdapter(cfg.gains, end2end=is_end2end(model))
    adapter.both_branches = adapter.end2end  # YOLO26: both heads, as Ultralytics trains them
    decay, no_decay = [], []
    for p in model.parameters():
        p.requires_grad_(True)
        (decay if p.ndim >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.999))
    ema = ModelEMA(model, cfg.ema_decay, tau=cfg.ema_tau)
    ckpt, start = Path(str(out) + ".ckpt"), 0
    if ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        if state.get("recipe") != cfg.recipe():
            raise ModelError(f"checkpoint '{ckpt}' was written with another recipe ({state.get('recipe')}); "
                             f"delete it to start over, or train with that recipe to resume it.")
        model.load_state_dict(state["model"])
        ema.ema.load_state_dict(state["ema"])
        ema.updates = state["ema_updates"]
        opt.load_state_dict(state["opt"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        start = state["step"]
        log.info("resuming %s from step %d (%s)", cfg.arch, start, ckpt)
    train = shapes_split("train", cfg.train_size, seed=cfg.seed)
    images, boxes, classes = detection_arrays(train, size=cfg.size, limit=0)
    use_bf16 = cfg.bf16 == "on" or (cfg.bf16 == "auto" and native_bf16())
    full_from = int(cfg.steps * (1 - cfg.full_size_frac))

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))

    model.train()
    t0, running = time.time(), None
    for step in range(start, cfg.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        size = cfg.size if step >= full_from else int(cfg.scales[int(rng.integers(len(cfg.scales)))])
        x, gb, gl, gm = sample_detection_batch(rng, images, boxes, classes, cfg.batch, None)
        x, gb = _resize_batch(x, gb, size)
        adapter.o2m = 0.8 - 0.7 * step / max(1, cfg.steps - 1)  # end-to-end heads: E2ELoss's decay, per step
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            out = adapter.forward(module, x)
        running = optimizer_step(model, opt, ema, adapter.loss(float_outputs(out), (x, gb, gl, gm)), running)
        if on_step:
            on_step(step + 1, running)
        if (step + 1) % 50 == 0:
            log.info("step %d/%d loss %.4f lr %.2e %.0fs", step + 1, cfg.steps, running, lr_at(step), time.time() - t0)
        if (step + 1) % ckpt_every == 0 or step + 1 == cfg.steps:
            _save(ckpt, {"recipe": cfg.recipe(), "model": model.state_dict(), "ema": ema.ema.state_dict(),
                         "ema_updates": ema.updates, "opt": opt.state_dict(), "rng": rng.bit_generator.state,
                         "torch_rng": torch.get_rng_state(), "step": step + 1})
        if evaluate and eval_every and (step + 1) % eval_every == 0 and step + 1 < cfg.steps:
            log.info("step %d eval: %s", step + 1, evaluate(ema.ema))
            model.train()
    return ema.ema.eval()
