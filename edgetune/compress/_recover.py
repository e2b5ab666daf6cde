"""Recovery: fine-tune a pruned model with knowledge distillation from the uncompressed one.

Everything task-specific comes through the model's task adapter (``edgetune.models.TaskAdapter``): each
step takes an augmented batch of the train split (``adapter.sample``), the model's own supervised loss
when its source provides one (``adapter.has_loss``: the builtin and Ultralytics detectors, classifiers)
plus the distillation loss towards the teacher's outputs (``adapter.distill``); a model without a
supervised loss (a detector by ``python`` factory with the Ultralytics layout) is distilled alone. The budget is in optimizer steps
(reproducible: the same steps run however busy the machine is); ``budget_s``, when set, only guards against a
runaway: when it ends the fine-tuning before its steps, a warning says so and the result says
``stopped: budget_s`` (the trial record and MLflow carry it as ``recovery_cut``). Pruning masks stay
attached, so pruned weights stay zero.
"""

from __future__ import annotations

import math
import time

import numpy as np

from edgetune._logging import get_logger
from edgetune.compress._spec import RecoverySpec
from edgetune.errors import CompressionError

log = get_logger(__name__)

__all__ = ["recover"]


def _feature_hooks(student, teacher, features: dict):
    """Capture the inputs of ``features``' layers in both models; returns (loss_fn, handles)."""
    import torch

    from edgetune.spaces import layer_modules

    s_mods, t_mods = layer_modules(student), layer_modules(teacher)
    got: dict = {}
    handles = []
    for name in features:
        handles.append(s_mods[name].register_forward_pre_hook(lambda m, i, n=name: got.__setitem__(("s", n), i[0])))
        handles.append(t_mods[name].register_forward_pre_hook(lambda m, i, n=name: got.__setitem__(("t", n), i[0])))

    def loss():
        total = 0.0
        for name, idx in features.items():
            s, t = got[("s", name)].float(), got[("t", name)].detach().float()
            if idx is not None:
                t = t[:, torch.as_tensor(idx)]
            total = total + ((s - t) ** 2).mean() / (t.pow(2).mean() + 1e-6)
        return total / max(1, len(features))

    return loss, handles


def recover(student, teacher, train, spec: RecoverySpec, *, adapter, input_size: int, features: dict | None = None,
            on_step=None, start: int = 0, stop: int | None = None, sizes: tuple[int, ...] = ()) -> dict:
    """Fine-tune ``student`` in place; returns {steps, steps_asked, stopped, seconds, loss}. ``teacher`` is
    not modified. ``stopped`` says why it ended: ``"steps"`` (the schedule ran out) or ``"budget_s"`` (the
    wall-clock cap ended it early, with ``steps < steps_asked``).

    ``start`` / ``stop``: run only steps [start, stop) of the ``spec.steps`` schedule (a progressive cut
    fine-tunes in two calls, before and after the channels are removed).

    ``adapter``: the model's task adapter (batches, training forward, losses).

    ``features``: layer name -> indices of the teacher's channels that the student's input channels of
    that layer correspond to (None: all), for feature distillation (``spec.feature_weight``).

    ``sizes``: train at several input sizes, one per step in turn (elastic training for a space that
    searches ``input_size``); empty: ``input_size`` only."""
    import torch

    from edgetune.models import ModelEMA, float_outputs, native_bf16

    if train is None or len(train) == 0:
        raise CompressionError("recovery needs the train split, but there is none: set `data.train_size` (builtin) "
                               "or `data.train_annotations` (COCO), or disable recovery with `recovery.steps: 0`.")
    if getattr(train, "task", adapter.kind) != adapter.kind:
        raise CompressionError(f"the train split is a {train.task} dataset, but the model is a {adapter.kind} model: "
                               "give `data:` of the model's task.")
    supervised = adapter.has_loss
    if not supervised and not spec.distill:
        raise CompressionError(f"this {adapter.kind} model offers no supervised loss, so recovery can only distill "
                               "the uncompressed model: set `recovery.distill: true` or `recovery.steps: 0`.")
    t0 = time.time()
    stop = spec.steps if stop is None else min(stop, spec.steps)
    torch.manual_seed(spec.seed + start)
    rng = np.random.default_rng(spec.seed + start)
    sizes = tuple(dict.fromkeys(sizes or (input_size,)))
    data = {s: adapter.prepare(train, size=s, limit=spec.train_images) for s in sizes}
    crops = {s: max(32, int(round(s * spec.crop / 32)) * 32) if s >= 128 and spec.crop < 1 else None for s in sizes}
    full_from = int(spec.steps * 0.85)
    decay, no_decay = [], []
    for name, p in student.named_parameters():
        (decay if p.ndim >= 2 and "bn" not in name else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=spec.lr, betas=(0.9, 0.99))
    warmup = max(1, min(30, spec.steps // 10))
    teacher.eval()
    student.train()
    ema = ModelEMA(student, spec.ema, tau=max(1.0, spec.steps / 8)) if spec.ema else None
    feat_loss, handles = _feature_hooks(student, teacher, features) if (features and spec.feature_weight and
                                                                        spec.distill) else (None, [])
    use_bf16 = spec.bf16 == "on" or (spec.bf16 == "auto" and native_bf16())
    running, step, stopped = None, start, "steps"
    t_steps = time.time()  # the cap counts training steps, not the one-off data preparation above
    for step in range(start, stop):
        if spec.budget_s and time.time() - t_steps > spec.budget_s:
            log.warning("recovery CUT SHORT by `recovery.budget_s` = %g s: %d of %d steps ran, so this model is "
                        "less recovered than the config asks (and than on a quieter machine). Raise or remove "
                        "`recovery.budget_s` to run every step.", spec.budget_s, step - start, stop - start)
            stopped = "budget_s"
            break
        t = 1.0 if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, spec.steps - warmup)))
        for g in opt.param_groups:
            g["lr"] = spec.lr * (step + 1) / warmup if step < warmup else spec.lr * (0.05 + 0.95 * t)
            if start:  # a fresh optimizer mid-schedule: re-warm it over 10 steps
                g["lr"] *= min(1.0, (step - start + 1) / 10)
        size = sizes[step % len(sizes)]
        batch = adapter.sample(data[size], rng, spec.batch, None if step >= full_from else crops[size])
        t_out = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            out = adapter.forward(student, batch[0])
            if spec.distill:
                with torch.no_grad():
                    t_out = adapter.forward(teacher, batch[0])
        out, t_out = float_outputs(out), float_outputs(t_out)
        if supervised:
            loss = spec.gt_weight * adapter.loss(out, batch)
            if spec.distill and spec.distill_weight:
                loss = loss + spec.distill_weight * adapter.distill(out, t_out, batch)
        else:
            loss = spec.distill_weight * adapter.distill(out, t_out, batch)
        if feat_loss is not None:
            loss = loss + spec.feature_weight * feat_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 10.0)
        opt.step()
        if ema is not None:
            ema.update(student)
        value = loss.item()
        running = value if running is None else 0.95 * running + 0.05 * value
        if on_step:
            on_step(step + 1, running)
        if (step + 1) % 50 == 0:
            log.info("recovery step %d/%d loss %.4f (%.0fs)", step + 1, spec.steps, running, time.time() - t0)
    else:
        step = stop
    for h in handles:
        h.remove()
    if ema is not None:
        student.load_state_dict(ema.ema.state_dict())
    student.eval()
    return {"steps": step - start, "steps_asked": stop - start, "stopped": stopped,
            "seconds": round(time.time() - t0, 2), "loss": running}
