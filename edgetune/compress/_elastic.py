"""Train once, cut many (``recovery.mode: elastic``): one elastic fine-tune per sweep, then any config's
channel widths (and input size) are cut from it with a BatchNorm re-estimation only.

1. Every group the space may prune gets a channel order: its channels scored once by the sweep's
   importance criterion (taylor by default) on the uncompressed model, most important first.
2. The elastic fine-tune (``recovery.steps`` steps of the usual recovery loop, distillation from the
   uncompressed model included) masks, at every step, the tail of each group's order at a width drawn
   from that group's offered widths: all groups full every 4th step, all at their narrowest the next,
   independent random widths otherwise (the "sandwich rule" of slimmable / once-for-all networks). When
   the space searches ``input_size``, the steps take each size in turn. Masks act after each BatchNorm of
   the group (as the progressive cut's fading does), so a masked channel contributes exactly nothing.
3. A config keeps the first ``k`` channels of each group's order: they are cut out for real
   (Torch-Pruning), then the BatchNorm statistics are re-estimated at the config's input size on
   training images (they were collected over mixed widths). No gradient step per trial.

The elastic weights and the orders are cached in ``<workdir>/elastic/<key>`` under the hash of
everything that changes them (source weights, offered widths, sizes, importance, recovery settings,
train split, task adapter). A key not there is looked up among the entries shipped with the package
(:data:`SHIPPED`: the demo's, ``configs/demo.yaml`` on the builtin det-s, so that a fresh machine's
``make demo`` does not spend 3.4 min training them; ``tests/compress/test_elastic.py`` checks that the
demo config still asks for that key, and docs/models.md has the command that trains it again).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from edgetune._logging import get_logger
from edgetune.errors import CompressionError

log = get_logger(__name__)

__all__ = ["WidthMasks", "channel_orders", "elastic_choices", "elastic_key", "ensure_elastic", "cut_elastic"]

BN_BATCHES, BN_BATCH = 16, 16  # BatchNorm re-estimation after an elastic cut: 256 training images


def elastic_choices(groups, space, config, round_to: int) -> dict[str, list[int]]:
    """group -> the channel counts it may keep (ascending, its full width last): the widths the space
    offers for it, else (no space) the config's own."""
    from edgetune.spaces import Sparsity, kept_channels

    by_name = {g.name: g for g in groups}
    out: dict[str, list[int]] = {}
    if space is not None:
        items = [(n, [Sparsity.parse(c) for c in choices]) for n, choices in space.sparsity_choices.items()]
    else:
        items = [(n, [sp]) for n, sp in config.sparsity.items()]
    for name, sps in items:
        g = by_name.get(name)
        if g is None:
            continue
        keeps = {kept_channels(g.channels, sp.ratio, round_to) for sp in sps if sp.kind == "channel" and sp.active}
        keeps.discard(g.channels)
        if keeps:
            out[name] = sorted(keeps) + [g.channels]
    return out


def elastic_key(*, source_hash: str, choices: dict, sizes: tuple[int, ...], importance: str, recovery, train_id,
                adapter) -> str:
    ident = {"v": 1, "source": source_hash, "choices": dict(sorted(choices.items())), "sizes": list(sizes),
             "importance": importance, "recovery": recovery.identity(), "train": train_id, "task": adapter}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def channel_orders(module, dg, names, importance) -> dict[str, list[int]]:
    """group -> its channel indices, most important first (ties: lower index first)."""
    import torch

    from edgetune.compress._prune import _out_group, _width
    from edgetune.spaces import layer_modules

    mods = layer_modules(module)
    orders = {}
    for name in names:
        n = _width(mods[name])
        with torch.no_grad():
            scores = importance(_out_group(dg, mods[name], list(range(n))))
        if scores is None or len(scores) != n:
            raise CompressionError(f"group {name!r}: the importance criterion gave no score per channel; try "
                                   "importance: magnitude.")
        orders[name] = sorted(range(n), key=lambda i: (-float(scores[i]), i))
    return orders


class WidthMasks:
    """Forward hooks that zero, per group, the channels past its current width in its order (after every
    BatchNorm of the group; after the group's convs where it has none)."""

    def __init__(self, module, dg, orders: dict[str, list[int]]):
        import torch
        from torch import nn

        from edgetune.compress._prune import _out_group, _width
        from edgetune.spaces import layer_modules

        mods = layer_modules(module)
        self._handles, self._groups = [], {}
        for name, order in orders.items():
            n = _width(mods[name])
            items = [(dep.target.module, [int(getattr(i, "idx", i)) for i in idxs], getattr(dep.handler, "__name__", ""))
                     for dep, idxs in _out_group(dg, mods[name], list(range(n)))]
            bns = [(t, ix) for t, ix, _ in items if isinstance(t, nn.modules.batchnorm._BatchNorm)]
            outs = bns or [(t, ix) for t, ix, h in items if isinstance(t, (nn.Conv2d, nn.Linear)) and "out" in h]
            targets = []
            for target, ix in outs:
                width = target.num_features if hasattr(target, "num_features") else _width(target)
                scale = torch.ones(width)
                ranked = torch.as_tensor([ix[j] for j in order], dtype=torch.long)  # module channels, best first
                targets.append((scale, ranked))
                self._handles.append(target.register_forward_hook(self._hook(scale)))
            self._groups[name] = targets

    @staticmethod
    def _hook(scale):
        def hook(mod, inputs, out):
            return out * scale.to(out.dtype).view((1, -1) + (1,) * (out.dim() - 2))

        return hook

    def set(self, keep: dict[str, int]) -> None:
        """Keep the first ``keep[group]`` channels of each group's order (groups not named: all)."""
        for name, targets in self._groups.items():
            for scale, ranked in targets:
                scale.fill_(1.0)
                k = keep.get(name)
                if k is not None:
                    scale[ranked[k:]] = 0.0

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def _sampler(choices: dict[str, list[int]], seed: int):
    rng = np.random.default_rng(seed)

    def widths(step: int) -> dict[str, int]:
        if step % 4 == 0:
            return {}  # full width
        if step % 4 == 1:
            return {g: c[0] for g, c in choices.items()}  # narrowest
        return {g: int(c[rng.integers(len(c))]) for g, c in choices.items()}

    return widths


SHIPPED = Path(__file__).resolve().parent.parent / "models" / "weights" / "elastic"


def _dir(workdir: Path, key: str) -> Path:
    return Path(workdir) / "elastic" / key


def ensure_elastic(student, teacher, dg, *, choices, sizes, importance, imp, train, recovery, adapter, workdir,
                   key: str, timings: dict, gradients=None) -> tuple[dict[str, list[int]], dict | None]:
    """Load the elastic weights into ``student`` (the uncompressed structure) from the cache, or train them
    (and cache them); returns (the channel orders, the elastic fine-tune's result: ``recover``'s dict, with
    ``stopped: budget_s`` when ``recovery.budget_s`` cut it short; None for an entry cached without it).
    ``gradients()`` leaves in ``.grad`` what the importance criterion needs (taylor), before the channels
    are scored."""
    import io

    import torch

    from edgetune._paths import atomic_write_bytes
    from edgetune.compress._recover import recover

    d = _dir(workdir, key)
    for where, entry in (("workdir", d), ("shipped", SHIPPED / key)):
        if not (entry / "elastic.json").is_file():
            continue
        try:
            meta = json.loads((entry / "elastic.json").read_text())
            student.load_state_dict(torch.load(entry / "weights.pt", map_location="cpu", weights_only=True))
            timings["elastic_from_cache"] = True if where == "workdir" else where
            log.info("elastic weights %s served from the %s", key[:12],
                     "cache" if where == "workdir" else "package (shipped with the builtin model)")
            rec = meta.get("recovery")
            if (rec or {}).get("stopped") == "budget_s":  # every config cut from them inherits the cut
                log.warning("the cached elastic weights %s were trained %d of %d steps (cut by `recovery.budget_s`)",
                            key[:12], rec.get("steps", 0), rec.get("steps_asked", 0))
            return {k: list(v) for k, v in meta["orders"].items()}, rec
        except Exception as exc:  # a torn entry: train again
            log.warning("elastic cache entry %s is unreadable (%s); training it again", key[:12], exc)
    t = time.time()
    if gradients is not None and choices:
        gradients()
    orders = channel_orders(student, dg, list(choices), imp)
    student.zero_grad(set_to_none=True)
    masks = WidthMasks(student, dg, orders)
    widths = _sampler(choices, recovery.seed)
    masks.set(widths(0))
    try:
        rec = recover(student, teacher, train, recovery, adapter=adapter, input_size=sizes[0], sizes=sizes,
                      on_step=lambda step, _loss: masks.set(widths(step)))
    finally:
        masks.remove()
    student.zero_grad(set_to_none=True)
    meta = {"orders": orders, "choices": choices, "sizes": list(sizes), "importance": importance, "recovery": rec,
            "seconds": round(time.time() - t, 2)}
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(student.state_dict(), buf)
    atomic_write_bytes(d / "weights.pt", buf.getvalue())
    atomic_write_bytes(d / "elastic.json", json.dumps(meta, sort_keys=True).encode())  # last: marks it complete
    timings["elastic_train"] = meta["seconds"]
    log.info("elastic fine-tune %s: %d steps over %d group(s) at %s px in %.0fs", key[:12], rec["steps"], len(choices),
             ",".join(map(str, sizes)), meta["seconds"])
    return orders, rec


def cut_elastic(student, dg, orders: dict[str, list[int]], keep: dict[str, int], *, adapter, train, size: int):
    """Cut each group to the first ``keep[group]`` channels of its order, then re-estimate BatchNorm at
    ``size``; returns ``cut_channels``' record (group -> (before, after, kept indices))."""
    from edgetune.compress._prune import cut_channels, recalibrate_bn

    drops = {g: sorted(orders[g][k:]) for g, k in keep.items() if k < len(orders[g])}
    changed = cut_channels(student, dg, drops) if drops else {}
    if train is not None and len(train):
        arrays = adapter.prepare(train, size=size, limit=BN_BATCHES * BN_BATCH)
        rng = np.random.default_rng(1)
        recalibrate_bn(student, (adapter.sample(arrays, rng, BN_BATCH, None)[0] for _ in range(BN_BATCHES)))
    return changed
