"""A classifier brought by a ``python`` factory is pruned and recovered through the task seam (the generic
classification adapter: cross-entropy on the labels + distillation of the uncompressed model), scored
with taylor (it has a loss to take gradients of), exported, and scored by the same top-k path as on an
agent. Accuracy after recovery is a benchmark matter; this checks the mechanics end to end."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

SIZE = 64
COLOURS = {"red": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}


def tiny_classifier(num_classes: int = 3):
    from torch import nn

    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    return nn.Sequential(block(3, 16, 2), block(16, 32, 2), block(32, 32, 1), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(32, num_classes))


@pytest.fixture(scope="module")
def colour_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, n in (("train", 16), ("val", 4)):
        for name, rgb in COLOURS.items():
            for i in range(n):
                px = np.clip(np.array(rgb) + rng.normal(0, 25, (40, 48, 3)), 0, 255).astype(np.uint8)
                (root / split / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(px).save(root / split / name / f"{i:02d}.png")
    return root


def test_a_factory_classifier_prunes_recovers_and_scores(colour_folders, tmp_path):
    from edgetune.compress import RecoverySpec, compress
    from edgetune.config import DataSpec, ModelSpec
    from edgetune.data import load_data
    from edgetune.device_agents import evaluate_bundle, make_bundle, read_bundle
    from edgetune.models import ClassifyAdapter, load_model
    from edgetune.spaces import CompressionConfig

    splits = load_data(DataSpec(source="imagefolder", path=str(colour_folders), val_images=12, calib_images=6),
                       need_train=True)
    model = load_model(ModelSpec(source="python", factory=f"{__name__}:tiny_classifier", task="classify",
                                 input_size=SIZE), class_names=splits.val.class_names,
                       category_ids=splits.val.category_ids)
    assert isinstance(model.adapter, ClassifyAdapter) and model.adapter.has_loss
    config = CompressionConfig(sparsity={"1.0": {"ratio": 0.25}, "2.0": {"ratio": 0.25}})
    art = compress(model, config, calib=splits.calib, train=splits.train, workdir=tmp_path,
                   recovery=RecoverySpec(steps=6, batch=8, train_images=24))
    manifest = art.manifest
    assert manifest["resolved"]["importance"] == "taylor"  # auto: the classifier has a loss
    assert manifest["resolved"]["channels"] == {"1.0": [32, 24], "2.0": [32, 24]}
    result = manifest["recovery"]["result"]
    assert result["steps"] == result["steps_asked"] == 6 and np.isfinite(result["loss"])

    import onnxruntime as ort

    sess = ort.InferenceSession(str(art.onnx_path), providers=["CPUExecutionProvider"])
    bundle = read_bundle(make_bundle(splits.val, model.head, size=SIZE).data)
    scores = evaluate_bundle(lambda x: sess.run(None, {sess.get_inputs()[0].name: x})[0], bundle)
    assert set(scores) == {"top1", "top5", "top1_se", "top5_se"} and 0.0 <= scores["top1"] <= scores["top5"] == 1.0
