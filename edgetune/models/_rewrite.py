"""Make chunked conv outputs prunable: a block ``conv -> [BatchNorm] -> [activation]`` whose output is only
ever ``chunk``-ed / ``split`` along channels (Ultralytics C2f / C3k2 ``cv1``) becomes one copy of the block
per part, each computing its own channels (imports torch).

Torch-Pruning cannot cut such a conv (its channel indices are remapped by the split: the test cut breaks
the forward pass); separate convs feeding the consumers directly are ordinary groups. The rewritten block
returns :class:`Parts`, a list of the part outputs whose ``chunk`` / ``split`` with the recorded arguments
return the parts themselves (any other call concatenates them first), so the model's code is unchanged
and its outputs are identical: every part is the same per-channel computation on a slice of the weights.
Found by one forward pass under a ``TorchFunctionMode`` watching which module outputs reach a chunk/split
and nothing else.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from edgetune._logging import get_logger
from edgetune.models._probe import probe_forward

log = get_logger(__name__)

__all__ = ["Parts", "SplitBlock", "split_chunked_outputs"]

_ELEMENTWISE = (nn.Identity, nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.LeakyReLU, nn.Hardswish, nn.Hardsigmoid,
                nn.Sigmoid, nn.Tanh, nn.Mish, nn.ELU)


class Parts(list):
    """The outputs of a :class:`SplitBlock`: ``chunk(n, 1)`` / ``split(sizes, 1)`` as recorded return them."""

    def __init__(self, parts, sizes: tuple[int, ...]):
        super().__init__(parts)
        self.sizes = sizes

    def _whole(self):
        return torch.cat(list(self), 1)

    def chunk(self, chunks: int, dim: int = 1):
        if dim in (1, -3) and chunks == len(self) and len(set(self.sizes)) == 1:
            return tuple(self)
        return self._whole().chunk(chunks, dim)

    def split(self, split_size, dim: int = 1):
        sizes = (split_size,) * len(self) if isinstance(split_size, int) else tuple(split_size)
        if dim in (1, -3) and sizes == self.sizes:
            return tuple(self)
        return self._whole().split(split_size, dim)


class SplitBlock(nn.Module):
    """One copy of a per-channel block per output part (see the module docstring)."""

    def __init__(self, block: nn.Module, sizes: tuple[int, ...]):
        super().__init__()
        self.sizes = tuple(sizes)
        parts, start = [], 0
        for size in self.sizes:
            part = copy.deepcopy(block)
            idx = torch.arange(start, start + size)
            for m in part.modules():
                if isinstance(m, nn.Conv2d):
                    m.weight = nn.Parameter(m.weight.detach()[idx].clone())
                    if m.bias is not None:
                        m.bias = nn.Parameter(m.bias.detach()[idx].clone())
                    m.out_channels = size
                elif isinstance(m, nn.BatchNorm2d):
                    for name in ("weight", "bias"):
                        if getattr(m, name) is not None:
                            setattr(m, name, nn.Parameter(getattr(m, name).detach()[idx].clone()))
                    m.running_mean = m.running_mean[idx].clone()
                    m.running_var = m.running_var[idx].clone()
                    m.num_features = size
            parts.append(part)
            start += size
        self.parts = nn.ModuleList(parts)

    def forward(self, x):
        return Parts([p(x) for p in self.parts], self.sizes)


def _separable(block: nn.Module) -> bool:
    """One ungrouped Conv2d, at most one BatchNorm2d, otherwise parameter-free elementwise activations."""
    kinds = [m for m in block.modules() if m is not block or not list(block.children())]
    convs = [m for m in kinds if isinstance(m, nn.Conv2d)]
    norms = [m for m in kinds if isinstance(m, nn.BatchNorm2d)]
    rest = [m for m in kinds if not isinstance(m, (nn.Conv2d, nn.BatchNorm2d, *_ELEMENTWISE))]
    return len(convs) == 1 and convs[0].groups == 1 and len(norms) <= 1 and not rest


def _find(module: nn.Module, input_size: int) -> dict[str, tuple[int, ...]]:
    """module name -> channel sizes of the parts, for the module outputs used only by chunk/split on dim 1."""
    out_of: dict[int, str] = {}  # id(output tensor) -> outermost module that returned it
    keep: dict[int, torch.Tensor] = {}  # holds the tensors so ids stay unique during the pass
    uses: dict[str, list] = {}

    def post(name):
        def hook(mod, inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                out_of[id(output)] = name
                keep[id(output)] = output
        return hook

    class _Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            for a in list(args) + list(kwargs.values()):
                if isinstance(a, torch.Tensor) and id(a) in out_of:
                    uses.setdefault(out_of[id(a)], []).append((getattr(func, "__name__", ""), a, args, kwargs))
            return func(*args, **kwargs)

    probe_forward(module, input_size, [m.register_forward_hook(post(n)) for n, m in module.named_modules() if n],
                  _Watch())
    found: dict[str, tuple[int, ...]] = {}
    for name, calls in uses.items():
        if len(calls) != 1:
            continue
        fname, t, args, kwargs = calls[0]
        dim = kwargs.get("dim", args[2] if len(args) > 2 else 0)
        if fname not in ("chunk", "split") or dim not in (1, -3):
            continue
        arg = kwargs.get("chunks", kwargs.get("split_size", kwargs.get("split_size_or_sections",
                                                                            args[1] if len(args) > 1 else None)))
        width = t.shape[1]
        if fname == "chunk" and isinstance(arg, int) and arg > 1 and width % arg == 0:
            found[name] = (width // arg,) * arg
        elif fname == "split" and isinstance(arg, (list, tuple)) and sum(arg) == width and len(arg) > 1:
            found[name] = tuple(int(s) for s in arg)
    return found


def split_chunked_outputs(module: nn.Module, input_size: int) -> list[str]:
    """Rewrite (in place) the separable blocks whose output is only chunked / split; returns their names."""
    found = _find(module, input_size)
    if not found:
        return []
    x = torch.rand(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = module.eval()(x)
    saved = {name: blk for name, blk in module.named_modules() if name in found}
    mods = dict(module.named_modules())
    done = []
    for name, sizes in found.items():
        block = mods[name]
        if not _separable(block):
            continue
        parent_name, _, attr = name.rpartition(".")
        parent = mods[parent_name] if parent_name else module
        setattr(parent, attr, SplitBlock(block, sizes))
        done.append(name)
    with torch.no_grad():
        after = module(x)
    if not _same(before, after):  # never expected (each part is exact); undo rather than change the model
        for name in done:
            parent_name, _, attr = name.rpartition(".")
            setattr(mods[parent_name] if parent_name else module, attr, saved[name])
        log.warning("splitting the chunked outputs of %s changed the model's outputs; left as they were", done)
        return []
    if done:
        log.info("split %d chunked conv outputs into separate convs: %s", len(done), ", ".join(done))
    return done


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b)
