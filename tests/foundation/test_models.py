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
