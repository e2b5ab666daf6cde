"""Structured channel pruning, unstructured and 2:4 sparsity, checked in the exported ONNX graph."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def conv_weights(path) -> dict[str, np.ndarray]:
    """Layer-named Conv node -> its float weight (the graph is fp32 here)."""
    g = onnx.load(str(path)).graph
    inits = {i.name: i for i in g.initializer}
    return {n.name: numpy_helper.to_array(inits[n.input[1]]) for n in g.node if n.op_type == "Conv" and n.name}


def test_half_the_channels_in_the_onnx_graph(compressed, cpu_space):
    from edgetune.spaces import kept_channels

    fp32, ch50 = compressed("fp32"), compressed("ch50")
    w0, w1 = conv_weights(fp32.onnx_path), conv_weights(ch50.onnx_path)
    assert set(w0) == set(w1) and len(w0) == 99
    pruned = 0
    for g in cpu_space.groups:
        want = kept_channels(g.channels, 0.5, 8)
        for layer in g.layers:
            assert w1[layer].shape[0] == want, layer
            assert want % 8 == 0 and 0.5 * g.channels <= want <= 0.5 * g.channels + 8
            pruned += 1
    assert pruned == 93
    for i in range(3):  # the output convs keep their outputs, lose half their inputs
        assert w1[f"heads.{i}.cls_out"].shape == (6, 32, 1, 1) and w1[f"heads.{i}.box_out"].shape == (4, 32, 1, 1)
    s0, s1 = fp32.sizes, ch50.sizes
    assert 0.2 < s1["params"] / s0["params"] < 0.32  # in and out channels both halve: ~1/4 of the weights
    assert 0.2 < s1["macs"] / s0["macs"] < 0.35
    assert ch50.manifest["source"]["params"] == s0["params"]
    assert ch50.manifest["resolved"]["channels"]["stage3.0.pw.conv"] == [128, 64]


def test_pruned_graph_runs_in_onnxruntime(compressed):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(compressed("ch50").onnx_path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"images": np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)})[0]
    assert out.shape == (1, 10, 1344) and np.isfinite(out).all()


def test_unstructured_half_zeros_compress_but_do_not_shrink_the_file(compressed):
    fp32, un = compressed("fp32"), compressed("unstructured50")
    assert abs(un.sizes["bytes"] / fp32.sizes["bytes"] - 1.0) < 0.02
    assert un.sizes["zstd_bytes"] <= 0.7 * fp32.sizes["zstd_bytes"]
    assert un.sizes["params"] == fp32.sizes["params"]
    assert 0.45 < 1 - un.sizes["nonzero_params"] / un.sizes["params"] < 0.55
    w = conv_weights(un.onnx_path)
    for layer in ("stage3.0.pw.conv", "heads.1.stem.conv"):  # masks survived the recovery steps
        assert abs((w[layer] == 0).mean() - 0.5) < 0.01, layer
    assert (w["heads.0.cls_out"] != 0).all()  # the output convs are never pruned


def test_two_four_pattern_along_input_channels(compressed, gpu_space):
    art = compressed("two_four")
    w = conv_weights(art.onnx_path)
    by = {lay.name: lay for lay in gpu_space.layers}
    from edgetune.spaces import two_four_eligible

    checked = 0
    for name, arr in w.items():
        lay = by[name]
        if lay.last or not two_four_eligible(lay):  # output convs, depthwise, the 3-channel stem
            assert (arr != 0).mean() > 0.9, name
            continue
        cout, cin = arr.shape[:2]
        quads = arr.transpose(0, 2, 3, 1).reshape(cout, -1, cin // 4, 4)  # 4 consecutive input channels
        assert ((quads != 0).sum(-1) <= 2).all(), name
        assert (quads != 0).sum(-1).mean() > 1.9, name  # and not much more than half is gone
        checked += 1
    assert checked == 99 - 25 - 6 - 1
    assert 0.45 < 1 - art.sizes["nonzero_params"] / art.sizes["params"] < 0.5


def test_a_faded_cut_changes_nothing(det_s, cpu_space):
    """Progressive pruning: once SoftCut has faded the doomed channels to zero, removing them leaves the
    output unchanged (and while they are still on, the model is the original one)."""
    import copy

    import torch

    from edgetune.compress._importance import make_importance
    from edgetune.compress._prune import SoftCut, channel_drops, cut_channels
    from edgetune.compress._schedule import schedule
    from edgetune.spaces._discover import dependency_graph, discover_groups, discover_layers

    size = det_s.input_size
    student = copy.deepcopy(det_s.module).eval()
    dg = dependency_graph(student, size)
    layers = discover_layers(student, size, dg=dg)
    plan = schedule(cpu_space.config_from({d.name: "channel:0.5" if "channel:0.5" in d.choices else "dense"
                                           if d.kind == "sparsity" else "fp32" for d in cpu_space.dimensions}),
                    discover_groups(student, size, layers, dg=dg), layers)
    drops = channel_drops(student, dg, plan, make_importance("magnitude"))
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    soft = SoftCut(student, dg, drops)
    with torch.no_grad():
        full = det_s.module(x)
        assert torch.allclose(student(x), full, atol=1e-5)  # factor 1: the original model
        soft.factor = 0.0
        faded = student(x)
        assert not torch.allclose(faded, full, atol=1e-3)
        soft.remove()
        changed = cut_channels(student, dg, drops)
        assert changed["stage3.0.pw.conv"][:2] == (128, 64)
        assert torch.allclose(student(x), faded, atol=1e-4, rtol=1e-4)
