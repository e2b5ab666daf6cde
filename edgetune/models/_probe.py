"""One probing forward pass: zeros at the model's input size, eval mode, no gradient, with hooks and an
optional ``TorchFunctionMode`` that are always removed afterwards (torch imported when called)."""

from __future__ import annotations

from contextlib import nullcontext

__all__ = ["probe_forward"]


def probe_forward(module, input_size: int, handles: list, mode=None):
    """Run ``module`` on a (1, 3, S, S) zero batch under ``mode``; remove ``handles``; return the output."""
    import torch

    try:
        with torch.no_grad(), mode if mode is not None else nullcontext():
            return module.eval()(torch.zeros(1, 3, input_size, input_size))
    finally:
        for h in handles:
            h.remove()
