"""Discover the compressible layers of a torch model and its channel-coupling groups (imports torch).

Layers are the ``Conv{1,2,3}d`` / ``Linear`` modules, named by their module path. Their MACs are
measured by forward hooks at the model's input size. Coupling groups come from Torch-Pruning's
dependency graph: layers tied by residual adds or concats share one group (one ratio); a depthwise conv
follows its producer. The layers whose output reaches the model's output without passing through
another layer (``last``: the detection-head output convs, a classifier) are never channel-pruned.
"""

from __future__ import annotations

from collections.abc import Callable

from edgetune._logging import get_logger
from edgetune.errors import CompressionError
from edgetune.spaces._layers import Group, Layer, conv_kind

log = get_logger(__name__)

__all__ = ["discover_layers", "discover_groups", "dependency_graph", "layer_modules", "measure_macs", "norm_to_layer"]


def layer_modules(module) -> dict:
    """name -> module of the compressible layers (conv / linear), in definition order."""
    from torch import nn

    types = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    return {n: m for n, m in module.named_modules() if isinstance(m, types) and n}


def dependency_graph(module, input_size: int):
    """Torch-Pruning's DependencyGraph of ``module`` traced at ``input_size``; a CompressionError says
    which model could not be traced and what to do."""
    import torch
    import torch_pruning as tp

    try:
        return tp.DependencyGraph().build_dependency(module.eval(), example_inputs=torch.zeros(1, 3, input_size, input_size))
    except Exception as exc:  # tracing errors come in many types
        raise CompressionError(
            f"Torch-Pruning cannot trace {type(module).__name__} ({type(exc).__name__}: {exc}). Channel pruning "
            "needs a traceable model: replace tensor.chunk/split of a conv's output by separate convs, or "
            "restrict the space to precision (space.sparsity.ratios: [0.0])."
        ) from exc


def _kind(m) -> str:
    from torch import nn

    if isinstance(m, nn.Linear):
        return "linear"
    return conv_kind(m.groups, m.in_channels, m.kernel_size)


def _stage_depth(module) -> Callable[[str], str]:
    """Tie keys: a layer's *stage* is its top-level child (one level deeper for ModuleLists and for
    models that wrap everything in one child, e.g. Ultralytics' ``model.N``); its *block* is one level
    below its stage."""
    from torch import nn

    children = dict(module.named_children())
    wrapped = len(children) == 1

    def stage(name: str) -> str:
        parts = name.split(".")
        top = children.get(parts[0])
        deep = wrapped or isinstance(top, nn.ModuleList)
        n = 2 if deep and len(parts) > 2 else 1
        return ".".join(parts[:n])

    return stage


def _edges(dg, layers: dict) -> tuple[set[str], set[str]]:
    """(first, last) layers from the dependency graph: reached from the input / reaching the output
    without crossing another layer."""
    mods = {m: n for n, m in layers.items()}

    def reaches(node, attr: str) -> bool:
        seen, stack = set(), list(getattr(node, attr))
        if not stack:
            return True
        while stack:
            x = stack.pop()
            if id(x) in seen:
                continue
            seen.add(id(x))
            if x.module in mods:
                continue
            nxt = getattr(x, attr)
            if not nxt:
                return True
            stack.extend(nxt)
        return False

    first, last = set(), set()
    for m, n in mods.items():
        node = dg.module2node.get(m)
        if node is None:
            continue
        if reaches(node, "inputs"):
            first.add(n)
        if reaches(node, "outputs"):
            last.add(n)
    return first, last


def measure_macs(module, input_size: int) -> tuple[dict[str, int], list[str]]:
    """(layer -> MACs of one batch-1 forward at ``input_size``, layers in execution order)."""
    import torch

    layers = layer_modules(module)
    macs: dict[str, int] = {}
    order: list[str] = []

    def hook(name):
        def fn(mod, inputs, output):
            per_out = mod.weight[0].numel()  # (cin / groups) * kernel elements
            out_elems = output.numel() // output.shape[0] if output.ndim > 1 else output.numel()
            macs[name] = macs.get(name, 0) + out_elems * per_out
            order.append(name)
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in layers.items()]
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in handles:
            h.remove()
    return macs, order


def discover_layers(module, input_size: int, *, dg=None) -> list[Layer]:
    """The compressible layers of ``module`` with kind, channels, params and MACs at ``input_size``."""
    layers = layer_modules(module)
    if not layers:
        raise CompressionError(f"{type(module).__name__} has no Conv or Linear layer: nothing to compress.")
    macs, order = measure_macs(module, input_size)
    dg = dg if dg is not None else dependency_graph(module, input_size)
    first, last = _edges(dg, layers)
    if not first and not last:  # no dependency graph: fall back to execution order
        first, last = {order[0]}, {order[-1]}
    stage_of = _stage_depth(module)
    out: list[Layer] = []
    for name, m in layers.items():
        if name not in macs:
            log.debug("layer %s is not used in the forward pass; skipped", name)
            continue
        is_lin = _kind(m) == "linear"
        stage = stage_of(name)
        rest = name[len(stage) + 1:].split(".")
        block = f"{stage}.{rest[0]}" if len(rest) > 1 else stage
        out.append(Layer(
            name=name, kind=_kind(m),
            in_channels=m.in_features if is_lin else m.in_channels,
            out_channels=m.out_features if is_lin else m.out_channels,
            groups=1 if is_lin else m.groups,
            kernel=(1,) if is_lin else tuple(m.kernel_size),
            params=sum(p.numel() for p in m.parameters(recurse=False)),
            macs=macs[name], first=name in first, last=name in last, stage=stage, block=block,
        ))
    return out


def discover_groups(module, input_size: int, layers: list[Layer], *, dg=None) -> list[Group]:
    """Channel-coupling groups (Torch-Pruning), each named after its producer layer (the first
    non-depthwise layer whose output channels it prunes). ``last`` layers are never in a group."""
    dg = dg if dg is not None else dependency_graph(module, input_size)
    mods = layer_modules(module)
    names = {m: n for n, m in mods.items()}
    by_name = {lay.name: lay for lay in layers}
    ignored = [mods[lay.name] for lay in layers if lay.last]
    index = {n: i for i, n in enumerate(mods)}
    groups: list[Group] = []
    seen: set[str] = set()
    for g in dg.get_all_groups(ignored_layers=ignored, root_module_types=list({type(m) for m in mods.values()})):
        outs, ins = [], []
        for dep, _ in g:
            n = names.get(dep.target.module)
            if n is None or n not in by_name:
                continue
            if dg.is_out_channel_pruning_fn(dep.handler):
                outs.append(n)
            elif n not in outs:
                ins.append(n)
        outs = sorted(set(outs), key=index.__getitem__)
        if not outs:
            continue
        producers = [n for n in outs if by_name[n].kind != "depthwise"] or outs
        name = producers[0]
        if name in seen:
            continue
        seen.add(name)
        groups.append(Group(name=name, layers=tuple(outs),
                            consumers=tuple(sorted(set(ins) - set(outs), key=index.__getitem__)),
                            channels=by_name[name].out_channels))
    groups.sort(key=lambda g: index[g.name])
    return groups


def norm_to_layer(module, input_size: int) -> dict[str, str]:
    """Normalisation module path -> the layer whose output it normalises (BatchNorm folded into a conv
    at export carries the BatchNorm's name scope)."""
    import torch
    from torch import nn

    layers = layer_modules(module)
    produced: dict[int, str] = {}
    out: dict[str, str] = {}
    norms = {n: m for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    hs = [m.register_forward_hook(lambda mod, i, o, n=n: produced.__setitem__(id(o), n)) for n, m in layers.items()]
    hs += [m.register_forward_pre_hook(lambda mod, i, n=n: out.__setitem__(n, produced.get(id(i[0]))))
           for n, m in norms.items()]
    try:
        with torch.no_grad():
            module.eval()(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in hs:
            h.remove()
    return {k: v for k, v in out.items() if v}
