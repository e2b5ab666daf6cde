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
