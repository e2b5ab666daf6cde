"""Map torch layer names to ONNX node names (for ``nodes_to_exclude`` and fp16), and read QDQ graphs.

The dynamo exporter names each conv's weight initializer after the torch parameter
(``stage2.1.cv1.conv.weight``), also when BatchNorm was folded into it, and ``quant_pre_process`` keeps
node names but drops the exporter's metadata. So the map is built from the weight initializer names,
with the exporter's name scopes (a folded conv carries its BatchNorm's scope) as the fallback, and it
is always built on the graph that is quantized (the pre-processed one).
"""

from __future__ import annotations

from edgetune.device_agents.protocol import WEIGHTED_OPS  # one list for compress and the agent's report
from edgetune.errors import CompressionError

__all__ = ["WEIGHTED_OPS", "layer_node_map", "quantized_nodes", "weight_of", "tail_nodes"]


def _producers(graph) -> dict:
    return {o: n for n in graph.node for o in n.output}


def weight_of(graph, node, producers: dict | None = None) -> str | None:
    """The initializer feeding ``node``'s weight input, looking through DequantizeLinear / Cast."""
    producers = producers if producers is not None else _producers(graph)
    inits = {i.name for i in graph.initializer}
    name = node.input[1] if len(node.input) > 1 else None
    for _ in range(3):
        if name is None or name in inits:
            return name
        p = producers.get(name)
        if p is None or p.op_type not in ("DequantizeLinear", "Cast"):
            return None
        name = p.input[0]
    return name


def _layer_from_weight(init: str, layers: set[str]) -> str | None:
    for suffix in (".weight", ".weight_quantized", ".weight_fp16"):
        if init.endswith(suffix) and init[: -len(suffix)] in layers:
            return init[: -len(suffix)]
    return None


def layer_node_map(model_proto, layer_names, *, scopes: dict[str, str] | None = None,
                   bn_to_layer: dict[str, str] | None = None) -> dict[str, str]:
    """torch layer name -> ONNX node name for every layer in ``layer_names``.

    ``scopes`` (ONNX node name -> torch module path, from the exported graph's metadata) and
    ``bn_to_layer`` (BatchNorm path -> the conv it was folded into) resolve nodes whose weight name does
    not say. Raises CompressionError naming the layers that have no node.
    """
    layers = set(layer_names)
    graph = model_proto.graph
    producers = _producers(graph)
    out: dict[str, str] = {}
    for node in graph.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        w = weight_of(graph, node, producers)
        layer = _layer_from_weight(w, layers) if w else None
        if layer is None and scopes and node.name in scopes:
            scope = scopes[node.name]
            layer = scope if scope in layers else (bn_to_layer or {}).get(scope)
        if layer is not None:
            if layer in out and out[layer] != node.name:
                raise CompressionError(f"layer {layer!r} maps to two ONNX nodes ({out[layer]}, {node.name}); "
                                       "the model reuses a module, which per-layer compression cannot express.")
            out[layer] = node.name
    missing = sorted(layers - set(out))
    if missing:
        raise CompressionError(
            f"{len(missing)} layer(s) have no node in the ONNX graph: {', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}. The exporter renamed them; file a bug with the model.")
    return out


def quantized_nodes(model_proto) -> dict[str, bool]:
    """Weighted node name -> True when its weight comes through DequantizeLinear (int8 QDQ)."""
    graph = model_proto.graph
    producers = _producers(graph)
    out = {}
    for node in graph.node:
        if node.op_type in WEIGHTED_OPS and len(node.input) > 1:
            p = producers.get(node.input[1])
            out[node.name] = p is not None and p.op_type == "DequantizeLinear"
    return out


def tail_nodes(model_proto) -> list[str]:
    """Names of the nodes after the last weighted layers (no weighted node downstream): the decode tail
    (box arithmetic, concat of boxes and scores), which int8 must not touch."""
    graph = model_proto.graph
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    feeds: dict[int, bool] = {}
    for n in reversed(_toposorted(graph)):
        feeds[id(n)] = any(c.op_type in WEIGHTED_OPS or feeds.get(id(c), False)
                           for o in n.output for c in consumers.get(o, []))
    return [n.name for n in graph.node if n.op_type not in WEIGHTED_OPS and not feeds[id(n)]]


def _toposorted(graph) -> list:
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, out = list(graph.node), []
    while pending:
        rest = [n for n in pending if not all(i in known for i in n.input)]
        for n in pending:
            if all(i in known for i in n.input):
                out.append(n)
                known.update(n.output)
        if len(rest) == len(pending):
            return out + rest  # dangling inputs: keep the file order for the rest
        pending = rest
    return out
