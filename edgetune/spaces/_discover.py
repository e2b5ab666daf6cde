"""Discover the compressible layers of a torch model and its channel-coupling groups (imports torch).

Layers are the ``Conv{1,2,3}d`` / ``Linear`` modules, named by their module path. Their MACs are
measured by forward hooks at the model's input size. Coupling groups come from Torch-Pruning's
dependency graph: layers tied by residual adds or concats share one group (one ratio); a depthwise conv
follows its producer. The layers whose output reaches the model's output without passing through
another layer (``last``: the detection-head output convs, a classifier) are never channel-pruned.

Discovery has to stay bounded on large models: the layers of attention blocks (a matmul / einsum / scaled
dot-product between activations, found by :func:`find_attention`) are pinned before Torch-Pruning groups
the graph (their channels are head-structured, and grouping through their reshapes grew to 23 GB on
YOLO11n's C2PSA), and :func:`test_cut_groups` cuts every remaining group once on a copy of the model, so
that a group Torch-Pruning cannot cut (a conv whose output is chunked, a box branch reshaped into DFL
bins) is pinned with the reason instead of failing trials later.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from edgetune._logging import get_logger
from edgetune.errors import CompressionError
from edgetune.models import probe_forward
from edgetune.spaces._layers import Group, Layer, conv_kind

log = get_logger(__name__)

__all__ = ["discover_layers", "discover_groups", "dependency_graph", "layer_modules", "measure_macs", "norm_to_layer",
           "find_attention", "out_channel_group", "test_cut_groups"]


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
    """Tie keys: a layer's *stage* is a child of the model's spine (one level deeper for ModuleLists); its
    *block* is one level below its stage. The spine is the model itself, or, for models that wrap
    everything in a chain of single children (edgetune's wrapper of an Ultralytics ``DetectionModel``:
    ``model.model.N``), the first module down that chain with several children, so that each of its
    children (each Ultralytics block) is a stage of its own."""
    from torch import nn

    depth, spine = 0, module
    while len(children := dict(spine.named_children())) == 1:
        spine = next(iter(children.values()))
        depth += 1
    if depth and not children:  # a chain ending in one leaf: the leaf's parent is the stage
        depth -= 1
    tops = {name: m for name, m in module.named_modules() if name.count(".") == depth}

    def stage(name: str) -> str:
        parts = name.split(".")
        top = tops.get(".".join(parts[: depth + 1]))
        n = depth + (2 if isinstance(top, nn.ModuleList) else 1)
        return ".".join(parts[: min(n, max(1, len(parts) - 1))])  # never the layer itself, unless top-level

    return stage


def _edges(dg, layers: dict) -> tuple[set[str], set[str]]:
    """(first, last) layers from the dependency graph: reached from the input / reaching the output
    without crossing another layer.

    A node without inputs is where the model's input enters the graph (the input itself needs no gradient,
    so it is no node), unless it is computed from parameters alone: Torch-Pruning drops parameter leaves, so
    a Linear's ``weight.t()`` (``TBackward0``), an unwrapped parameter or a learned embedding's ``expand``
    is a node without inputs too, and every Linear (every layer after such an embedding) would pass for a
    first layer. Such nodes are no way in."""
    mods = {m: n for n, m in layers.items()}
    params_only: dict[int, bool] = {}

    def from_params(x) -> bool:
        """``x`` is computed from parameters alone: every operand has a gradient and is a parameter leaf
        (dropped by Torch-Pruning) or itself computed from parameters alone."""
        if id(x) not in params_only:
            params_only[id(x)] = False  # autograd graphs have no cycles; this only guards the recursion
            ops = getattr(x.grad_fn, "next_functions", None) or ()
            params_only[id(x)] = (x.module not in mods and all(f is not None for f, _ in ops)
                                  and all(from_params(i) for i in x.inputs))
        return params_only[id(x)]

    def inputs(x) -> list:
        return [i for i in x.inputs if not from_params(i)]

    def outputs(x) -> list:
        return x.outputs

    def reaches(node, step) -> bool:
        seen, stack = set(), list(step(node))
        if not stack:
            return True
        while stack:
            x = stack.pop()
            if id(x) in seen:
                continue
            seen.add(id(x))
            if x.module in mods:
                continue
            nxt = step(x)
            if not nxt:
                return True
            stack.extend(nxt)
        return False

    first, last = set(), set()
    for m, n in mods.items():
        node = dg.module2node.get(m)
        if node is None:
            continue
        if reaches(node, inputs):
            first.add(n)
        if reaches(node, outputs):
            last.add(n)
    return first, last


def measure_macs(module, input_size: int) -> tuple[dict[str, int], list[str]]:
    """(layer -> MACs of one batch-1 forward at ``input_size``, layers in execution order)."""
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

    probe_forward(module, input_size, [m.register_forward_hook(hook(n)) for n, m in layers.items()])
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


def discover_groups(module, input_size: int, layers: list[Layer], *, dg=None,
                    pinned: Collection[str] | None = None) -> list[Group]:
    """Channel-coupling groups (Torch-Pruning), each named after its producer layer (the first
    non-depthwise layer whose output channels it prunes). ``last`` and ``pinned`` layers (by default the
    attention layers of :func:`find_attention`, which must be pinned before grouping) are never in a group."""
    dg = dg if dg is not None else dependency_graph(module, input_size)
    pinned = find_attention(module, input_size) if pinned is None else pinned
    mods = layer_modules(module)
    names = {m: n for n, m in mods.items()}
    by_name = {lay.name: lay for lay in layers}
    ignored = [mods[lay.name] for lay in layers if lay.last or lay.name in pinned]
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
    from torch import nn

    layers = layer_modules(module)
    produced: dict[int, str] = {}
    out: dict[str, str] = {}
    norms = {n: m for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    hs = [m.register_forward_hook(lambda mod, i, o, n=n: produced.__setitem__(id(o), n)) for n, m in layers.items()]
    hs += [m.register_forward_pre_hook(lambda mod, i, n=n: out.__setitem__(n, produced.get(id(i[0]))))
           for n, m in norms.items()]
    probe_forward(module, input_size, hs)
    return {k: v for k, v in out.items() if v}


_ATTENTION_OPS = ("matmul", "__matmul__", "__rmatmul__", "bmm", "baddbmm", "einsum", "scaled_dot_product_attention",
                  "multi_head_attention_forward")


def find_attention(module, input_size: int) -> dict[str, str]:
    """Layer -> why it is pinned against channel pruning: it sits in a module whose own forward multiplies
    activations (matmul, bmm, einsum, scaled dot-product attention), i.e. an attention block whose channels
    are split into heads. Found by running one forward pass under a ``TorchFunctionMode``."""
    from torch.overrides import TorchFunctionMode

    stack: list[str] = []
    hits: dict[str, str] = {}

    class _Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name in _ATTENTION_OPS and stack and stack[-1] not in hits:
                hits[stack[-1]] = name
            return func(*args, **(kwargs or {}))

    def enter(name):
        def pre(mod, inputs):
            stack.append(name)
        return pre

    def leave(mod, inputs, output):
        stack.pop()

    mods = dict(module.named_modules())
    handles = []
    for n, m in mods.items():
        handles.append(m.register_forward_pre_hook(enter(n)))
        handles.append(m.register_forward_hook(leave))
    probe_forward(module, input_size, handles, _Watch())
    layers = layer_modules(module)
    out: dict[str, str] = {}
    for block, op in hits.items():
        prefix = f"{block}." if block else ""
        why = f"attention: {type(mods[block]).__name__} ({block or 'model'}) multiplies activations ({op}); its channels are split into heads"
        for n in layers:
            if n.startswith(prefix):
                out.setdefault(n, why)
    return out


def out_channel_group(dg, m, idxs: list[int]):
    """Torch-Pruning's group of the output channels ``idxs`` of conv / linear ``m``."""
    import torch_pruning as tp
    from torch import nn

    fn = tp.prune_linear_out_channels if isinstance(m, nn.Linear) else tp.prune_conv_out_channels
    return dg.get_pruning_group(m, fn, idxs=idxs)


def _shapes(out) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [tuple(out.shape)]
    if isinstance(out, dict):
        return [s for v in out.values() for s in _shapes(v)]
    if isinstance(out, (tuple, list)):
        return [s for v in out for s in _shapes(v)]
    return []


def _why(exc: Exception) -> str:
    first = str(exc).splitlines()[0][:120] if str(exc) else ""
    return f"{type(exc).__name__}: {first}"


def test_cut_groups(module, input_size: int, groups: list[Group], ratio: float) -> dict[str, str]:
    """Group -> why it cannot be cut: every group loses ``ratio`` of its channels on a copy of the model
    (all at once; after a failure, again without the failed group), then the copy runs a forward pass
    whose outputs must keep their shapes. Empty when every group cuts."""
    import copy

    import torch

    n_cut = {g.name: max(1, int(g.channels * ratio)) for g in groups if g.channels > 1}
    with torch.no_grad():
        want = _shapes(module.eval()(torch.zeros(1, 3, input_size, input_size)))
    bad: dict[str, str] = {}

    def attempt(names: list[str]) -> str | None:
        """None when every group in ``names`` cuts; else the first failing one (recorded in ``bad``)."""
        work = copy.deepcopy(module).eval()
        dg = dependency_graph(work, input_size)
        mods = layer_modules(work)
        for name in names:
            m = mods[name]
            width = m.out_features if isinstance(m, torch.nn.Linear) else m.out_channels
            try:
                group = out_channel_group(dg, m, list(range(width - n_cut[name], width)))
                if not dg.check_pruning_group(group):
                    raise CompressionError("a layer would be left with no channel")
                group.prune()
            except Exception as exc:  # Torch-Pruning fails on unsupported graphs in many ways
                bad[name] = f"a test cut failed ({_why(exc)})"
                return name
        try:
            with torch.no_grad():
                got = _shapes(work(torch.zeros(1, 3, input_size, input_size)))
        except Exception as exc:
            return f"forward: {_why(exc)}"
        return None if got == want else f"forward: output shapes {got} instead of {want}"

    todo = [g.name for g in groups if g.name in n_cut]
    while todo:
        failed = attempt(todo)
        if failed is None:
            break
        if failed in bad:
            todo = [n for n in todo if n != failed]
            continue
        for name in todo:  # the joint cut broke the forward pass: find the culprits one by one
            why = attempt([name])
            if why is not None and name not in bad:
                bad[name] = f"a test cut broke the forward pass ({why.removeprefix('forward: ')})"
        break
    for name, why in bad.items():
        log.info("space: group %s is not offered for channel pruning: %s", name, why)
    return bad
