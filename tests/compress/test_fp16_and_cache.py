"""fp16 regions with boundary casts; the content-addressed artifact cache."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def tiny_graph():
    """images -> conv_a -> relu -> conv_b -> output (8 channels, 3x3)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
             for n, s in (("wa", (8, 3, 3, 3)), ("ba", (8,)), ("wb", (8, 8, 3, 3)), ("bb", (8,)))]
    nodes = [helper.make_node("Conv", ["images", "wa", "ba"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "wb", "bb"], ["output"], name="conv_b", pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def run(model, x):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]


def test_fp16_region_has_one_cast_in_and_one_out():
    from edgetune.compress._fp16 import convert_nodes_fp16

    x = np.random.default_rng(1).random((1, 3, 16, 16), dtype=np.float32)
    ref = run(tiny_graph(), x)
    m = convert_nodes_fp16(tiny_graph(), {"conv_a"})
    casts = [n for n in m.graph.node if n.op_type == "Cast"]
    assert [c.attribute[0].i for c in casts] == [TensorProto.FLOAT16, TensorProto.FLOAT] or sorted(
        c.attribute[0].i for c in casts) == sorted([TensorProto.FLOAT16, TensorProto.FLOAT])
    to32 = next(c for c in casts if c.attribute[0].i == TensorProto.FLOAT)
    assert to32.output[0] == "r"  # the Relu joined the fp16 region; conv_b reads fp32
    types = {i.name: i.data_type for i in m.graph.initializer}
    assert types["wa_fp16"] == TensorProto.FLOAT16 and types["wb"] == TensorProto.FLOAT and "wa" not in types
    out = run(m, x)
    assert out.dtype == np.float32 and np.abs(out - ref).max() < 2e-2 * np.abs(ref).max()
    both = convert_nodes_fp16(tiny_graph(), {"conv_a", "conv_b"})
    assert sum(n.op_type == "Cast" for n in both.graph.node) == 2  # in at the input, out at the output


def test_fp16_uniform_halves_the_file_and_runs(compressed):
    fp32, fp16 = compressed("fp32"), compressed("fp16-uniform")
    assert 0.45 < fp16.sizes["bytes"] / fp32.sizes["bytes"] < 0.55
    g = onnx.load(str(fp16.onnx_path)).graph
    inits = {i.name: i for i in g.initializer}
    convs = [n for n in g.node if n.op_type == "Conv"]
    assert len(convs) == 99 and all(inits[n.input[1]].data_type == TensorProto.FLOAT16 for n in convs)
    assert fp16.manifest["max_abs_diff_vs_torch"] < 2.0  # pixels, on boxes up to 256 px
    assert fp16.sizes["bitops"] * 4 == fp32.sizes["bitops"]


def test_same_inputs_same_hash_and_a_cache_hit(compressed, det_s, shapes_calib, cpu_space, tmp_path):
    import hashlib
    import shutil

    from edgetune.compress import compress
    from edgetune.compress._quantize import calibration_arrays

    mixed = compressed("mixed")
    shutil.copytree(mixed.onnx_path.parent, tmp_path / mixed.hash)
    cfg = mixed.config.model_copy(update={"name": "same point, another label"})
    hit = compress(det_s, cfg, calib=shapes_calib, workdir=tmp_path)
    assert hit.from_cache and hit.hash == mixed.hash and hit.onnx_bytes == mixed.onnx_bytes
    manifest = json.loads((tmp_path / mixed.hash / "manifest.json").read_text())
    calib = calibration_arrays(shapes_calib, size=256)
    assert manifest["calibration"]["sha256"] == hashlib.sha256(calib.tobytes()).hexdigest()
    assert manifest["source"]["weights_sha256"] == det_s.source_hash
    assert manifest["input"]["shape"] == [1, 3, 256, 256] and manifest["head"]["num_classes"] == 6
    assert manifest["config_hash"] == mixed.config.hash() and manifest["onnx_sha256"] == hashlib.sha256(
        mixed.onnx_bytes).hexdigest()
    # a corrupt cache entry is detected and rebuilt, to the same bytes
    (tmp_path / mixed.hash / "model.onnx").write_bytes(b"garbage")
    rebuilt = compress(det_s, cfg, calib=shapes_calib, workdir=tmp_path)
    assert not rebuilt.from_cache and rebuilt.onnx_bytes == mixed.onnx_bytes


def test_the_hash_covers_weights_config_calibration_and_recovery(cpu_space):
    from edgetune.compress import RecoverySpec, artifact_key

    cfg = cpu_space.config_from({d.name: "int8" if d.kind == "precision" else "channel:0.25" if "channel:0.25" in
                                 d.choices else "dense" for d in cpu_space.dimensions})
    precision = {n: cfg.precision_of(n) for n in cpu_space.layer_names}
    base = dict(source_hash="a" * 64, input_size=256, precision=precision, config=cfg, calib_hash="c" * 64,
                recovery=RecoverySpec(), train_id="t")
    key = artifact_key(**base)
    assert key == artifact_key(**base)
    for change in ({"source_hash": "b" * 64}, {"calib_hash": "d" * 64}, {"recovery": RecoverySpec(steps=10)},
                   {"train_id": "u"}, {"config": cfg.model_copy(update={"importance": "lamp"})},
                   {"precision": {**precision, "stage2.0.conv": "fp32"}}):
        assert artifact_key(**{**base, **change}) != key, change
    fp32 = {n: "fp32" for n in precision}
    dense = cfg.model_copy(update={"sparsity": {}})
    # calibration data does not matter when nothing is int8
    assert artifact_key(**{**base, "precision": fp32, "config": dense, "recovery": None}) == artifact_key(
        **{**base, "precision": fp32, "config": dense, "recovery": None, "calib_hash": None})
    # int8 placed for OpenVINO is another artifact; the placement of a config without int8 is not
    ov = cfg.model_copy(update={"quant": cfg.quant.for_runtime("openvino")})
    assert ov.quant.placement == "openvino" and artifact_key(**{**base, "config": ov}) != key
    assert ov.hash() != cfg.hash() and cfg.quant.identity() == cfg.quant.model_dump(mode="json", exclude={"placement"})
    assert artifact_key(**{**base, "precision": fp32, "config": dense, "recovery": None}) == artifact_key(
        **{**base, "precision": fp32, "recovery": None,
           "config": dense.model_copy(update={"quant": ov.quant})})


def test_fp32_does_not_depend_on_calibration_data(det_s, shapes_calib, cpu_space, compressed, workdir):
    from edgetune.compress import compress

    again = compress(det_s, cpu_space.baseline("fp32"), calib=None, workdir=workdir)
    assert again.from_cache and again.hash == compressed("fp32").hash
    with pytest.raises(Exception, match="calib"):
        compress(det_s, cpu_space.baseline("int8-uniform"), calib=shapes_calib.subset([]), workdir=workdir)


@pytest.mark.slow
def test_precision_variants_reuse_the_pruned_and_recovered_model(det_s, shapes_calib, cpu_space, train_split,
                                                                 tmp_path):
    """The fine-tuning is cached by the sparsity part of the config: an int8 variant of a pruned fp32 point
    reloads the pruned weights (no recovery) and its graph has the same channel counts."""
    import onnx

    from edgetune.compress import RecoverySpec, compress

    values = {d.name: "channel:0.5" if "channel:0.5" in d.choices else "dense" if d.kind == "sparsity" else "fp32"
              for d in cpu_space.dimensions}
    fp32 = cpu_space.config_from(values)
    int8 = cpu_space.config_from({k: ("int8" if v == "fp32" else v) for k, v in values.items()})
    rec = RecoverySpec(steps=3, batch=4, train_images=32)
    a = compress(det_s, fp32, calib=shapes_calib, workdir=tmp_path, train=train_split, recovery=rec)
    assert "recover" in a.manifest["timings_s"] and a.manifest["resolved"]["importance"] == "taylor"
    b = compress(det_s, int8, calib=shapes_calib, workdir=tmp_path, train=train_split, recovery=rec)
    assert b.hash != a.hash and "recover" not in b.manifest["timings_s"]
    assert "pruned_from_cache" in b.manifest["timings_s"]
    assert b.manifest["resolved"]["channels"] == a.manifest["resolved"]["channels"]
    assert b.manifest["recovery"]["result"] == a.manifest["recovery"]["result"]

    def widths(path):
        return sorted(int(t.dims[0]) for t in onnx.load(str(path)).graph.initializer if len(t.dims) == 4)

    assert widths(a.onnx_path) == widths(b.onnx_path)
    # a torn pruned-model entry is recomputed, not trusted
    import shutil

    for d in (tmp_path / "pruned").iterdir():
        (d / "weights.pt").write_bytes(b"torn")
    shutil.rmtree(tmp_path / b.hash)
    c = compress(det_s, int8, calib=shapes_calib, workdir=tmp_path, train=train_split, recovery=rec)
    assert "recover" in c.manifest["timings_s"] and c.hash == b.hash


def test_a_wall_clock_cap_covers_both_halves_of_a_progressive_recovery(det_s, channel_25, train_split):
    """``budget_s`` is checked by what it does, never by the seconds it took: the fine-tuning ends early,
    says so, and the second half (after the cut) gets only what the first half left of the cap."""
    import copy

    from edgetune.compress import RecoverySpec
    from edgetune.compress._compress import _prune_and_recover

    spec = RecoverySpec(steps=10_000, batch=2, train_images=16, budget_s=1.0)
    out = _prune_and_recover(copy.deepcopy(det_s.module), det_s.module, channel_25, "magnitude", det_s.input_size,
                             train_split, spec, {}, det_s.adapter)
    result = out["recovery"]
    assert result["stopped"] == "budget_s" and result["steps_asked"] == 10_000
    assert 0 < result["faded_steps"] < int(10_000 * spec.progressive)  # the fade itself was cut short
    assert result["steps"] == result["faded_steps"]  # nothing left for the second half
    assert out["channels"]["stage3.0.pw.conv"] == [128, 96]  # and the channels were still cut


def test_recovery_that_runs_its_schedule_says_so(det_s, channel_25, train_split):
    import copy

    from edgetune.compress import RecoverySpec
    from edgetune.compress._compress import _prune_and_recover

    spec = RecoverySpec(steps=4, batch=2, train_images=16)
    result = _prune_and_recover(copy.deepcopy(det_s.module), det_s.module, channel_25, "magnitude", det_s.input_size,
                                train_split, spec, {}, det_s.adapter)["recovery"]
    assert result["stopped"] == "steps" and result["steps"] == result["steps_asked"] == 4
    assert result["faded_steps"] == 2


def test_two_processes_storing_the_same_artifact_keep_one_entry_and_build_apart(tmp_path):
    """Processes sharing a workdir (Ray workers, pytest-xdist) may build one key at once: each builds in its
    own scratch directory, and the second store of the same bytes keeps the entry the first one wrote (a
    reader of it is never cut off); an entry with other bytes (a torn or stale one) is replaced."""
    import hashlib
    import threading

    from edgetune.compress._artifact import store
    from edgetune.compress._compress import _scratch

    seen = []
    t = threading.Thread(target=lambda: seen.append(_scratch(tmp_path, "k")))
    t.start()
    t.join()
    assert seen[0] != _scratch(tmp_path, "k") and seen[0].parent == _scratch(tmp_path, "k").parent

    def manifest(data):
        return {"onnx_sha256": hashlib.sha256(data).hexdigest(), "artifact_hash": "k"}

    first = store(tmp_path, "k", b"onnx-bytes", manifest(b"onnx-bytes"))
    inode = first.onnx_path.stat().st_ino
    second = store(tmp_path, "k", b"onnx-bytes", manifest(b"onnx-bytes"))
    assert second.onnx_path == first.onnx_path and first.onnx_path.stat().st_ino == inode
    assert not second.from_cache  # it was built, whoever stored the bytes first
    assert not list(tmp_path.glob(".k.*.tmp"))
    other = store(tmp_path, "k", b"other-bytes", manifest(b"other-bytes"))
    assert other.onnx_path.read_bytes() == b"other-bytes"


def test_the_train_split_identity_covers_its_ground_truth():
    """The builtin data of another seed names its files alike: its boxes tell it apart (the elastic weights
    shipped for the demo must not serve another seed's data)."""
    from edgetune.compress._compress import _dataset_id
    from edgetune.data.shapes import shapes_split

    a, b = shapes_split("train", 4, seed=0), shapes_split("train", 4, seed=1)
    assert [r.id for r in a.records] == [r.id for r in b.records] and a.name == b.name
    assert _dataset_id(a) != _dataset_id(b) and _dataset_id(a) == _dataset_id(shapes_split("train", 4, seed=0))
