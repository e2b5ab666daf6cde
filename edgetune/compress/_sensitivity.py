"""Sensitivity: what cutting one search dimension's channels costs before any fine-tuning.

For every sparsity dimension of a space (one Ultralytics block with ``tie: stage``) and each channel
ratio it offers, the channels the sweep's importance would remove are cut for real (Torch-Pruning),
BatchNorm is re-estimated on train batches, and the model is scored in torch on a validation subset;
everything else stays dense. The drop is taken from the uncut model with its BatchNorm re-estimated the
same way (re-estimation alone moved YOLO11n by 0.4 points), so it is the cut's own cost; it says where
pruning is cheap:
``edgetune space --sensitivity`` reports it with the share of the model's MACs each cut removes, and
``space.sparsity.max_drop`` removes the ratios that cost more than that from the space
(:func:`restrict_space`). It ranks cuts; it does not predict what a cut scores after recovery.

Results are cached under ``<workdir>/sensitivity/<key>.json`` (key: weights, data, images, importance,
the space's sparsity choices), so a sweep, its resume and ``edgetune space`` measure once.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune._logging import get_logger
from edgetune.errors import CompressionError
from edgetune.spaces import Sparsity

log = get_logger(__name__)

__all__ = ["Cut", "Sensitivity", "measure_sensitivity", "restrict_space", "SENSITIVITY_VERSION"]

SENSITIVITY_VERSION = 3  # bump when the same inputs measure differently
BN_BATCHES, BN_BATCH = 8, 16  # BatchNorm re-estimation after each cut (as compress does after a cut)


@dataclass(frozen=True)
class Cut:
    """One dimension cut at one ratio: its channels before / after, the share of the model's MACs it
    removes, the validation metric after BatchNorm re-estimation and its drop from the uncut model. For the
    ``scales`` dimension (a detector's output scales kept), ``choice`` is the strides kept and ``channels`` /
    ``kept`` count output scales."""

    dimension: str
    ratio: float
    channels: int
    kept: int
    macs_removed: float
    metric: float
    drop: float
    choice: str = ""  # the dimension's choice (``channel:0.25``; ``8`` for the output scales kept)


@dataclass(frozen=True)
class Sensitivity:
    metric_name: str
    baseline: float  # the uncut model, BatchNorm re-estimated like every cut, on the same images
    uncut: float  # the uncut model as loaded
    images: int
    importance: str
    cuts: tuple[Cut, ...]
    seconds: float

    def drop_of(self, dimension: str, ratio: float) -> float | None:
        return next((c.drop for c in self.cuts if c.dimension == dimension and c.ratio == ratio), None)

    def to_dict(self) -> dict:
        return {"metric_name": self.metric_name, "baseline": self.baseline, "uncut": self.uncut, "images": self.images,
                "importance": self.importance, "seconds": self.seconds,
                "cuts": [dataclasses.asdict(c) for c in self.cuts]}

    @classmethod
    def from_dict(cls, d: dict) -> Sensitivity:
        return cls(d["metric_name"], d["baseline"], d["uncut"], d["images"], d["importance"],
                   tuple(Cut(**c) for c in d["cuts"]), d["seconds"])


def _channel_ratios(choices) -> list[float]:
    return sorted(Sparsity.parse(c).ratio for c in choices if c.startswith("channel:"))


def _label(ratio: float) -> str:
    return Sparsity(kind="channel", ratio=ratio).label()


def _key(model, space, val, train, images: int, importance: str) -> str:
    dims = [(d.name, list(d.members), [c for c in d.choices if c.startswith("channel:")])
            for d in space.dimensions if d.kind == "sparsity"]
    dims += [(d.name, [], list(d.choices)) for d in space.dimensions if d.kind == "scales"]
    ident = {"v": SENSITIVITY_VERSION, "source": model.source_hash, "size": model.input_size, "dims": dims,
             "round_to": space.round_to, "importance": importance, "images": images,
             "val": [r.id for r in val.records[:images]], "train": None if train is None else len(train)}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _torch_forward(module) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    from edgetune.models import float_outputs

    def fwd(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = float_outputs(module(torch.from_numpy(x)))
        return (out[0] if isinstance(out, (tuple, list)) else out).numpy()

    return fwd


def measure_sensitivity(model, space, *, train, val, images: int = 100, workdir: Path | None = None,
                        on_cut: Callable[[int, int, Cut], None] | None = None) -> Sensitivity:
    """Cut every sparsity dimension of ``space`` alone at each channel ratio it offers (see the module
    docstring). ``train``: the split BatchNorm is re-estimated on (and taylor's gradients come from);
    ``val``: scored on its first ``images`` images. ``on_cut(done, total, cut)`` reports progress."""
    from edgetune.compress._compress import TAYLOR_BATCH, TAYLOR_BATCHES, resolve_importance
    from edgetune.compress._importance import accumulate_gradients, make_importance, needs_gradients
    from edgetune.compress._prune import channel_drops, cut_channels, recalibrate_bn
    from edgetune.compress._schedule import PrunePlan
    from edgetune.models import evaluate
    from edgetune.spaces import dependency_graph, kept_channels, measure_macs

    if model.module is None:
        raise CompressionError(f"model {model.name!r} has no torch module: sensitivity cuts channels, which an "
                               "ONNX-only source cannot do.")
    if train is None or len(train) == 0:
        raise CompressionError("sensitivity re-estimates BatchNorm after each cut on the train split, but there is "
                               "none: set `data.train_size` (builtin) or `data.train_annotations` (COCO).")
    adapter, size = model.adapter, model.input_size
    importance = resolve_importance(space.importance, train, adapter)
    images = min(images, len(val))
    cache = None
    if workdir is not None:
        cache = Path(workdir) / "sensitivity" / f"{_key(model, space, val, train, images, importance)}.json"
        if cache.is_file():
            try:
                return Sensitivity.from_dict(json.loads(cache.read_text()))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("sensitivity cache %s is unreadable (%s); measuring again", cache.name, exc)
    t0 = time.time()
    subset = val.subset(range(images))
    metric_name = "map50_95" if model.task == "detect" else "top1"

    def score(module) -> float:
        module.eval()
        return float(evaluate(_torch_forward(module), subset, model.head, size=size)[metric_name])

    groups = {g.name: g for g in space.groups}
    dims = [(d, _channel_ratios(d.choices)) for d in space.dimensions if d.kind == "sparsity"]
    dims = [(d, rs) for d, rs in dims if rs]
    ratios = sorted({r for _, rs in dims for r in rs})
    arrays = adapter.prepare(train, size=size, limit=max(TAYLOR_BATCHES * TAYLOR_BATCH, BN_BATCHES * BN_BATCH))
    drops: dict = {}
    if dims:  # the channels each ratio removes, scored once on the uncut model
        scorer = copy.deepcopy(model.module)
        dg = dependency_graph(scorer, size)
        if needs_gradients(importance):
            rng = np.random.default_rng(0)
            accumulate_gradients(scorer, (adapter.sample(arrays, rng, TAYLOR_BATCH, None)
                                          for _ in range(TAYLOR_BATCHES)),
                                 lambda m, *batch: adapter.loss(adapter.forward(m, batch[0]), batch))
        imp = make_importance(importance)
        members = sorted({m for d, _ in dims for m in d.members if m in groups})
        drops = {r: channel_drops(scorer, dg, PrunePlan(channels={m: kept_channels(groups[m].channels, r,
                                                                                   space.round_to)
                                                                  for m in members}), imp) for r in ratios}
        del scorer, dg
    base_macs = sum(measure_macs(model.module, size)[0].values())

    def recalibrated(module):
        rng = np.random.default_rng(1)  # the same batches for every cut and the reference
        recalibrate_bn(module, (adapter.sample(arrays, rng, BN_BATCH, None)[0] for _ in range(BN_BATCHES)))
        return module

    uncut = score(copy.deepcopy(model.module))
    baseline = score(recalibrated(copy.deepcopy(model.module)))
    scale_dims = [d for d in space.dimensions if d.kind == "scales"]
    total = sum(len(rs) for _, rs in dims) + sum(len(d.choices) - 1 for d in scale_dims)
    cuts: list[Cut] = []
    for d, rs in dims:
        for r in rs:
            offered = [m for m in d.members if _label(r) in space.sparsity_choices.get(m, ())]
            cut = {m: drops[r][m] for m in offered if drops[r][m]}
            student = copy.deepcopy(model.module)
            changed = cut_channels(student, dependency_graph(student, size), cut)
            recalibrated(student)
            macs = sum(measure_macs(student, size)[0].values())
            metric = score(student)
            c = Cut(d.name, r, sum(v[0] for v in changed.values()), sum(v[1] for v in changed.values()),
                    round(1 - macs / base_macs, 4), round(metric, 4), round(baseline - metric, 4), _label(r))
            cuts.append(c)
            if on_cut is not None:
                on_cut(len(cuts), total, c)
            del student
    for d in scale_dims:
        for label in d.choices[1:]:
            from edgetune.models import keep_output_scales

            student = recalibrated(copy.deepcopy(model.module))
            keep_output_scales(student, space.scales_of(label))
            macs = sum(measure_macs(student, size)[0].values())
            metric = score(student)
            c = Cut(d.name, 0.0, len(d.choices[0].split("+")), len(label.split("+")), round(1 - macs / base_macs, 4),
                    round(metric, 4), round(baseline - metric, 4), label)
            cuts.append(c)
            if on_cut is not None:
                on_cut(len(cuts), total, c)
            del student
    result = Sensitivity(metric_name, round(baseline, 4), round(uncut, 4), images, importance, tuple(cuts), round(time.time() - t0, 1))
    if cache is not None:
        from edgetune._paths import atomic_write_bytes

        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache, json.dumps(result.to_dict(), indent=1).encode())
    return result


def restrict_space(space, sens: Sensitivity, max_drop: float):
    """``space`` without the channel ratios whose cut (alone, before recovery) costs more than ``max_drop``
    of the metric; a dimension left with one choice stops being one (its groups stay dense, pinned with
    the reason). Every removal is a note of the space."""
    from edgetune.spaces import Dimension

    dims: list = []
    choices = dict(space.sparsity_choices)
    pins = dict(space.sparsity_pins)
    notes = list(space.notes)
    scales = space.scale_choices
    for d in space.dimensions:
        if d.kind == "scales":
            bad = {c.choice: c.drop for c in sens.cuts if c.dimension == d.name and c.drop > max_drop}
            scales = tuple(c for c in d.choices if c not in bad)
            if bad:
                notes.append(f"{d.name}: output strides {', '.join(bad)} alone removed (sensitivity: keeping "
                             f"{min(bad, key=bad.get)} only costs {min(bad.values()):.3f} {sens.metric_name} > max_drop "
                             f"{max_drop:g})")
            if len(scales) > 1:
                dims.append(Dimension(d.name, d.kind, scales, d.members))
            continue
        if d.kind != "sparsity":
            dims.append(d)
            continue
        bad = {_label(c.ratio): c.drop for c in sens.cuts if c.dimension == d.name and c.drop > max_drop}
        if not bad:
            dims.append(d)
            continue
        keep = tuple(c for c in d.choices if c not in bad)
        worst = min(bad, key=lambda c: Sparsity.parse(c).ratio)
        why = f"sensitivity: {worst.replace(':', ' ')} alone costs {bad[worst]:.3f} {sens.metric_name} > max_drop {max_drop:g}"
        notes.append(f"{d.name}: {', '.join(sorted(bad))} removed ({why})")
        for m in d.members:
            choices[m] = tuple(c for c in choices[m] if c not in bad) or ("dense",)
            if len(choices[m]) == 1:
                pins[m] = why
        if len(keep) > 1:
            dims.append(Dimension(d.name, d.kind, keep, d.members))
    for n in notes[len(space.notes):]:
        log.info("space: %s", n)
    return dataclasses.replace(space, sparsity_choices=choices, sparsity_pins=pins, dimensions=tuple(dims),
                               notes=tuple(notes), scale_choices=scales if len(scales) > 1 else ())
