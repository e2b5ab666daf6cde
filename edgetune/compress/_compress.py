"""``compress(model, config, *, calib, workdir) -> Artifact``: one config applied for real.

Order: channel pruning (Torch-Pruning, per-group counts rounded to ``round_to``) and weight masks
(unstructured, 2:4) -> recovery (fine-tuning + distillation, on by default whenever the config prunes)
-> masks made permanent -> ONNX export (single file, parity-checked) -> ``quant_pre_process`` -> the
layer -> node map -> int8 QDQ of the int8 layers (the others in ``nodes_to_exclude``) -> fp16 regions
-> Artifact (manifest with hashes and sizes), cached by the hash of the inputs.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import time
from pathlib import Path

import numpy as np

from edgetune._logging import get_logger
from edgetune.compress._artifact import MANIFEST_VERSION, Artifact, load_cached, onnx_sizes, store, zstd_size
from edgetune.compress._compact import compact
from edgetune.compress._keys import COMPRESS_VERSION, _adapter_id, _dataset_id, artifact_key, pruned_key
from edgetune.compress._pruned_cache import load_pruned, pruned_dir, store_pruned
from edgetune.compress._spec import RecoverySpec
from edgetune.errors import CompressionError, ConfigError, closest_names
from edgetune.spaces import BITS, CompressionConfig

log = get_logger(__name__)

__all__ = ["compress", "needs_train", "artifact_key", "pruned_key", "resolve_importance", "COMPRESS_VERSION"]

TAYLOR_BATCHES, TAYLOR_BATCH = 8, 16  # gradient estimate of the taylor importance (full-size train images)
FADE_PART = 0.8  # progressive cut: the doomed channels reach zero after this part of the fading steps


def _check_layers(config: CompressionConfig, names: list[str]) -> None:
    for name in config.precision:
        if name not in names:
            raise ConfigError(f"`precision` names unknown layer {name!r}.{closest_names(name, names)}")


def _node_map(pre_proto, names, exported_proto, module, size) -> dict[str, str]:
    from edgetune.compress._onnx_map import layer_node_map
    from edgetune.compress.export import node_module_paths

    try:
        return layer_node_map(pre_proto, names)
    except CompressionError:
        if module is None:
            raise
    from edgetune.spaces import norm_to_layer

    scopes = node_module_paths(exported_proto)  # node names survive pre-processing, metadata does not
    return layer_node_map(pre_proto, names, scopes=scopes, bn_to_layer=norm_to_layer(module, size))


def _feature_taps(layers, groups, changed) -> dict[str, list[int] | None]:
    """Where to distill features: the inputs of the output layers, with the teacher channels the pruned
    student kept (None: all of them). (Taps on every group's output cost 30% more time for no gain.)"""
    taps: dict[str, list[int] | None] = {}
    for lay in (x for x in layers if x.last):
        g = next((g for g in groups if lay.name in g.consumers), None)
        taps[lay.name] = changed[g.name][2] if g is not None and g.name in changed else None
    return taps


def needs_train(recovery: RecoverySpec, config: CompressionConfig | None = None) -> bool:
    """Whether compressing ``config`` (None: any config of a sweep) needs the train split: recovery
    fine-tunes whatever is pruned, so when recovery is on and the config prunes; elastic recovery also
    serves configs at another input size than the model's (its weights were trained at the space's sizes)."""
    return recovery.enabled and (config is None or config.prunes or (recovery.mode == "elastic"
                                                                      and config.input_size is not None))


def _elastic(recovery: RecoverySpec | None) -> bool:
    return recovery is not None and recovery.mode == "elastic"


def resolve_importance(name: str, train, adapter=None) -> str:
    """``auto`` -> ``taylor`` (gradient energy) when there is a train split and the model's task offers a
    supervised loss to take gradients of (``adapter.has_loss``), else ``magnitude``.

    Measured on det-s, every group at 25% channels: magnitude kept 0.031 mAP50-95 before fine-tuning,
    taylor 0.357 (0.245 vs 0.505 after BN recalibration); see docs/compression.md."""
    if name != "auto":
        return name
    has_loss = adapter is not None and adapter.has_loss
    return "taylor" if train is not None and len(train) and has_loss else "magnitude"


def _prune_and_recover(student, teacher, config, importance, size, train, recovery, timings, adapter, *,
                       space=None, workdir: Path | None = None, source_hash: str = "") -> dict:
    from edgetune.compress._importance import accumulate_gradients, make_importance, needs_gradients
    from edgetune.compress._prune import (
        SoftCut,
        channel_drops,
        cut_channels,
        make_permanent,
        mask_two_four,
        mask_unstructured,
        recalibrate_bn,
    )
    from edgetune.compress._recover import recover
    from edgetune.compress._schedule import schedule
    from edgetune.spaces import dependency_graph, discover_groups, discover_layers

    t = time.time()
    dg = dependency_graph(student, size)
    layers = discover_layers(student, size, dg=dg)
    groups = discover_groups(student, size, layers, dg=dg)  # attention layers pinned
    gnames = [g.name for g in groups]
    for name in config.sparsity:
        if name not in gnames:
            raise ConfigError(f"`sparsity` names unknown group {name!r}.{closest_names(name, gnames)} Groups are named "
                              "after their producer layer (`edgetune space` lists them).")
    plan = schedule(config, groups, layers)
    arrays = adapter.prepare(train, size=size, limit=TAYLOR_BATCHES * TAYLOR_BATCH) if train is not None else None
    changed: dict = {}
    rec = None
    progressive = recovery is not None and recovery.progressive > 0 and bool(plan.channels) and not _elastic(recovery)
    if _elastic(recovery):
        changed, rec = _from_elastic(student, teacher, dg, groups, config, plan, importance, size, train, recovery,
                                     adapter, space=space, workdir=workdir, source_hash=source_hash, timings=timings)
        recovery = None  # no per-config fine-tuning
    elif plan.channels:
        imp = make_importance(importance)
        if needs_gradients(importance):
            if arrays is None:
                raise CompressionError(f"importance {importance!r} needs the train split for gradients; set "
                                       "`space.sparsity.importance: magnitude` or give a train split.")
            if not adapter.has_loss:
                raise CompressionError(f"importance {importance!r} needs the gradients of a supervised loss, which "
                                       f"this {adapter.kind} model does not offer; use `space.sparsity.importance: "
                                       "magnitude` (or auto).")
            rng = np.random.default_rng(0)
            accumulate_gradients(student, (adapter.sample(arrays, rng, TAYLOR_BATCH, None)
                                           for _ in range(TAYLOR_BATCHES)),
                                 lambda m, *batch: adapter.loss(adapter.forward(m, batch[0]), batch))
        drops = channel_drops(student, dg, plan, imp)
        student.zero_grad(set_to_none=True)
        if progressive:
            # fade the doomed channels out while fine-tuning, then cut (lossless by then): det-s at 25%
            # reached 0.7135 instead of 0.700 mAP50-95 with the same 300 steps (docs/compression.md)
            fade_steps = max(1, int(recovery.steps * recovery.progressive))
            soft = SoftCut(student, dg, drops)

            def fade(step: int, _loss) -> None:
                soft.factor = max(0.0, 1.0 - step / max(1.0, FADE_PART * fade_steps))

            try:
                first = recover(student, teacher, train, recovery, adapter=adapter, input_size=size, on_step=fade,
                                stop=fade_steps)
            finally:
                soft.remove()
            changed = cut_channels(student, dg, drops)
        else:
            changed = cut_channels(student, dg, drops)
            if arrays is not None:
                rng = np.random.default_rng(1)
                recalibrate_bn(student, (adapter.sample(arrays, rng, TAYLOR_BATCH, None)[0]
                                         for _ in range(TAYLOR_BATCHES)))
    if recovery is None and rec is not None:  # elastic: the masks below are not fine-tuned
        timings["prune"] = round(time.time() - t - rec["seconds"], 2)
    mask_unstructured(student, plan.unstructured)
    mask_two_four(student, plan.two_four)
    if "prune" not in timings:
        timings["prune"] = round(time.time() - t - (first["seconds"] if progressive else 0.0), 2)
    if recovery is not None:
        if progressive and recovery.budget_s:  # the wall-clock cap covers both halves
            recovery = recovery.model_copy(update={"budget_s": max(1e-3, recovery.budget_s - first["seconds"])})
        if progressive and first["stopped"] == "budget_s":  # the cap ran out before the cut: nothing left
            rec = {"steps": 0, "steps_asked": recovery.steps - fade_steps, "stopped": "budget_s", "seconds": 0.0,
                   "loss": first["loss"]}
        else:
            rec = recover(student, teacher, train, recovery, adapter=adapter, input_size=size,
                          features=_feature_taps(layers, groups, changed), start=fade_steps if progressive else 0)
        if progressive:
            rec = {"steps": first["steps"] + rec["steps"], "steps_asked": first["steps_asked"] + rec["steps_asked"],
                   "stopped": "budget_s" if "budget_s" in (first["stopped"], rec["stopped"]) else "steps",
                   "seconds": round(first["seconds"] + rec["seconds"], 2), "loss": rec["loss"],
                   "faded_steps": first["steps"]}
        timings["recover"] = rec["seconds"]
    make_permanent(student)
    student.zero_grad(set_to_none=True)
    return {"plan": plan.to_dict(), "importance": importance if plan.channels else None,
            "channels": {k: [v[0], v[1]] for k, v in changed.items()},
            "kept": {k: v[2] for k, v in changed.items()}, "recovery": rec}


def _elastic_identity(groups, space, config, size, importance, recovery, train, adapter, source_hash):
    """(group -> offered widths, the input sizes, the elastic key) of the elastic fine-tune a config needs."""
    from edgetune.compress._elastic import elastic_choices, elastic_key

    choices = elastic_choices(groups, space, config, config.round_to)
    sizes = tuple(dict.fromkeys([int(s) for s in (getattr(space, "input_size_choices", ()) or ())] or [size]))
    if size not in sizes:
        sizes = (*sizes, size)
    key = elastic_key(source_hash=source_hash, choices=choices, sizes=sizes, importance=importance, recovery=recovery,
                      train_id=_dataset_id(train), adapter=_adapter_id(adapter))
    return choices, sizes, key


def elastic_key_for(model, space, recovery: RecoverySpec, train) -> str:
    """The key of the elastic weights a sweep of ``space`` on ``model`` (a LoadedModel with its torch module)
    trains with ``recovery`` on ``train``: where ``ensure_elastic`` looks for them (the shipped weights'
    test checks the demo's)."""
    from edgetune.spaces import dependency_graph, discover_groups, discover_layers

    size = int(model.input_size)
    dg = dependency_graph(model.module, size)
    groups = discover_groups(model.module, size, discover_layers(model.module, size, dg=dg), dg=dg)
    config = space.baseline("fp32")
    importance = resolve_importance(config.importance, train, model.adapter)
    return _elastic_identity(groups, space, config, size, importance, recovery, train, model.adapter,
                             model.source_hash)[2]


def _from_elastic(student, teacher, dg, groups, config, plan, importance, size, train, recovery, adapter, *, space,
                  workdir, source_hash, timings) -> tuple[dict, dict]:
    """The config cut from the elastic weights (trained on the first call, cached after): (changed, rec)."""
    from edgetune.compress._elastic import cut_elastic, ensure_elastic
    from edgetune.compress._importance import accumulate_gradients, make_importance, needs_gradients

    t = time.time()
    choices, sizes, key = _elastic_identity(groups, space, config, size, importance, recovery, train, adapter,
                                            source_hash)

    def gradients() -> None:  # taylor scores need them; only when the elastic weights are trained
        if not needs_gradients(importance):
            return
        if not adapter.has_loss:
            raise CompressionError(f"importance {importance!r} needs the gradients of a supervised loss, which this "
                                   f"{adapter.kind} model does not offer; use `space.sparsity.importance: magnitude`.")
        arrays = adapter.prepare(train, size=size, limit=TAYLOR_BATCHES * TAYLOR_BATCH)
        rng = np.random.default_rng(0)
        accumulate_gradients(student, (adapter.sample(arrays, rng, TAYLOR_BATCH, None) for _ in range(TAYLOR_BATCHES)),
                             lambda m, *batch: adapter.loss(adapter.forward(m, batch[0]), batch))

    orders, trained = ensure_elastic(student, teacher, dg, choices=choices, sizes=sizes, importance=importance,
                                     imp=make_importance(importance), train=train, recovery=recovery, adapter=adapter,
                                     workdir=workdir or Path("."), key=key, timings=timings, gradients=gradients)
    missing = sorted(set(plan.channels) - set(orders))
    if missing:
        raise CompressionError(f"group(s) {', '.join(missing)} are pruned by the config but were not trained elastic "
                               "(the space does not offer them channel pruning); use `recovery.mode: per_config`.")
    changed = cut_elastic(student, dg, orders, dict(plan.channels), adapter=adapter, train=train, size=size)
    rec = {"mode": "elastic", "elastic": key, "steps": 0, "steps_asked": 0, "stopped": "steps",
           "seconds": round(time.time() - t, 2), "loss": None}
    if (trained or {}).get("stopped") == "budget_s":  # the shared weights were cut short: so is this config
        rec.update(stopped="budget_s", elastic_steps=trained.get("steps"), elastic_steps_asked=trained.get("steps_asked"),
                   budget_s=recovery.budget_s)
    return changed, rec


def _apply_precision(src: Path, src_proto, names, precision, config, calib_arr, tmp: Path, timings: dict,
                     node_map, workdir: Path | None, calib_hash: str | None = None) -> Path:
    """fp32 graph -> (pre-process -> int8 QDQ -> fp16) -> compacted ``tmp/model.onnx``. ``node_map(pre_proto)``
    gives layer -> ONNX node name on the pre-processed graph. The pre-processed graph and the calibrated
    ranges of ``src`` are kept in ``<workdir>/quant`` for the next config of the same fp32 graph (None: not
    kept, ``compress(use_cache=False)``)."""
    import onnx

    from edgetune.compress._onnx_map import tail_nodes
    from edgetune.compress._quantize import QuantCache, preprocess, quantize_qdq

    int8 = any(p == "int8" for p in precision.values())
    fp16 = [n for n in names if precision[n] == "fp16"]
    t = time.time()
    cache = QuantCache(workdir / "quant", src) if (int8 or fp16) and workdir is not None else None
    if not (int8 or fp16):
        final = pre = src
    else:
        final = pre = cache.preprocess(src, tmp / "pre.onnx", timings) if cache else preprocess(src, tmp / "pre.onnx")
    pre_proto = onnx.load(str(pre)) if pre != src else src_proto
    nodes = node_map(pre_proto)
    if int8:
        exclude = [nodes[n] for n in names if precision[n] != "int8"] + tail_nodes(pre_proto)
        final = quantize_qdq(pre, tmp / "int8.onnx", calib=calib_arr, settings=config.quant,
                             input_name=pre_proto.graph.input[0].name, exclude=exclude, cache=cache,
                             calib_hash=calib_hash, timings=timings)
    proto = onnx.load(str(final))
    if fp16:
        from edgetune.compress._fp16 import convert_nodes_fp16

        convert_nodes_fp16(proto, {nodes[n] for n in fp16})
    if int8 or fp16:
        timings["quantize"] = round(time.time() - t, 2)
    final = tmp / "model.onnx"
    onnx.save(compact(proto, nodes), str(final))
    return final


def _scratch(workdir: Path, key: str) -> Path:
    """This process's (and thread's) scratch directory for building artifact ``key``: processes sharing a
    workdir (Ray workers, several controllers, pytest-xdist) may build the same key at once; the results
    meet only in the atomic stores (``store``, ``store_pruned``)."""
    import threading

    return workdir / ".work" / f"{key}.{os.getpid()}.{threading.get_ident()}"


def _build_onnx(student, names, precision, config, calib_arr, tmp: Path, size: int, timings: dict,
                workdir: Path | None, export_cache: Path | None = None, shared: bool = False,
                calib_hash: str | None = None):
    """Export -> (pre-process -> layer map -> int8 QDQ -> fp16) -> compact; returns (path, params,
    non-zero params, max |ORT - torch|). ``export_cache``: where the fp32 export of this (pruned) model is
    kept, so that other precisions of the same weights skip the exporter (5-9 s for det-s); ``shared``: look
    in (and add to) the machine's export cache too (``cached_export``: the dense model of every sweep and
    workdir; pruned ones stay in their workdir, or a long sweep would fill the user's cache)."""
    import onnx

    from edgetune._paths import atomic_write_bytes
    from edgetune.compress.export import cached_export, export_onnx, parity

    int8 = any(p == "int8" for p in precision.values())
    fp16 = [n for n in names if precision[n] == "fp16"]
    t = time.time()
    exported_path = tmp / "fp32.onnx"
    if export_cache is not None and export_cache.is_file():
        tmp.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(export_cache, exported_path)
        timings["export_from_cache"] = round(time.time() - t, 2)
    else:
        hit = (cached_export if shared else export_onnx)(student, exported_path, input_size=size).from_cache
        if export_cache is not None:
            export_cache.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(export_cache, exported_path.read_bytes())
        timings["export_from_cache" if hit else "export"] = round(time.time() - t, 2)
    exported = onnx.load(str(exported_path))
    params, nonzero = onnx_sizes(exported)
    final = _apply_precision(exported_path, exported, names, precision, config, calib_arr, tmp, timings,
                             lambda pre_proto: _node_map(pre_proto, names, exported, student, size), workdir,
                             calib_hash)
    diff, tol = parity(student, final, input_size=size)
    if not (int8 or fp16) and not diff <= tol:
        raise CompressionError(f"the compacted fp32 graph differs from torch by {diff:.3g} (> {tol:.3g}); this is a "
                               "bug in edgetune's graph compaction: please report it with the model.")
    return final, params, nonzero, diff


def compress(model, config: CompressionConfig, *, calib, workdir: str | Path, train=None,
             recovery: RecoverySpec | None = None, space=None, use_cache: bool = True) -> Artifact:
    """Apply ``config`` to ``model`` (a LoadedModel) and return the Artifact (from the cache when the same
    weights, config, calibration data and recovery settings were compressed before).

    ``calib``: the calib split (Dataset) or an (N, 3, S, S) float32 array; ``train``: the train split,
    needed when the config prunes and recovery is on (``RecoverySpec()`` by default; ``steps: 0`` off);
    ``space``: when given, the config is validated against it first.
    """
    from edgetune.compress._importance import IMPORTANCES, needs_gradients
    from edgetune.compress._quantize import calibration_arrays

    t_start = time.time()
    workdir = Path(workdir)
    recovery = recovery if recovery is not None else RecoverySpec()
    if space is not None:
        space.validate(config)
    module, size = model.module, int(config.input_size or model.input_size)
    if module is None:
        return _compress_onnx(model, config, calib=calib, workdir=workdir, use_cache=use_cache, t_start=t_start)
    from edgetune.spaces import layer_modules, measure_macs

    names = list(layer_modules(module))
    _check_layers(config, names)
    precision = {n: config.precision_of(n) for n in names}
    int8 = any(p == "int8" for p in precision.values())
    calib_arr = calibration_arrays(calib, size=size) if int8 else None
    calib_hash = hashlib.sha256(calib_arr.tobytes()).hexdigest() if int8 else None
    rec_spec = recovery if needs_train(recovery, config) else None
    if rec_spec is not None and (train is None or len(train) == 0):
        raise CompressionError("recovery needs the train split, but there is none: set `data.train_size` (builtin) "
                               "or `data.train_annotations` (COCO), or disable recovery with `recovery.steps: 0`.")
    if config.importance != "auto" and config.importance not in IMPORTANCES:
        raise ConfigError(f"`importance` {config.importance!r} is not registered; valid: auto, "
                          f"{', '.join(sorted(IMPORTANCES))}.")
    importance = (resolve_importance(config.importance, train, model.adapter)
                  if config.channel_prunes or _elastic(rec_spec) else config.importance)
    gradients = config.channel_prunes and needs_gradients(importance)
    train_id = _dataset_id(train) if (rec_spec or gradients) else None
    adapter = _adapter_id(model.adapter)
    key = artifact_key(source_hash=model.source_hash, input_size=size, precision=precision, config=config,
                       importance=importance, calib_hash=calib_hash, recovery=rec_spec, train_id=train_id,
                       adapter=adapter)
    if use_cache and (hit := load_cached(workdir, key)) is not None:
        log.info("artifact %s served from the cache", key[:12])
        return hit
    timings: dict[str, float] = {}
    student = copy.deepcopy(module).eval()
    pruned = None
    pkey = pruned_key(source_hash=model.source_hash, input_size=size, config=config, importance=importance,
                      recovery=rec_spec, train_id=train_id, adapter=adapter)
    if config.prunes or (_elastic(rec_spec) and config.input_size is not None):
        t = time.time()
        pruned = load_pruned(workdir, pkey, student, size) if use_cache else None
        if pruned is not None:
            timings["pruned_from_cache"] = round(time.time() - t, 2)
            log.info("pruned model %s served from the cache (no fine-tuning)", pkey[:12])
        else:
            student = copy.deepcopy(module).eval()
            pruned = _prune_and_recover(student, module, config, importance, size, train, rec_spec, timings,
                                        model.adapter, space=space, workdir=workdir, source_hash=model.source_hash)
            for old in pruned_dir(workdir, pkey).glob("export*.onnx"):  # made from other weights
                old.unlink(missing_ok=True)
            store_pruned(workdir, pkey, student, pruned)
        pruned = {k: v for k, v in pruned.items() if k != "kept"}
    export_name = "export.onnx"
    if config.scales is not None:
        names, precision = _keep_scales(student, config.scales, precision)
        export_name = f"export-s{'_'.join(map(str, config.scales))}.onnx"
    tmp = _scratch(workdir, key)
    shutil.rmtree(tmp, ignore_errors=True)
    final, params, nonzero, diff = _build_onnx(student, names, precision, config, calib_arr, tmp, size, timings,
                                               workdir if use_cache else None, export_cache=pruned_dir(workdir, pkey) / export_name
                                               if use_cache else None, shared=use_cache and pruned is None,
                                               calib_hash=calib_hash)
    macs, _ = measure_macs(student, size)
    layer_params = {n: int(m.weight.numel()) for n, m in layer_modules(student).items()}
    data = final.read_bytes()
    timings["total"] = round(time.time() - t_start, 2)
    source_params = params if pruned is None else _folded_params(module, size)
    manifest = _manifest(model, config, key, data, precision, macs, params, nonzero, calib_arr, calib_hash,
                         rec_spec, train, pruned, timings, diff, size)
    manifest["source"]["params"] = source_params
    manifest["resolved"]["layer_params"] = layer_params
    art = store(workdir, key, data, manifest)
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("compressed %s -> %s (%d bytes, %.1fs)", model.name, art.onnx_path, len(data), timings["total"])
    return art


def _keep_scales(student, scales, precision: dict) -> tuple[list[str], dict]:
    """Remove the detector's output scales not in ``scales`` (``config.scales``) from ``student`` in place;
    returns the layers left and their precisions."""
    from edgetune.models import keep_output_scales
    from edgetune.spaces import layer_modules

    try:
        removed = keep_output_scales(student, scales)
    except ValueError as exc:
        raise CompressionError(f"`scales` {list(scales)}: {exc}. Only Ultralytics detectors (YOLOv8 / YOLO11 / "
                               "YOLO26) can drop output scales; leave `scales` unset for other models.") from exc
    if removed:
        log.info("output scales %s kept: removed %s", list(scales), ", ".join(removed))
    names = list(layer_modules(student))
    return names, {n: precision[n] for n in names}


def _onnx_parity(reference: Path, candidate: Path, size: int) -> float:
    """max |candidate - reference| of two ONNX files on a seeded random input (onnxruntime, 1 thread)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    outs = []
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    for path in (reference, candidate):
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, {sess.get_inputs()[0].name: x})[0])
    if outs[0].shape != outs[1].shape:
        raise CompressionError(f"the compressed graph's output shape {outs[1].shape} differs from the source's "
                               f"{outs[0].shape}.")
    return float(np.abs(outs[1] - outs[0]).max())


def _compress_onnx(model, config: CompressionConfig, *, calib, workdir: Path, use_cache: bool,
                   t_start: float) -> Artifact:
    """Precision only, on the ONNX graph itself (``model.source: onnx``): the weighted nodes are named after
    their layers (``spaces._onnx``), then pre-processed, quantized (QDQ) / cast to fp16 per node, compacted."""
    import onnx

    from edgetune.compress._quantize import calibration_arrays
    from edgetune.spaces import discover_onnx_layers, read_onnx

    if config.prunes:
        raise CompressionError(f"model {model.name!r} is an ONNX file: it can be quantized per layer, not pruned "
                               "(no torch module). Use a builtin or python source to prune, or a dense config.")
    if model.onnx_path is None:
        raise CompressionError(f"model {model.name!r} has no torch module and no ONNX file: nothing to compress. "
                               "Load it through edgetune.models (model.source: builtin / python / onnx).")
    size = int(model.input_size)
    if config.input_size not in (None, size):
        raise CompressionError(f"model {model.name!r} is an ONNX file exported at {size} px; it cannot be exported "
                               f"again at {config.input_size} px.")
    proto = read_onnx(model.onnx_path)
    layers = discover_onnx_layers(proto)  # names the weighted nodes after their layers
    names = [lay.name for lay in layers]
    _check_layers(config, names)
    precision = {n: config.precision_of(n) for n in names}
    int8 = any(p == "int8" for p in precision.values())
    calib_arr = calibration_arrays(calib, size=size) if int8 else None
    calib_hash = hashlib.sha256(calib_arr.tobytes()).hexdigest() if int8 else None
    key = artifact_key(source_hash=model.source_hash, input_size=size, precision=precision, config=config,
                       calib_hash=calib_hash, recovery=None, train_id=None)
    if use_cache and (hit := load_cached(workdir, key)) is not None:
        log.info("artifact %s served from the cache", key[:12])
        return hit
    timings: dict[str, float] = {}
    tmp = _scratch(workdir, key)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    named = tmp / "named.onnx"
    onnx.save(proto, str(named))
    params, nonzero = onnx_sizes(proto)

    def node_map(pre_proto) -> dict[str, str]:  # the nodes already carry the layer names
        lost = sorted(set(names) - {n.name for n in pre_proto.graph.node})
        if lost:
            raise CompressionError(f"onnxruntime's pre-processing fused away {len(lost)} weighted node(s) "
                                   f"({', '.join(lost[:3])}); re-export the model with constant folding on.")
        return {n: n for n in names}

    final = _apply_precision(named, proto, names, precision, config, calib_arr, tmp, timings, node_map,
                             workdir if use_cache else None, calib_hash)
    diff = _onnx_parity(named, final, size)
    macs = {lay.name: lay.macs for lay in layers}
    data = final.read_bytes()
    timings["total"] = round(time.time() - t_start, 2)
    manifest = _manifest(model, config, key, data, precision, macs, params, nonzero, calib_arr, calib_hash, None,
                         None, None, timings, diff, size)
    graph = proto.graph  # compaction keeps the graph's input and output names
    manifest["input"]["name"], manifest["output"]["name"] = graph.input[0].name, graph.output[0].name
    manifest["source"]["params"] = params
    manifest["source"]["onnx"] = True
    manifest["resolved"]["layer_params"] = {lay.name: lay.params for lay in layers}
    art = store(workdir, key, data, manifest)
    shutil.rmtree(tmp, ignore_errors=True)
    log.info("compressed %s (ONNX) -> %s (%d bytes, %.1fs)", model.name, art.onnx_path, len(data), timings["total"])
    return art


def _folded_params(module, size: int) -> int:
    """Weights + biases of the layers once normalisations are folded (what the fp32 ONNX holds)."""
    from edgetune.spaces import layer_modules, norm_to_layer

    folded = set(norm_to_layer(module, size).values())
    return int(sum(m.weight.numel() + (m.bias.numel() if m.bias is not None else
                                       (m.weight.shape[0] if n in folded else 0))
                   for n, m in layer_modules(module).items()))


def _manifest(model, config, key, data, precision, macs, params, nonzero, calib_arr, calib_hash, rec_spec,
              train, pruned, timings, diff, size) -> dict:
    import onnx
    import onnxruntime
    import torch

    from edgetune import __version__
    from edgetune.compress.export import INPUT_NAME, OUTPUT_NAME
    from edgetune.data import PAD_VALUE

    bitops = sum(m * BITS[precision.get(n, "fp32")] ** 2 for n, m in macs.items())
    return {
        "manifest_version": MANIFEST_VERSION, "artifact_hash": key, "onnx_sha256": hashlib.sha256(data).hexdigest(),
        "config": config.model_dump(mode="json"), "config_hash": config.hash(),
        "resolved": {"precision": precision, **(pruned or {"plan": None, "channels": {}})},
        "source": {"model": model.name, "weights_sha256": model.source_hash},
        "calibration": None if calib_hash is None else {"sha256": calib_hash, "images": int(len(calib_arr)),
                                                        "method": config.quant.calibration},
        "recovery": None if rec_spec is None else {**rec_spec.identity(), "train": _dataset_id(train),
                                                   "result": (pruned or {}).get("recovery")},
        "head": model.head.to_dict(),
        "input": {"name": INPUT_NAME, "shape": [1, 3, size, size], "dtype": "float32", "layout": "NCHW",
                  "color": "RGB", "range": [0.0, 1.0], "resize": "letterbox", "pad_value": PAD_VALUE},
        "output": {"name": OUTPUT_NAME},
        "sizes": {"bytes": len(data), "zstd_bytes": zstd_size(data), "params": params, "nonzero_params": nonzero,
                  "macs": int(sum(macs.values())), "bitops": int(bitops)},
        "max_abs_diff_vs_torch": round(float(diff), 6),
        "timings_s": timings,
        "versions": {"edgetune": __version__, "torch": torch.__version__, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__, "compress": COMPRESS_VERSION},
    }
