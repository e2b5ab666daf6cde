"""Scheduling (how much) and the 2:4 mask (surgery) in isolation."""

from __future__ import annotations

import torch

from edgetune.compress import schedule
from edgetune.compress._prune import make_permanent, mask_two_four, mask_unstructured, two_four_mask
from edgetune.spaces import CompressionConfig, Group, Layer


def test_schedule_rounds_counts_and_routes_kinds():
    layers = [Layer("a", "pointwise", 32, 96, 1, (1, 1), 0, 0), Layer("a.dw", "depthwise", 96, 96, 96, (3, 3), 0, 0),
              Layer("b", "dense", 30, 64, 1, (3, 3), 0, 0), Layer("c", "pointwise", 64, 16, 1, (1, 1), 0, 0)]
    groups = [Group("a", ("a", "a.dw"), (), 96), Group("b", ("b",), (), 64), Group("c", ("c",), (), 16)]
    cfg = CompressionConfig(sparsity={"a": {"ratio": 0.3}, "b": {"kind": "unstructured", "ratio": 0.5},
                                      "c": {"kind": "channel", "ratio": 0.25}})
    plan = schedule(cfg, groups, layers)
    assert plan.channels == {"a": 72}  # 96 * 0.7 = 67.2 -> up to 72; c: 12 -> 16 = no change, dropped
    assert plan.unstructured == {"b": 0.5}
    two = schedule(CompressionConfig(sparsity={"a": {"kind": "2:4"}, "b": {"kind": "2:4"}}), groups, layers)
    assert two.two_four == ("a",)  # depthwise and cin=30 are not eligible


def test_two_four_mask_keeps_the_two_largest_of_each_quad():
    w = torch.randn(8, 16, 3, 3)
    mask = two_four_mask(w)
    quads = (w * mask).permute(0, 2, 3, 1).reshape(8, 9, 4, 4)
    assert ((quads != 0).sum(-1) == 2).all()
    kept = quads.abs().sort(-1).values[..., 2:]
    assert torch.equal(kept, w.permute(0, 2, 3, 1).reshape(8, 9, 4, 4).abs().sort(-1).values[..., 2:])


def test_masks_become_permanent():
    net = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 1), torch.nn.Conv2d(8, 8, 3))
    mask_unstructured(net, {"0": 0.5})
    mask_two_four(net, ["1"])
    assert make_permanent(net) == 2
    assert not hasattr(net[0], "weight_mask") and isinstance(net[0].weight, torch.nn.Parameter)
    assert (net[0].weight == 0).float().mean() == 0.5
    assert ((net[1].weight.permute(0, 2, 3, 1).reshape(8, 9, 2, 4) != 0).sum(-1) <= 2).all()
