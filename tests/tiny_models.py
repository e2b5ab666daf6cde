"""A small classifier users could bring by ``python`` factory, and the plain-torch recipe that trains it
(imported by tests and by ``benchmarks/bench_classifier.py``; the factory string is ``tiny_models:shape_cnn``
with ``tests/`` on the path)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["FACTORY", "mlp_head_cnn", "shape_cnn", "train_classifier"]

FACTORY = "tiny_models:shape_cnn"


def shape_cnn(num_classes: int = 6):
    """Five conv -> BN -> ReLU blocks (strides 2, 2, 1, 2, 1), global pooling, one Linear: 0.21M params."""
    from torch import nn

    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    return nn.Sequential(block(3, 32, 2), block(32, 48, 2), block(48, 64, 1), block(64, 96, 2), block(96, 128, 1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes))


def mlp_head_cnn(num_classes: int = 6):
    """A conv stem, global pooling and an MLP head (Linear -> ReLU -> Linear): the middle Linear is neither
    first nor last."""
    from torch import nn

    return nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, num_classes))


def train_classifier(model, train, out: Path, *, steps: int = 600, batch: int = 64, lr: float = 3e-3,
                     seed: int = 0) -> Path:
    """Train a LoadedModel's module from scratch as its user would have before bringing it (AdamW, one-cycle
    schedule, the adapter's own batches: random crops of 90% of the size, flips, photometric jitter) and
    save its state dict to ``out``."""
    import torch

    torch.manual_seed(seed)
    adapter, size = model.adapter, model.input_size
    data = adapter.prepare(train, size=size, limit=0)
    rng = np.random.default_rng(seed)
    net = model.module.train()
    opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    for _ in range(steps):
        batch_ = adapter.sample(data, rng, batch, int(size * 0.9))
        loss = adapter.loss(net(batch_[0]), batch_)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    torch.save(net.eval().state_dict(), out)
    return out
