"""``space.scales``: a detector's output scales as a search dimension. Dropping a scale removes its head branch
and the neck blocks only it reads (the kept outputs are unchanged), the space offers and validates the
choices, a sensitivity pass measures each and ``max_drop`` removes the costly ones, and a compressed
artifact carries fewer anchors with its ONNX equal to the torch model."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("ultralytics") is None:  # not imported here: importing it patches PIL
    pytest.skip("the yolo extra (make test installs it)", allow_module_level=True)

from edgetune.errors import ConfigError  # noqa: E402


def _yolo(name: str, size: int = 128):
    from edgetune.config import ModelSpec
    from edgetune.models import load_model

    return load_model(ModelSpec(source="ultralytics", name=name, input_size=size), class_names=tuple("abcdef"),
                      category_ids=tuple(range(1, 7)))


@pytest.mark.parametrize("name, removed", [("yolo11n.yaml", [17, 18, 19, 20, 21, 22]),
                                           ("yolo26n.yaml", [17, 18, 19, 20, 21, 22])])
def test_keeping_stride_8_removes_the_p4_p5_path_and_keeps_its_outputs(name, removed):
    import torch

    from edgetune.models import keep_output_scales, output_strides

    model = _yolo(name)
    assert output_strides(model.module) == (8, 16, 32)
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        full = model.module(x)
        cut = copy.deepcopy(model.module)
        gone = keep_output_scales(cut, (8,))
        out = cut(x)
    assert gone == [f"model.model.{i}" for i in removed]
    assert full.shape[-1] == 16 * 16 + 8 * 8 + 4 * 4 and out.shape[-1] == 16 * 16
    assert torch.equal(out, full[..., :256])  # the stride-8 anchors come first, untouched
    assert output_strides(cut) == (8,)
    params = sum(p.numel() for p in model.module.parameters())
    assert sum(p.numel() for p in cut.parameters()) < 0.75 * params  # the P4 / P5 neck and head branches went
    with pytest.raises(ValueError, match="cannot keep output strides"):
        keep_output_scales(copy.deepcopy(model.module), (4,))


def test_the_space_offers_validates_and_refuses_scales(det_s):
    from edgetune.spaces import CompressionConfig, SpaceSpec, build_space

    model = _yolo("yolo11n.yaml")
    space = build_space(model, SpaceSpec(scales="auto", sparsity={"ratios": [0.0]}))
    dim = next(d for d in space.dimensions if d.kind == "scales")
    assert dim.choices == ("8+16+32", "8+16", "8+32", "16+32", "8", "16", "32")
    params = {d.name: d.choices[0] for d in space.dimensions}
    assert space.config_from(params).scales is None  # every scale: the config does not say
    config = space.config_from({**params, "scales": "8"})
    assert config.scales == (8,) and config.hash() != space.config_from(params).hash()
    assert space.validate(config) is config
    listed = build_space(model, SpaceSpec(scales=[[8]], sparsity={"ratios": [0.0]}))
    assert listed.scale_choices == ("8+16+32", "8")
    with pytest.raises(ConfigError, match=r"`scales` \[16\] is not offered"):
        listed.validate(CompressionConfig(scales=(16,)))
    with pytest.raises(ConfigError, match="output strides are \\[8, 16, 32\\]"):
        build_space(model, SpaceSpec(scales=[[8, 64]], sparsity={"ratios": [0.0]}))
    with pytest.raises(ConfigError, match="needs a detector with several output scales"):
        build_space(det_s, SpaceSpec(scales="auto", sparsity={"ratios": [0.0]}))


@pytest.mark.slow
def test_sensitivity_removes_costly_scales_and_the_artifact_has_fewer_anchors(tmp_path):
    """On the builtin yolo11n (trained on the shapes data, whose objects the stride-8 outputs carry) the pass
    finds the P4 / P5 outputs free and every choice without stride 8 costly; the compressed P3-only model
    exports with 1,024 anchors at 256 px and matches torch."""
    import onnx

    from edgetune.assembly import assemble
    from edgetune.compress import RecoverySpec, compress
    from edgetune.config import SweepConfig

    cfg = SweepConfig.model_validate({
        "name": "scales", "model": {"source": "builtin", "name": "yolo11n"},
        "data": {"source": "builtin", "name": "shapes", "val_images": 24, "calib_images": 8, "train_size": 128},
        "space": {"precision": ["fp32"], "scales": "auto", "tie": "stage",
                  "sparsity": {"ratios": [0.0], "max_drop": 0.02, "sensitivity_images": 24}},
        "recovery": {"steps": 0},
        "devices": [{"name": "local", "url": "http://127.0.0.1:1", "kind": "local-cpu"}],
        "objectives": [{"metric": "map50_95", "device": "local"}, {"metric": "latency_p50_ms", "device": "local"}],
        "search": {"trials": 1, "storage": f"sqlite:///{tmp_path / 'o.db'}"},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'm.db'}"}})
    parts = assemble(cfg, train=True, workdir=tmp_path / "wd")
    cuts = {c.choice: c for c in parts.sensitivity.cuts if c.dimension == "scales"}
    assert set(cuts) == {"8+16", "8+32", "16+32", "8", "16", "32"}
    assert cuts["8"].drop <= 0.02 and cuts["8"].macs_removed > 0.15
    assert all(cuts[k].drop > 0.2 for k in ("16+32", "16", "32"))  # nothing left that finds the objects
    assert parts.space.scale_choices == ("8+16+32", "8+16", "8+32", "8")
    assert any("output strides 16+32, 16, 32 alone removed" in n for n in parts.space.notes)
    params = {d.name: d.choices[0] for d in parts.space.dimensions}
    config = parts.space.config_from({**params, "scales": "8"})
    art = compress(parts.model, config, calib=parts.splits.calib, workdir=Path(tmp_path / "wd"),
                   recovery=RecoverySpec(steps=0), space=parts.space)
    out = onnx.load(str(art.onnx_path)).graph.output[0]
    assert [d.dim_value for d in out.type.tensor_type.shape.dim] == [1, 10, 32 * 32]
    assert art.manifest["max_abs_diff_vs_torch"] < 1e-3
    assert art.manifest["config"]["scales"] == [8]
    from edgetune.spaces import measure_macs

    torch_params = sum(p.numel() for p in parts.model.module.parameters())
    assert art.sizes["params"] < 0.8 * torch_params  # the P4 / P5 neck and head branches are not in the file
    full_macs = sum(measure_macs(parts.model.module, 256)[0].values())
    assert np.isclose(art.sizes["macs"] / full_macs, 1 - cuts["8"].macs_removed, atol=0.01)
