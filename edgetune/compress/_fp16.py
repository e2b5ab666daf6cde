"""fp16 for chosen layers, in the ONNX graph, with casts at the region boundaries.

The chosen weighted nodes run in fp16 (their weights and biases are stored as fp16), together with the
element-wise activations that only read fp16 outputs (Conv -> Relu stays one fp16 region). Every tensor
that enters the region gets one Cast to fp16, every tensor that leaves it one Cast back to fp32, so the
graph's inputs and outputs stay fp32 and TensorRT (strongly typed) runs exactly what the config chose.
"""

from __future__ import annotations

import numpy as np

from edgetune.errors import CompressionError

__all__ = ["convert_nodes_fp16", "FP16_FOLLOWERS"]

FP16_FOLLOWERS = ("Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Clip", "Add", "Mul", "Concat")


def convert_nodes_fp16(model_proto, node_names: set[str] | list[str]):
    """Run ``node_names`` (weighted nodes) and the activations that follow them in fp16, in place."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model_proto.graph
    nodes = {n.name: n for n in graph.node}
    missing = sorted(set(node_names) - set(nodes))
    if missing:
        raise CompressionError(f"fp16: ONNX nodes {missing[:5]} are not in the graph.")
    region: set[str] = set(node_names)
    producers = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    changed = True
    while changed:  # grow the region over followers whose every non-constant input is fp16
        changed = False
        for n in graph.node:
            if n.name in region or n.op_type not in FP16_FOLLOWERS:
                continue
            ins = [i for i in n.input if i and i not in inits]
            if ins and all(producers.get(i) is not None and producers[i].name in region for i in ins):
                region.add(n.name)
                changed = True
    outputs = {o.name for o in graph.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    new_inits, casts, renamed = [], [], {}
    for n in graph.node:
        if n.name not in region:
            continue
        for k, name in enumerate(n.input):
            if not name:
                continue
            if name in inits and inits[name].data_type == TensorProto.FLOAT:
                arr = numpy_helper.to_array(inits[name])
                if np.abs(arr).max(initial=0.0) > 65504.0:
                    raise CompressionError(f"fp16: initializer {name!r} of node {n.name!r} overflows fp16; keep "
                                           "that layer fp32.")
                fp16 = f"{name}_fp16"
                if fp16 not in renamed:
                    new_inits.append(numpy_helper.from_array(arr.astype(np.float16), fp16))
                    renamed[fp16] = True
                n.input[k] = fp16
            elif name not in inits and (producers.get(name) is None or producers[name].name not in region):
                cast = f"{name}_to_fp16"
                if cast not in renamed:
                    casts.append(helper.make_node("Cast", [name], [cast], name=f"{cast}_cast", to=TensorProto.FLOAT16))
                    renamed[cast] = True
                n.input[k] = cast
        for k, out in enumerate(n.output):
            leaves = out in outputs or any(c.name not in region for c in consumers.get(out, []))
            if not leaves:
                continue
            inner = f"{out}_fp16"
            n.output[k] = inner
            for c in consumers.get(out, []):
                if c.name in region:
                    c.input[:] = [inner if i == out else i for i in c.input]
            casts.append(helper.make_node("Cast", [inner], [out], name=f"{out}_to_fp32_cast", to=TensorProto.FLOAT))
    graph.initializer.extend(new_inits)
    used = {i for n in graph.node for i in n.input}
    for name in [i for i in inits if i not in used]:
        graph.initializer.remove(inits[name])
    graph.node.extend(casts)
    _toposort(graph)
    del graph.value_info[:]  # stale fp32 shapes/types; onnxruntime re-infers
    return model_proto


def _toposort(graph) -> None:
    known = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        rest = []
        for n in pending:
            if all(i in known for i in n.input):
                ordered.append(n)
                known.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise CompressionError("fp16: the converted graph has a cycle or a dangling input.")
        pending = rest
    copies = [type(n)() for n in ordered]
    for c, n in zip(copies, ordered, strict=True):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)
