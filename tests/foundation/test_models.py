"""Model sources: registry errors, python factory, weights that do not fit, the builtin detector's shape.

Loading, hashing and corrupt / missing weights of every source: ``test_model_sources.py``."""

from __future__ import annotations

import pytest
import torch

from edgetune.config import ModelSpec
from edgetune.errors import ModelError
from edgetune.models import available_sources, get_source, load_model
from edgetune.models.sources import BUILTIN_MODELS, sha256_file

CLASSES = ("a", "b", "c", "d", "e", "f")
CATS = (1, 2, 3, 4, 5, 6)


def test_unknown_source_lists_valid_ones():
    with pytest.raises(ModelError, match=f"registered sources: {', '.join(available_sources())}"):
        get_source("tensorflow")


def test_builtin_detector_architecture(det_s):
    m = det_s.module
    convs = [mod for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert len(convs) >= 25
    assert any(c.groups == c.in_channels > 1 for c in convs)  # depthwise-separable convs present
    assert 0.5e6 <= sum(p.numel() for p in m.parameters()) <= 3e6
    assert all(c.out_channels % 8 == 0 for c in convs if c.out_channels > 6)
    assert not any(isinstance(mod, torch.nn.SiLU) for mod in m.modules())
    out = m(torch.zeros(2, 3, 256, 256))
    assert out.shape == (2, 4 + 6, 32 * 32 + 16 * 16 + 8 * 8)
    assert det_s.source_hash == BUILTIN_MODELS["det-s"]["sha256"] == sha256_file(
        "edgetune/models/weights/det-s.pt")


def test_builtin_rejects_wrong_number_of_classes():
    with pytest.raises(ModelError, match="trained on 6 classes"):
        load_model(ModelSpec(source="builtin", name="det-s"), class_names=("x",), category_ids=(1,))


def test_python_factory_that_does_not_import():
    spec = ModelSpec(source="python", factory="no_such_pkg.models:build", input_size=64, task="classify")
    with pytest.raises(ModelError, match="module 'no_such_pkg.models' does not import"):
        load_model(spec, class_names=CLASSES, category_ids=CATS)


def test_python_factory_and_weights_that_do_not_fit(tmp_path):
    from edgetune.models.builtin.det import build_detector

    good = build_detector("det-s", num_classes=6)
    torch.save(good.state_dict(), tmp_path / "ok.pt")
    spec = ModelSpec(source="python", factory="edgetune.models.builtin.det:build_detector", input_size=256,
                     task="detect", kwargs={"size": "det-s", "num_classes": 6}, weights=str(tmp_path / "ok.pt"))
    loaded = load_model(spec, class_names=CLASSES, category_ids=CATS).module.state_dict()
    assert all(torch.equal(v, loaded[k]) for k, v in good.state_dict().items())  # the file's weights, not an init
    torch.save(build_detector("det-m", num_classes=6).state_dict(), tmp_path / "bad.pt")
    with pytest.raises(ModelError, match="do not fit"):
        load_model(spec.model_copy(update={"weights": str(tmp_path / "bad.pt")}), class_names=CLASSES,
                   category_ids=CATS)


def test_onnx_source(det_s_onnx):
    loaded = load_model(ModelSpec(source="onnx", path=str(det_s_onnx), task="detect"), class_names=CLASSES,
                        category_ids=CATS)
    assert loaded.module is None and loaded.input_size == 256 and loaded.onnx_path == det_s_onnx


def _tiny_onnx(path, h, w):
    """images (1, 3, h, w) -> conv -> global pooling -> flatten: a classifier graph of the given input shape."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((6, 3, 3, 3), np.float32), "w")
    nodes = [helper.make_node("Conv", ["images", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]), helper.make_node("Flatten", ["p"], ["output"])]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, h, w])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 6])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), str(path))
    return str(path)


def test_onnx_input_size_must_match_a_fixed_graph(det_s_onnx, tmp_path):
    """An ONNX file cannot be resized: a `model.input_size` other than the graph's fixed one is refused at load
    (naming the field, both sizes and the fix), not later inside compress; a dynamic height and width take any."""
    spec = ModelSpec(source="onnx", path=str(det_s_onnx), task="detect")
    assert load_model(spec.model_copy(update={"input_size": 256}), class_names=CLASSES,
                      category_ids=CATS).input_size == 256
    with pytest.raises(ModelError, match=r"`model.input_size` 224 does not match .*det-s.onnx.*fixed 1x3x256x256 "
                                         r"input.*Remove `model.input_size`.*or set it to 256"):
        load_model(spec.model_copy(update={"input_size": 224}), class_names=CLASSES, category_ids=CATS)
    dynamic = ModelSpec(source="onnx", path=_tiny_onnx(tmp_path / "dyn.onnx", "height", "width"), task="classify")
    assert load_model(dynamic.model_copy(update={"input_size": 96}), class_names=CLASSES,
                      category_ids=CATS).input_size == 96
    with pytest.raises(ModelError, match=r"input size of .*dyn.onnx.*1x3xheightxwidth.*set `model.input_size`"):
        load_model(dynamic, class_names=CLASSES, category_ids=CATS)
    wide = ModelSpec(source="onnx", path=_tiny_onnx(tmp_path / "wide.onnx", 64, 96), task="classify")
    with pytest.raises(ModelError, match=r"1x3x64x96 input, which is not square"):
        load_model(wide, class_names=CLASSES, category_ids=CATS)
