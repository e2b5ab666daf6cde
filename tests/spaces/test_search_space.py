"""SearchSpace on synthetic layer lists (pure, no torch): choices, pins, tying, validation, scale."""

from __future__ import annotations

import json

import pytest

from edgetune.errors import ConfigError
from edgetune.spaces import (
    CompressionConfig,
    Group,
    Layer,
    SearchSpace,
    SpaceSpec,
    kept_channels,
    space_from_layers,
)


def synthetic(n_stages: int = 10, blocks: int = 5):
    """A stem, n_stages x blocks of (pointwise -> depthwise) pairs, and two output convs."""
    layers = [Layer("stem.conv", "dense", 3, 32, 1, (3, 3), 864, 10**6, first=True, stage="stem", block="stem")]
    groups = [Group("stem.conv", ("stem.conv",), (), 32)]
    for s in range(n_stages):
        for b in range(blocks):
            pw, dw = f"s{s}.{b}.pw", f"s{s}.{b}.dw"
            layers.append(Layer(pw, "pointwise", 32, 64, 1, (1, 1), 2048, 10**5, stage=f"s{s}", block=f"s{s}.{b}"))
            layers.append(Layer(dw, "depthwise", 64, 64, 64, (3, 3), 576, 10**4, stage=f"s{s}", block=f"s{s}.{b}"))
            groups.append(Group(pw, (pw, dw), (), 64))
    for name in ("head.box", "head.cls"):
        layers.append(Layer(name, "pointwise", 64, 4, 1, (1, 1), 256, 10**3, last=True, stage="head", block="head"))
    return layers, groups


def test_scales_to_hundreds_of_layers():
    layers, groups = synthetic(20, 10)  # 403 layers, 201 groups
    space = space_from_layers(layers, groups, SpaceSpec(keep={"precision": {"fp32": ["first", "last"]}}))
    dims = {d.kind: sum(1 for x in space.dimensions if x.kind == d.kind) for d in space.dimensions}
    assert dims == {"precision": len(layers) - 3, "sparsity": len(groups)}  # first + 2 last pinned fp32
    cfg = space.random_config(seed=3)
    assert space.validate(cfg) is cfg
    assert cfg.precision["stem.conv"] == "fp32" and cfg.precision["head.cls"] == "fp32"
    assert SearchSpace.from_dict(json.loads(json.dumps(space.to_dict()))).config_from(
        {d.name: d.choices[-1] for d in space.dimensions}) == space.config_from({d.name: d.choices[-1] for d in space.dimensions})


def test_pins_first_last_names_and_globs():
    layers, groups = synthetic(2, 2)
    spec = SpaceSpec(keep={"precision": {"fp32": ["first", "head.*"], "int8": ["s1.1.pw"]}, "sparsity": ["s0.*"]})
    space = space_from_layers(layers, groups, spec)
    assert space.precision_choices["stem.conv"] == ("fp32",)
    assert space.precision_choices["head.box"] == ("fp32",) and space.precision_choices["s1.1.pw"] == ("int8",)
    assert space.precision_choices["s0.0.pw"] == ("fp32", "int8")
    assert space.sparsity_choices["s0.0.pw"] == ("dense",) and "s0.0.pw" in space.sparsity_pins
    assert space.sparsity_choices["s1.0.pw"] == ("dense", "channel:0.25", "channel:0.5")
    with pytest.raises(ConfigError, match=r"unknown layer 's1.1.pww'.*s1.1.pw"):
        space_from_layers(layers, groups, SpaceSpec(keep={"precision": {"fp32": ["s1.1.pww"]}}))
    with pytest.raises(ConfigError, match="glob 'nothing.\\*' matches no layer"):
        space_from_layers(layers, groups, SpaceSpec(keep={"sparsity": ["nothing.*"]}))


def test_device_rules_filter_choices():
    layers, groups = synthetic(1, 1)
    spec = SpaceSpec(precision=["fp32", "fp16", "int8"], sparsity={"kind": ["channel", "2:4"], "ratios": [0, 0.5]})
    cpu = space_from_layers(layers, groups, spec, targets=["rpi5"])
    assert cpu.offered_precisions == {"fp32", "int8"}
    assert all("2:4" not in c for c in cpu.sparsity_choices.values())
    assert any("fp16" in n for n in cpu.notes) and any("2:4" in n for n in cpu.notes)
    gpu = space_from_layers(layers, groups, spec, targets=["rpi5", "jetson-orin"])
    assert gpu.offered_precisions == {"fp32", "fp16", "int8"}
    assert "2:4" in gpu.sparsity_choices["s0.0.pw"] and gpu.quant.activation_symmetric
    # channel ratios that keep every channel after rounding are not offered (16 ch, 25%, round_to 8 -> 16)
    assert kept_channels(16, 0.25, 8) == 16 and kept_channels(64, 0.5, 8) == 32 and kept_channels(96, 0.25, 8) == 72
    small = space_from_layers([Layer("x", "pointwise", 8, 16, 1, (1, 1), 128, 1, first=True, last=False)],
                              [Group("x", ("x",), (), 16)], SpaceSpec(keep={"sparsity": []}))
    assert small.sparsity_choices["x"] == ("dense", "channel:0.5")


def test_tying_shrinks_the_space():
    layers, groups = synthetic(4, 3)
    none = space_from_layers(layers, groups, SpaceSpec())
    stage = space_from_layers(layers, groups, SpaceSpec(tie="stage"))
    block = space_from_layers(layers, groups, SpaceSpec(tie="block"))
    assert len(stage.dimensions) < len(block.dimensions) < len(none.dimensions)
    d = next(x for x in stage.dimensions if x.name == "precision/stage:s2")
    assert set(d.members) == {f"s2.{b}.{k}" for b in range(3) for k in ("pw", "dw")}
    cfg = stage.config_from({x.name: x.choices[-1] for x in stage.dimensions})
    assert {cfg.precision[m] for m in d.members} == {"int8"}
    assert all(cfg.sparsity[g].ratio == 0.5 for g in ("s2.0.pw", "s2.1.pw", "s2.2.pw"))
    # per-kind levels: precision per stage, one global sparsity
    mixed = space_from_layers(layers, groups, SpaceSpec(tie={"precision": "stage", "sparsity": "model"}))
    sparse = [x for x in mixed.dimensions if x.kind == "sparsity"]
    assert [x.name for x in sparse] == ["sparsity/model:all"]
    assert len([x for x in mixed.dimensions if x.kind == "precision"]) == len(
        [x for x in stage.dimensions if x.kind == "precision"])
    cfg = mixed.config_from({x.name: x.choices[-1] for x in mixed.dimensions})
    assert {cfg.sparsity[g].ratio for g in sparse[0].members} == {0.5}
    with pytest.raises(ValueError, match="sparsity"):
        SpaceSpec(tie={"sparsity": "layer"})


def test_validate_names_the_layer_and_the_fix():
    layers, groups = synthetic(2, 2)
    space = space_from_layers(layers, groups, SpaceSpec(keep={"precision": {"fp32": ["first"]}}))
    with pytest.raises(ConfigError, match=r"unknown layer 's1.0.pv'.*Closest names: s1.0.pw"):
        space.validate(CompressionConfig(precision={"s1.0.pv": "int8"}))
    with pytest.raises(ConfigError, match="'stem.conv' is pinned to fp32"):
        space.validate(CompressionConfig(precision={"stem.conv": "int8"}))
    with pytest.raises(ConfigError, match="precision 'fp16' is not offered for layer 's0.0.pw'"):
        space.validate(CompressionConfig(precision={"s0.0.pw": "fp16"}))
    with pytest.raises(ConfigError, match="`default_precision` 'fp16' is not offered"):
        space.validate(CompressionConfig(default_precision="fp16"))
    with pytest.raises(ConfigError, match="layer 's0.0.dw', which is coupled in group 's0.0.pw'"):
        space.validate(CompressionConfig(sparsity={"s0.0.dw": {"ratio": 0.5}}))
    with pytest.raises(ConfigError, match="writes the model output"):
        space.validate(CompressionConfig(sparsity={"head.box": {"ratio": 0.5}}))
    with pytest.raises(ConfigError, match="sparsity kind '2:4' is not offered"):
        space.validate(CompressionConfig(sparsity={"s0.0.pw": {"kind": "2:4"}}))
    with pytest.raises(ConfigError, match="missing a value"):
        space.config_from({})
    ok = CompressionConfig(precision={"s0.0.pw": "int8"}, sparsity={"s1.1.pw": {"ratio": 0.3}})
    assert space.validate(ok) is ok


def test_runtime_and_input_size_are_dimensions_and_the_runtime_only_places_int8():
    layers, groups = synthetic(2, 2)
    spec = SpaceSpec(precision=["fp32", "int8"], tie="model", runtime=["ort", "openvino"], input_size=[192, 256, 224])
    space = space_from_layers(layers, groups, spec, input_size=256)
    dims = {d.name: d for d in space.dimensions}
    assert dims["input_size"].choices == ("256", "224", "192") and dims["runtime"].choices == ("ort", "openvino")
    base = {d.name: d.choices[0] for d in space.dimensions}
    own = space.config_from(base)
    assert own.input_size is None  # the model's own size: the same config (and hash) as without the dimension
    assert own.hash() == space_from_layers(layers, groups, SpaceSpec(precision=["fp32", "int8"], tie="model"),
                                           input_size=256).config_from({k: v for k, v in base.items()
                                                                        if k not in ("input_size", "runtime")}).hash()
    small = space.config_from({**base, "input_size": "192"})
    assert small.input_size == 192 and small.hash() != own.hash()
    assert space.runtime_from({**base, "runtime": "openvino"}) == "openvino" and space.baseline_runtime == "ort"
    on_ov = space.config_from({**base, "runtime": "openvino"})  # the runtime only says where int8 Q/DQ go
    assert on_ov.quant.placement == "openvino" and own.quant.placement == "onnxruntime"
    assert on_ov.model_copy(update={"quant": own.quant}) == own
    assert space.baseline("int8-uniform").quant.placement == "onnxruntime"
    assert space.baseline("int8-uniform", "openvino").quant.placement == "openvino"
    with pytest.raises(ConfigError, match="not offered"):
        space.validate(own.model_copy(update={"input_size": 160}))
    back = SearchSpace.from_dict(json.loads(json.dumps(space.to_dict())))
    assert back.input_size_choices == (256, 224, 192) and back.runtime_choices == ("ort", "openvino")
    one = space_from_layers(layers, groups, SpaceSpec(runtime=["openvino"], input_size=[224]), input_size=256)
    assert not {"runtime", "input_size"} & {d.name for d in one.dimensions}  # one choice: no dimension, but it holds
    assert one.runtime_from({}) == "openvino" and one.random_config().input_size == 224


def test_runtime_and_input_size_specs_say_what_is_valid():
    from pydantic import ValidationError

    from edgetune.device_agents.runtimes import available_runtimes
    from edgetune.spaces import RUNTIMES

    assert sorted(RUNTIMES) == available_runtimes()  # the spaces' list is the agent registry's
    with pytest.raises(ValidationError, match="Closest names: openvino"):
        SpaceSpec(runtime=["openvno"])
    with pytest.raises(ValidationError, match="multiples of 32.*200"):
        SpaceSpec(input_size=[256, 200])
