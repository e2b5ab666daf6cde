"""Discover the compressible layers of an ONNX graph (``model.source: onnx``: no torch module).

An ONNX-only model can be searched for precision, not pruned. Its layers are the weighted nodes (Conv,
ConvTranspose, Gemm, MatMul whose weight is an initializer), named after their weight (a torch export
calls it ``stage2.1.cv1.conv.weight``: the layer is ``stage2.1.cv1.conv``, as for a torch source), else
after the node, else ``<op>_<index>``; :func:`name_layers` writes those names onto the nodes, so that
quantization, the compacted artifact and the manifest use them. MACs come from ONNX shape inference at
the graph's (fixed) input shape. ``first`` / ``last``: no weighted node upstream / downstream. The tie
keys are the dotted name's first part (*stage*) and first two parts (*block*).
"""

from __future__ import annotations

import math
from pathlib import Path

from edgetune.errors import ModelError
from edgetune.spaces._layers import Layer, conv_kind

__all__ = ["name_layers", "discover_onnx_layers", "read_onnx"]

WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def read_onnx(path: str | Path):
    """The ModelProto of ``path``; a ModelError names the file and what is wrong with it."""
    import onnx

    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, OSError ...
        raise ModelError(f"'{path}' is not a valid ONNX model ({type(exc).__name__}: {exc}). Re-export it "
                         "(torch.onnx.export) or check the file is complete.") from exc
    return proto


def _weight(node, inits: dict):
    """The weight initializer of a weighted node (Conv: input 1; Gemm / MatMul: the constant operand)."""
    if node.op_type in ("Conv", "ConvTranspose"):
        return inits.get(node.input[1]) if len(node.input) > 1 else None
    for name in node.input[:2][::-1]:
        if name in inits and len(inits[name].dims) == 2:
            return inits[name]
    return None


def _layer_name(node, weight, index: int) -> str:
    for suffix in (".weight", "_weight"):
        if weight.name.endswith(suffix) and len(weight.name) > len(suffix):
            return weight.name[: -len(suffix)]
    if node.name:
        return node.name.strip("/").replace("/", ".")
    return f"{node.op_type}_{index}"


def name_layers(proto) -> dict[str, str]:
    """Rename the weighted nodes of ``proto`` (in place) after their layers; returns layer -> node name
    (the same strings). Unnamed and duplicate names get a unique suffix."""
    inits = {i.name: i for i in proto.graph.initializer}
    out: dict[str, str] = {}
    for i, node in enumerate(proto.graph.node):
        if node.op_type not in WEIGHTED:
            continue
        w = _weight(node, inits)
        if w is None:
            continue
        name = base = _layer_name(node, w, i)
        k = 1
        while name in out:
            k += 1
            name = f"{base}_{k}"
        node.name = name
        out[name] = name
    taken = set(out)
    for i, node in enumerate(proto.graph.node):  # other nodes keep theirs unless they collide
        if node.name in taken and node.op_type not in WEIGHTED:
            node.name = f"{node.name}__{i}"
    return out


def _edges(graph, layers: set[str]) -> tuple[set[str], set[str]]:
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)

    def reach(start, step) -> bool:  # a weighted node beyond ``start``, walking ``step``
        seen, todo = set(), list(step(start))
        while todo:
            n = todo.pop()
            if id(n) in seen:
                continue
            seen.add(id(n))
            if n.name in layers:
                return True
            todo.extend(step(n))
        return False

    def up(n):
        return [producers[x] for x in n.input if x in producers]

    def down(n):
        return [c for o in n.output for c in consumers.get(o, [])]

    nodes = [n for n in graph.node if n.name in layers]
    return ({n.name for n in nodes if not reach(n, up)}, {n.name for n in nodes if not reach(n, down)})


def discover_onnx_layers(proto) -> list[Layer]:
    """The layers of a graph whose weighted nodes :func:`name_layers` has named (see the module docstring)."""
    import onnx

    names = name_layers(proto)
    if not names:
        raise ModelError("the ONNX model has no Conv / Gemm / MatMul node with a constant weight: nothing to "
                         "quantize per layer.")
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
    except Exception as exc:
        raise ModelError(f"ONNX shape inference failed on the model ({exc}); export it with a fixed input "
                         "shape.") from exc
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]
              for v in (*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input)}
    inits = {i.name: i for i in proto.graph.initializer}
    first, last = _edges(proto.graph, set(names))
    out: list[Layer] = []
    for node in proto.graph.node:
        if node.name not in names:
            continue
        w = list(_weight(node, inits).dims)
        groups = next((a.i for a in node.attribute if a.name == "group"), 1)
        if node.op_type in ("Conv", "ConvTranspose"):
            cout, cin, kernel = w[0], w[1] * groups, tuple(w[2:]) or (1,)
            if node.op_type == "ConvTranspose":
                cout, cin = w[1] * groups, w[0]
            per_out = (cin // groups) * math.prod(kernel)
            kind = conv_kind(groups, cin, kernel)
        else:
            trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
            cin, cout = (w[1], w[0]) if trans_b else (w[0], w[1])
            kernel, per_out, kind = (1,), cin, "linear"
        out_shape = shapes.get(node.output[0])
        out_elems = math.prod(out_shape[1:]) if out_shape and len(out_shape) > 1 else cout
        bias = inits.get(node.input[2]) if len(node.input) > 2 and node.op_type != "MatMul" else None
        params = math.prod(w) + (math.prod(bias.dims) if bias is not None else 0)
        parts = node.name.split(".")
        stage = parts[0]
        block = ".".join(parts[:2]) if len(parts) > 2 else stage
        out.append(Layer(name=node.name, kind=kind, in_channels=int(cin), out_channels=int(cout), groups=int(groups),
                         kernel=tuple(int(k) for k in kernel), params=int(params),
                         macs=int(out_elems * per_out), first=node.name in first, last=node.name in last,
                         stage=stage, block=block))
    return out
