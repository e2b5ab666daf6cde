"""Layer discovery and coupling groups on the builtin det-s (torch + Torch-Pruning)."""

from __future__ import annotations

import pytest

from edgetune.errors import CompressionError


@pytest.fixture(scope="module")
def det_space(det_s):
    from edgetune.spaces import SpaceSpec, build_space

    return build_space(det_s, SpaceSpec(keep={"precision": {"fp32": ["first", "last"]}, "sparsity": ["last"]}))


def test_layers_kinds_channels_and_macs(det_space, det_s):
    layers = {lay.name: lay for lay in det_space.layers}
    assert len(layers) == 99
    kinds = [lay.kind for lay in det_space.layers]
    assert (kinds.count("pointwise"), kinds.count("depthwise"), kinds.count("dense")) == (70, 25, 4)
    stem = layers["stem.conv"]
    assert (stem.in_channels, stem.out_channels, stem.kernel) == (3, 16, (3, 3))
    assert stem.macs == 16 * 3 * 9 * 128 * 128 and stem.params == 16 * 3 * 9
    dw = layers["stage1.1.m.0.cv2.dw.conv"]
    assert dw.kind == "depthwise" and dw.groups == 16 and dw.macs == 16 * 9 * 64 * 64
    assert [n for n, lay in layers.items() if lay.first] == ["stem.conv"]
    assert sorted(n for n, lay in layers.items() if lay.last) == sorted(
        f"heads.{i}.{k}" for i in range(3) for k in ("box_out", "cls_out"))
    assert (stem.stage, layers["heads.1.cls.0.pw.conv"].stage, layers["heads.1.cls.0.pw.conv"].block) == (
        "stem", "heads.1", "heads.1.cls")


def test_coupling_groups(det_space):
    groups = {g.name: g for g in det_space.groups}
    assert len(groups) == 58
    owners = [n for g in det_space.groups for n in g.layers]
    assert len(owners) == len(set(owners)) == 93  # every layer but the 6 output convs, exactly once
    # the residual add of a bottleneck ties the CSP branch conv and both bottleneck outputs
    g = groups["stage2.1.cv1.conv"]
    assert set(g.layers) == {"stage2.1.cv1.conv", "stage2.1.m.0.cv2.pw.conv", "stage2.1.m.1.cv2.pw.conv"}
    # a depthwise conv follows its producer; a downsampling depthwise follows the previous stage's output
    assert "stage1.1.m.0.cv2.dw.conv" in groups["stage1.1.m.0.cv1.conv"].layers
    assert "stage4.0.dw.conv" in groups["stage3.1.cv3.conv"].layers
    # a concat consumer receives input channels from both producers
    assert "td3.cv1.conv" in groups["lat4.conv"].consumers and "td3.cv1.conv" in groups["stage2.1.cv3.conv"].consumers


def test_choices_and_pins_on_the_detector(det_space):
    assert det_space.precision_choices["stem.conv"] == ("fp32",)
    assert det_space.precision_choices["heads.2.cls_out"] == ("fp32",)
    assert det_space.precision_choices["stage2.0.conv"] == ("fp32", "int8")
    assert det_space.sparsity_choices["stem.conv"] == ("dense", "channel:0.5")  # 16 ch: 25% rounds back to 16
    assert det_space.sparsity_choices["stage3.0.pw.conv"] == ("dense", "channel:0.25", "channel:0.5")
    assert len(det_space.dimensions) == (99 - 7) + 58  # stem + 6 output convs pinned fp32


def test_untraceable_model_is_a_clear_error():
    from torch import nn

    from edgetune.spaces import SpaceSpec, build_space

    class Grey(nn.Module):  # expects 1 channel: cannot run on the 3-channel example input
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3)

        def forward(self, x):
            return self.conv(x)

    with pytest.raises(CompressionError, match="Torch-Pruning cannot trace Grey"):
        build_space(Grey(), SpaceSpec(), input_size=32)


@pytest.mark.filterwarnings("ignore:Unwrapped parameters detected")  # Torch-Pruning on the embedding
def test_only_the_layers_at_the_input_and_output_are_first_and_last():
    """A Linear's weight enters the graph through ``weight.t()`` and a learned embedding through its own
    ops: neither is the model's input, so the middle Linear of an MLP head (and a conv after an embedding)
    is neither first nor last and is not pinned as such; a Linear that reads the input itself is first."""
    import torch
    from tiny_models import mlp_head_cnn
    from torch import nn

    from edgetune.spaces import SpaceSpec, build_space

    class Embedded(nn.Module):  # stem -> + learned position embedding -> conv -> head
        def __init__(self):
            super().__init__()
            self.stem, self.conv, self.head = nn.Conv2d(3, 8, 4, 4), nn.Conv2d(8, 8, 1), nn.Conv2d(8, 4, 1)
            self.pos = nn.Parameter(torch.zeros(1, 8, 8, 8))

        def forward(self, x):
            return self.head(torch.relu(self.conv(self.stem(x) + self.pos.expand(x.shape[0], -1, -1, -1))))

    spec = SpaceSpec(keep={"precision": {"fp32": ["first", "last"]}})
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 16), nn.ReLU(), nn.Linear(16, 4))
    for model, first, middle, last in ((mlp_head_cnn(), "0", "4", "6"), (Embedded(), "stem", "conv", "head"),
                                       (mlp, "1", None, "3")):
        space = build_space(model.eval(), spec, input_size=32)
        edges = {lay.name: (lay.first, lay.last) for lay in space.layers}
        assert edges[first] == (True, False) and edges[last] == (False, True), (type(model).__name__, edges)
        assert space.precision_choices[first] == space.precision_choices[last] == ("fp32",)
        if middle is not None:
            assert edges[middle] == (False, False), (type(model).__name__, edges)
            assert space.precision_choices[middle] == ("fp32", "int8")
