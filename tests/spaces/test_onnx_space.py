"""ONNX-only models (``model.source: onnx``): layers discovered on the graph, precision search, no torch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def test_layers_of_an_exported_detector_match_the_torch_discovery(det_s, det_s_onnx):
    """Names, kinds, channels, params, MACs and first/last read off the graph equal the torch module's."""
    from edgetune.spaces import discover_layers
    from edgetune.spaces._onnx import discover_onnx_layers

    torch_layers = {lay.name: lay for lay in discover_layers(det_s.module, det_s.input_size)}
    onnx_layers = {lay.name: lay for lay in discover_onnx_layers(onnx.load(str(det_s_onnx)))}
    assert set(onnx_layers) == set(torch_layers) and len(onnx_layers) == 99
    for name, t in torch_layers.items():
        o = onnx_layers[name]
        assert (o.kind, o.in_channels, o.out_channels, o.groups, o.kernel, o.macs, o.first, o.last) == (
            t.kind, t.in_channels, t.out_channels, t.groups, t.kernel, t.macs, t.first, t.last), name
    # BatchNorm is folded in the export: each conv holds a bias the torch conv does not
    assert all(onnx_layers[n].params >= t.params for n, t in torch_layers.items())


def _unnamed_graph():
    """images -> conv -> relu -> conv -> flatten -> gemm, with no node names and anonymous weights."""
    rng = np.random.default_rng(0)
    shapes = (("w1", (8, 3, 3, 3)), ("w2", (8, 8, 1, 1)), ("fc", (10, 8 * 16 * 16)), ("fb", (10,)))
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n) for n, s in shapes]
    nodes = [helper.make_node("Conv", ["images", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["b"]),
             helper.make_node("Flatten", ["b"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "fb"], ["output"], transB=1)]
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)


def test_unnamed_nodes_get_unique_names_kinds_and_macs():
    from edgetune.spaces._onnx import discover_onnx_layers

    layers = discover_onnx_layers(_unnamed_graph())
    assert [lay.name for lay in layers] == ["Conv_0", "Conv_2", "Gemm_4"]
    conv1, conv2, fc = layers
    assert (conv1.kind, conv1.macs, conv1.first, conv1.last) == ("dense", 8 * 16 * 16 * 27, True, False)
    assert (conv2.kind, conv2.macs, conv2.first, conv2.last) == ("pointwise", 8 * 16 * 16 * 8, False, False)
    assert (fc.kind, fc.in_channels, fc.out_channels, fc.macs, fc.params, fc.last) == (
        "linear", 2048, 10, 20480, 20490, True)


def test_a_corrupt_onnx_file_is_a_clear_error(tmp_path):
    from edgetune.errors import ModelError
    from edgetune.spaces._onnx import read_onnx

    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelError, match="broken.onnx.*not a valid ONNX model"):
        read_onnx(bad)
