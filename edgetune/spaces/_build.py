"""Build a :class:`SearchSpace` from a model, the sweep's ``space:`` section and the target device kinds.

:func:`space_from_layers` is the pure part (no torch): it applies the rule table, the pins and the
tying to discovered layers and groups, so it can be tested on synthetic models of any size.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Sequence

from edgetune._logging import get_logger
from edgetune.errors import CompressionError, ConfigError, closest_names
from edgetune.spaces._layers import Group, Layer, kept_channels, two_four_eligible
from edgetune.spaces._rules import offered, quant_for_kinds
from edgetune.spaces._space import Dimension, SearchSpace
from edgetune.spaces._spec import SpaceSpec

log = get_logger(__name__)

__all__ = ["build_space", "space_from_layers", "select_layers"]

_WHY_DROPPED = {
    "fp16": "fp16 pays off on GPU/TensorRT only (the onnxruntime CPU EP casts back to fp32); add a jetson-orin target",
    "int8": "no target has int8 kernels",
    "2:4": "2:4 sparsity needs NVIDIA sparse tensor cores (jetson-orin)",
    "unstructured": "no target benefits",
    "channel": "no target benefits",
}


def select_layers(selectors: Sequence[str], layers: Sequence[Layer], *, where: str) -> dict[str, str]:
    """layer name -> the selector that matched it. Selectors: ``first``, ``last``, names, globs."""
    names = [lay.name for lay in layers]
    out: dict[str, str] = {}
    for sel in selectors:
        if sel in ("first", "last"):
            hits = [lay.name for lay in layers if getattr(lay, sel)]
        elif any(ch in sel for ch in "*?["):
            hits = fnmatch.filter(names, sel)
            if not hits:
                raise ConfigError(f"`{where}` glob {sel!r} matches no layer.{closest_names(sel, names)}")
        elif sel in names:
            hits = [sel]
        else:
            raise ConfigError(f"`{where}` names unknown layer {sel!r}.{closest_names(sel, names)} Use first, last, a layer "
                              "name or a glob (run `edgetune space --config ...` to list them).")
        for h in hits:
            out.setdefault(h, sel)
    return out


def _group_choices(g: Group, kinds: Sequence[str], ratios: Sequence[float], round_to: int,
                   by_name: dict[str, Layer]) -> tuple[str, ...]:
    out = ["dense"] if 0.0 in ratios else []
    for kind in kinds:
        if kind == "channel":
            seen: set[int] = set()
            for r in ratios:
                k = kept_channels(g.channels, r, round_to)
                if r > 0 and k < g.channels and k not in seen:  # ratios that change nothing are not offered
                    seen.add(k)
                    out.append(f"channel:{r:g}")
        elif kind == "unstructured":
            out.extend(f"unstructured:{r:g}" for r in ratios if r > 0)
        elif kind == "2:4" and any(two_four_eligible(by_name[n]) for n in g.layers):
            out.append("2:4")
    return tuple(out) or ("dense",)


def _dimensions(tie_for, layers: Sequence[Layer], groups: Sequence[Group], precision_choices: dict,
                sparsity_choices: dict) -> tuple[Dimension, ...]:
    by_name = {lay.name: lay for lay in layers}

    def key(name: str, tie: str) -> str:
        return name if tie == "none" else "all" if tie == "model" else getattr(by_name[name], tie)

    dims: list[Dimension] = []
    for kind, items, choices in (("precision", [lay.name for lay in layers], precision_choices),
                                 ("sparsity", [g.name for g in groups], sparsity_choices)):
        tie = tie_for(kind)
        buckets: dict[str, list[str]] = {}
        for n in items:
            if len(choices[n]) > 1:
                buckets.setdefault(key(n, tie), []).append(n)
        for k, members in buckets.items():
            union = tuple(dict.fromkeys(c for m in members for c in choices[m]))
            name = f"{kind}/{k}" if tie == "none" else f"{kind}/{tie}:{k}"
            dims.append(Dimension(name, kind, union, tuple(members)))
    return tuple(dims)


def space_from_layers(layers: Sequence[Layer], groups: Sequence[Group], spec: SpaceSpec | None = None, *,
                      targets: Sequence[str] | None = None, input_size: int = 0,
                      uncuttable: dict[str, str] | None = None, pinned: dict[str, str] | None = None,
                      strides: tuple[int, ...] | None = None) -> SearchSpace:
    """The search space of already-discovered layers and groups (pure; see the module docstring).

    ``uncuttable``: group -> why discovery's test cut failed (the group stays dense, the reason is its pin);
    ``pinned``: layer -> why it is in no group (attention), reported in the notes; ``strides``: a detector's
    output strides (for ``spec.scales``)."""
    uncuttable = uncuttable or {}
    spec = spec or SpaceSpec()
    targets = tuple(targets or spec.targets)
    ok_prec, ok_sparse = offered(targets)
    notes = [f"{p} not offered: {_WHY_DROPPED[p]}" for p in spec.precision if p not in ok_prec]
    notes += [f"{k} sparsity not offered: {_WHY_DROPPED[k]}" for k in spec.sparsity.kinds if k not in ok_sparse]
    by_reason: dict[str, list[str]] = {}
    for name, why in (pinned or {}).items():
        by_reason.setdefault(why, []).append(name)
    notes += [f"not channel-pruned: {', '.join(names)} ({why})" for why, names in by_reason.items()]
    for n in notes:
        log.info("space: %s", n)
    precisions = tuple(p for p in spec.precision if p in ok_prec) or ("fp32",)
    kinds = [k for k in spec.sparsity.kinds if k in ok_sparse]
    precision_pins: dict[str, str] = {}
    sparsity_pins: dict[str, str] = {}
    precision_choices: dict[str, tuple[str, ...]] = {}
    pinned_prec: dict[str, str] = {}
    for prec, sels in spec.keep.precision.items():
        for name, sel in select_layers(sels, layers, where=f"space.keep.precision.{prec}").items():
            pinned_prec[name] = prec
            precision_pins[name] = f"keep.precision.{prec}: {sel}"
    for lay in layers:
        precision_choices[lay.name] = (pinned_prec[lay.name],) if lay.name in pinned_prec else precisions
    dense_layers = select_layers(spec.keep.sparsity, layers, where="space.keep.sparsity")
    by_name = {lay.name: lay for lay in layers}
    sparsity_choices: dict[str, tuple[str, ...]] = {}
    for g in groups:
        hit = next((n for n in g.layers if n in dense_layers), None)
        if hit is not None:
            sparsity_choices[g.name] = ("dense",)
            sparsity_pins[g.name] = f"keep.sparsity: {dense_layers[hit]}" + ("" if hit == g.name else f" ({hit})")
        else:
            choices = _group_choices(g, kinds, spec.sparsity.ratios, spec.sparsity.round_to, by_name)
            if g.name in uncuttable:  # no channel cuts; masks (unstructured, 2:4) still apply
                choices = tuple(c for c in choices if not c.startswith("channel:")) or ("dense",)
                sparsity_pins[g.name] = f"no channel cut: {uncuttable[g.name]}"
            sparsity_choices[g.name] = choices
    dims = _dimensions(spec.tie_for, layers, groups, precision_choices, sparsity_choices)
    sizes = tuple(spec.input_size)
    if len(sizes) > 1:
        dims += (Dimension("input_size", "input_size", tuple(map(str, sizes)), ()),)
    if len(spec.runtime) > 1:
        dims += (Dimension("runtime", "runtime", tuple(spec.runtime), ()),)
    scales = _scale_choices(spec.scales, strides)
    if len(scales) > 1:
        dims += (Dimension("scales", "scales", scales, ()),)
    return SearchSpace(layers=tuple(layers), groups=tuple(groups), precision_choices=precision_choices,
                       sparsity_choices=sparsity_choices, dimensions=dims, targets=targets,
                       quant=quant_for_kinds(targets, calibration=spec.calibration),
                       importance=spec.sparsity.importance, round_to=spec.sparsity.round_to,
                       precision_pins=precision_pins, sparsity_pins=sparsity_pins,
                       notes=tuple(notes), input_size=input_size, input_size_choices=sizes,
                       runtime_choices=tuple(spec.runtime), scale_choices=scales)


def _scale_choices(wanted, strides: tuple[int, ...] | None) -> tuple[str, ...]:
    """``space.scales`` as choice labels (``8+16+32``, ``8``), every output scale first; () when unset."""
    import itertools

    if wanted is None:
        return ()
    if not strides or len(strides) < 2:
        raise ConfigError("`space.scales` needs a detector with several output scales (an Ultralytics YOLOv8 / "
                          f"YOLO11 / YOLO26 Detect head); this model has {'none' if not strides else list(strides)}. "
                          "Remove `space.scales`.")
    full = tuple(sorted(strides))
    if wanted == "auto":
        sets = [c for n in range(len(full), 0, -1) for c in itertools.combinations(full, n)]
    else:
        bad = [s for s in wanted if not set(s) <= set(full)]
        if bad:
            raise ConfigError(f"`space.scales` {bad[0]}: this model's output strides are {list(full)}; list subsets of "
                              "those.")
        sets = [full] + [tuple(s) for s in wanted if tuple(s) != full]
    return tuple("+".join(map(str, s)) for s in sets)


def build_space(model, spec: SpaceSpec | None = None, *, targets: Sequence[str] | None = None,
                input_size: int | None = None) -> SearchSpace:
    """Discover ``model``'s layers and groups (a LoadedModel or an ``nn.Module``) and build its space."""
    from edgetune.spaces._discover import (
        dependency_graph,
        discover_groups,
        discover_layers,
        find_attention,
        test_cut_groups,
    )

    spec = spec or SpaceSpec()
    module = getattr(model, "module", model)
    size = input_size or getattr(model, "input_size", None) or getattr(module, "input_size", None)
    if module is None:
        onnx_path = getattr(model, "onnx_path", None)
        if onnx_path is None:
            raise CompressionError(f"model {getattr(model, 'name', '?')!r} has neither a torch module nor an ONNX file.")
        return _onnx_space(model, onnx_path, spec, targets=targets, size=size)
    if not size:
        raise ConfigError("the model's input size is unknown; set `model.input_size`.")
    prunes = any(r > 0 for r in spec.sparsity.ratios)
    try:
        dg = dependency_graph(module, size)
    except CompressionError:
        if prunes:
            raise
        dg = None
    if dg is None:  # precision-only space for a model Torch-Pruning cannot trace
        layers = discover_layers(module, size, dg=_NoGraph())
        return space_from_layers(layers, [], spec, targets=targets, input_size=size)
    layers = discover_layers(module, size, dg=dg)
    pinned = find_attention(module, size)  # before grouping, also for precision-only spaces (bounded memory)
    groups = discover_groups(module, size, layers, dg=dg, pinned=pinned)
    uncuttable: dict[str, str] = {}
    if prunes and "channel" in spec.sparsity.kinds:
        uncuttable = test_cut_groups(module, size, groups, max(spec.sparsity.ratios))
    strides = None
    if spec.scales is not None:
        from edgetune.models import output_strides

        strides = output_strides(module)
    return space_from_layers(layers, groups, spec, targets=targets, input_size=size, uncuttable=uncuttable,
                             pinned=pinned, strides=strides)


def _onnx_space(model, onnx_path, spec: SpaceSpec, *, targets, size) -> SearchSpace:
    """Precision-only space of an ONNX-only model: its sizes and sparsity cannot change (no torch module)."""
    from edgetune.spaces._onnx import discover_onnx_layers, read_onnx

    if any(s != size for s in spec.input_size):
        raise ConfigError(f"`space.input_size` {list(spec.input_size)}: model {getattr(model, 'name', '?')!r} is an "
                          f"ONNX file exported at {size} px, which edgetune cannot re-export; remove "
                          "`space.input_size` (or use a builtin / python source).")
    if spec.scales is not None:
        raise ConfigError(f"`space.scales`: model {getattr(model, 'name', '?')!r} is an ONNX file, whose output "
                          "scales edgetune cannot remove (no torch module); remove `space.scales`.")
    layers = discover_onnx_layers(read_onnx(onnx_path))
    pruning = any(r > 0 for r in spec.sparsity.ratios)
    space = space_from_layers(layers, [], spec, targets=targets, input_size=size)
    if pruning:
        note = ("sparsity not offered: an ONNX source has no torch module to prune (use a builtin or python source "
                "to search sparsity)")
        log.info("space: %s", note)
        space = dataclasses.replace(space, notes=(*space.notes, note))
    return space


class _NoGraph:
    module2node: dict = {}
