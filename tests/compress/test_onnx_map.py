"""The torch layer -> ONNX node map, built and checked on the pre-processed graph."""

from __future__ import annotations

import onnx
import pytest
from onnx import numpy_helper

from edgetune.errors import CompressionError


@pytest.fixture(scope="module")
def graphs(det_s_onnx, tmp_path_factory):
    from edgetune.compress._quantize import preprocess

    pre = preprocess(det_s_onnx, tmp_path_factory.mktemp("pre") / "pre.onnx")
    return onnx.load(str(det_s_onnx)), onnx.load(str(pre))


def test_every_layer_maps_to_its_conv_after_preprocessing(graphs, det_s):
    from edgetune.compress import layer_node_map
    from edgetune.compress._onnx_map import weight_of
    from edgetune.spaces._discover import layer_modules

    exported, pre = graphs
    mods = layer_modules(det_s.module)
    mapping = layer_node_map(pre, list(mods))
    assert len(mapping) == 99 and len(set(mapping.values())) == 99
    nodes = {n.name: n for n in pre.graph.node}
    inits = {i.name: i for i in pre.graph.initializer}
    for layer, node_name in mapping.items():
        node = nodes[node_name]
        assert node.op_type == "Conv"
        w = numpy_helper.to_array(inits[weight_of(pre.graph, node)])
        assert w.shape == tuple(mods[layer].weight.shape), layer  # the folded weight of exactly that conv
    # node names survive pre-processing: the map on the exported graph is the same
    assert layer_node_map(exported, list(mods)) == mapping


def test_scope_fallback_when_weight_names_say_nothing(graphs, det_s):
    from edgetune.compress import layer_node_map, node_module_paths
    from edgetune.spaces._discover import layer_modules, norm_to_layer

    exported, pre = graphs
    names = list(layer_modules(det_s.module))
    blind = onnx.ModelProto()
    blind.CopyFrom(pre)
    renamed = {i.name: f"w{k}" for k, i in enumerate(blind.graph.initializer)}
    for i in blind.graph.initializer:
        i.name = renamed[i.name]
    for n in blind.graph.node:
        n.input[:] = [renamed.get(x, x) for x in n.input]
    with pytest.raises(CompressionError, match="99 layer"):
        layer_node_map(blind, names)
    bn = norm_to_layer(det_s.module, det_s.input_size)
    assert bn["stem.bn"] == "stem.conv" and bn["stage1.1.m.0.cv2.dw.bn"] == "stage1.1.m.0.cv2.dw.conv"
    fallback = layer_node_map(blind, names, scopes=node_module_paths(exported), bn_to_layer=bn)
    assert fallback == layer_node_map(pre, names)


def test_decode_tail_is_found(graphs):
    from edgetune.compress._onnx_map import tail_nodes

    _, pre = graphs
    tail = set(tail_nodes(pre))
    ops = {n.op_type for n in pre.graph.node if n.name in tail}
    assert "Conv" not in ops and {"Concat", "Sigmoid", "Softplus"} <= ops
    out = pre.graph.output[0].name
    assert next(n for n in pre.graph.node if out in n.output).name in tail
