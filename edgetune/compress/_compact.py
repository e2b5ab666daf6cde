"""Make the final ONNX graph small and self-describing before it becomes an artifact.

- each weighted node is renamed after its torch layer (``stage2.1.cv1.conv``), so a QDQ graph, a
  TensorRT layer report and the manifest speak the same names;
- every other node and every internal tensor gets a short name (the exporter's and the quantizer's
  names took ~15% of an int8 file); graph inputs and outputs keep theirs;
- exporter metadata (stack traces with local paths), doc strings and stale ``value_info`` are dropped;
- all-zero zero-points of symmetric int8 weights and int32 biases are removed (ONNX's default is 0);
- only weighted nodes keep a name (node names are optional in ONNX).
"""

from __future__ import annotations

__all__ = ["compact"]


def _has_subgraphs(graph) -> bool:
    from onnx import AttributeProto

    return any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for n in graph.node for a in n.attribute)


def _drop_zero_points(graph) -> None:
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    uses: dict[str, int] = {}
    for n in graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    for n in graph.node:
        if n.op_type != "DequantizeLinear" or len(n.input) < 3 or n.input[0] not in inits:
            continue
        zp, x = inits.get(n.input[2]), inits[n.input[0]]
        if zp is None or zp.data_type != x.data_type or x.data_type not in (TensorProto.INT8, TensorProto.INT32):
            continue
        if numpy_helper.to_array(zp).any():
            continue
        uses[n.input[2]] -= 1
        if uses[n.input[2]] == 0:
            graph.initializer.remove(zp)
        del n.input[2]


def _base36(i: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        i, r = divmod(i, 36)
        out = digits[r] + out
        if not i:
            return "_" + out


def compact(model_proto, layer_nodes: dict[str, str]):
    """Rename and strip ``model_proto`` in place (see the module docstring); returns it."""
    graph = model_proto.graph
    if _has_subgraphs(graph):
        return model_proto  # control flow: names are scoped across subgraphs; leave the graph as it is
    _drop_zero_points(graph)
    node_to_layer = {v: k for k, v in layer_nodes.items()}
    keep = {i.name for i in graph.input} | {o.name for o in graph.output} | {""}
    tensor: dict[str, str] = {}

    def short(name: str) -> str:
        if name in keep:
            return name
        if name not in tensor:
            tensor[name] = _base36(len(tensor))
        return tensor[name]

    for i in graph.initializer:
        i.name = short(i.name)
        i.doc_string = ""
    for n in graph.node:
        n.name = node_to_layer.get(n.name, "")
        n.input[:] = [short(x) for x in n.input]
        n.output[:] = [short(x) for x in n.output]
        n.doc_string = ""
        del n.metadata_props[:]
    del graph.value_info[:]
    del model_proto.metadata_props[:]
    graph.doc_string = ""
    model_proto.doc_string = ""
    return model_proto
