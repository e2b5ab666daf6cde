"""Scoring: how important each output channel of a coupling group is (what to prune first).

A registry of criteria, each a Torch-Pruning importance (``scores = imp(group)``, one score per channel
of the group's producer). Scoring knows nothing about ratios (scheduling, ``_schedule``) or about how
layers are cut (surgery, ``_prune``). ``taylor`` needs gradients: :func:`accumulate_gradients` runs the
task loss backward on a few training batches first (gradient energy, see there).
"""

from __future__ import annotations

from collections.abc import Callable

from edgetune.errors import CompressionError

__all__ = ["IMPORTANCES", "register_importance", "make_importance", "needs_gradients"]

IMPORTANCES: dict[str, Callable[[], object]] = {}
_NEEDS_GRAD: set[str] = set()


def register_importance(name: str, *, needs_gradients: bool = False):
    def deco(fn: Callable[[], object]) -> Callable[[], object]:
        IMPORTANCES[name] = fn
        if needs_gradients:
            _NEEDS_GRAD.add(name)
        return fn

    return deco


@register_importance("magnitude")
def _magnitude():
    import torch_pruning as tp

    return tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean", normalizer="mean")


@register_importance("lamp")
def _lamp():
    import torch_pruning as tp

    return tp.importance.LAMPImportance(p=2)


@register_importance("fpgm")
def _fpgm():
    import torch_pruning as tp

    return tp.importance.FPGMImportance()


@register_importance("bn_scale")
def _bn_scale():
    import torch_pruning as tp

    return tp.importance.BNScaleImportance()


@register_importance("taylor", needs_gradients=True)
def _taylor():
    import torch_pruning as tp

    return tp.importance.GroupTaylorImportance()


def needs_gradients(name: str) -> bool:
    return name in _NEEDS_GRAD


def make_importance(name: str):
    if name not in IMPORTANCES:
        raise CompressionError(f"unknown importance {name!r}; valid: {', '.join(sorted(IMPORTANCES))}.")
    return IMPORTANCES[name]()


def accumulate_gradients(module, batches, loss_fn) -> None:
    """Leave in ``.grad`` the root of the summed SQUARED per-batch gradients of ``loss_fn(module, *batch)``.

    At a converged model the per-batch gradients point every way and their plain sum cancels out; their
    energy (a diagonal Fisher estimate) does not. ``taylor`` then scores a channel by sum |w| * sqrt(F).
    """
    import torch

    module.train()
    params = [p for p in module.parameters() if p.requires_grad]
    energy = [torch.zeros_like(p) for p in params]
    for batch in batches:
        module.zero_grad(set_to_none=True)
        loss_fn(module, *batch).backward()
        for e, p in zip(energy, params, strict=True):
            if p.grad is not None:
                e.add_(p.grad.detach() ** 2)
    for e, p in zip(energy, params, strict=True):
        p.grad = e.sqrt_()
    module.eval()
