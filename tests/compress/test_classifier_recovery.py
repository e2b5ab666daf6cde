"""A classifier brought by a ``python`` factory, trained here from scratch on an ImageFolder the test writes
(six shape classes, 32 px), is 25%-channel pruned with the DEFAULT recovery (the generic classification
adapter: cross-entropy on the labels + distillation of the uncompressed model, taylor importance), exported,
and scored by the same top-k path as on an agent: it keeps >= 0.95x of the fp32 top-1.

Everything is seeded and runs on CPU; measured here (one thread, as ``make test`` runs it): fp32 0.890, 25%
cut with the default recovery 0.913 (``benchmarks/bench_classifier.py`` prints the numbers with latency).
"""

from __future__ import annotations

import numpy as np
import pytest
from dataset_files import write_shape_folders
from tiny_models import FACTORY, train_classifier

SIZE = 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(splits, fp32 LoadedModel with its trained weights, bundle of the val split)."""
    from edgetune.config import DataSpec, ModelSpec
    from edgetune.data import load_data
    from edgetune.device_agents import make_bundle, read_bundle
    from edgetune.models import load_model

    root = tmp_path_factory.mktemp("shapes-cls")
    write_shape_folders(root / "data", {"train": 300, "val": 50}, size=SIZE)
    splits = load_data(DataSpec(source="imagefolder", path=str(root / "data"), val_images=300, calib_images=32),
                       need_train=True)
    spec = ModelSpec(source="python", factory=FACTORY, task="classify", input_size=SIZE)
    kw = {"class_names": splits.val.class_names, "category_ids": splits.val.category_ids}
    weights = train_classifier(load_model(spec, **kw), splits.train, root / "fp32.pt", batch=32)
    model = load_model(spec.model_copy(update={"weights": str(weights)}), **kw)
    return splits, model, read_bundle(make_bundle(splits.val, model.head, size=SIZE).data)


def _scores(onnx_path, bundle) -> dict:
    import onnxruntime as ort

    from edgetune.device_agents import evaluate_bundle

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return evaluate_bundle(lambda x: sess.run(None, {sess.get_inputs()[0].name: x})[0], bundle)


def test_quarter_channels_cut_with_default_recovery_keeps_95_percent_of_top1(trained, tmp_path):
    from edgetune.compress import DEFAULT_STEPS, RecoverySpec, compress
    from edgetune.models import ClassifyAdapter
    from edgetune.spaces import CompressionConfig, SpaceSpec, build_space

    splits, model, bundle = trained
    assert isinstance(model.adapter, ClassifyAdapter) and model.adapter.has_loss
    fp32 = compress(model, CompressionConfig(), calib=splits.calib, workdir=tmp_path)
    base = _scores(fp32.onnx_path, bundle)
    assert set(base) == {"top1", "top5", "top1_se", "top5_se"} and base["top1"] >= 0.8  # trained (chance: 0.17)

    space = build_space(model, SpaceSpec(sparsity={"kind": "channel", "ratios": [0.0, 0.25]}))
    cut = {g.name: {"ratio": 0.25} for g in space.groups if "channel:0.25" in space.sparsity_choices[g.name]}
    assert len(cut) == 5  # every conv block, the last one included (its channels feed the Linear)
    art = compress(model, CompressionConfig(sparsity=cut), calib=splits.calib, train=splits.train,
                   workdir=tmp_path, recovery=RecoverySpec(), space=space)
    manifest = art.manifest
    assert manifest["resolved"]["importance"] == "taylor"  # auto: the classifier has a loss
    assert manifest["resolved"]["channels"]["3.0"] == [96, 72] and manifest["resolved"]["channels"]["4.0"] == [128, 96]
    result = manifest["recovery"]["result"]
    assert result["steps"] == result["steps_asked"] == DEFAULT_STEPS and np.isfinite(result["loss"])
    assert art.sizes["params"] < fp32.sizes["params"]
    top1 = _scores(art.onnx_path, bundle)["top1"]
    assert top1 >= 0.95 * base["top1"], (top1, base["top1"])
