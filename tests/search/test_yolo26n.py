"""YOLO26n (the yolo extra, built from its yaml, random weights), scored as it is deployed: NMS-free. It loads
with its one-to-one head only, every offered group cuts at 30% and exports to an ONNX that matches the pruned
torch model (within the model's own fp32 rounding), and its fine-tune reaches the backbone (Ultralytics' head
detaches the one-to-one branch's input in training mode)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("ultralytics") is None:  # not imported here: importing it patches PIL
    pytest.skip("the yolo extra (make test installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def yolo26n():
    from edgetune.config import ModelSpec
    from edgetune.models import load_model

    return load_model(ModelSpec(source="ultralytics", name="yolo26n.yaml", input_size=128),
                      class_names=tuple("abcdef"), category_ids=tuple(range(1, 7)))


def test_loads_nms_free_and_every_offered_group_cuts_and_exports(yolo26n, tmp_path):
    import onnxruntime as ort

    from edgetune.compress import RecoverySpec, compress
    from edgetune.spaces import CompressionConfig, SpaceSpec, build_space

    head = yolo26n.module.model.model[-1]
    assert yolo26n.head.layout == "xyxy_scores" and head.cv2 is None and head.one2one_cv2 is not None
    space = build_space(yolo26n, SpaceSpec(sparsity={"kind": "channel", "ratios": [0.0, 0.3]}))
    offered = [g.name for g in space.groups if "channel:0.3" in space.sparsity_choices[g.name]]
    assert len(offered) >= 50
    config = CompressionConfig(sparsity={g: {"kind": "channel", "ratio": 0.3} for g in offered})
    calib = np.random.default_rng(0).random((4, 3, 128, 128), dtype=np.float32)
    art = compress(yolo26n, config, calib=calib, workdir=tmp_path, recovery=RecoverySpec(steps=0), space=space)
    assert art.sizes["params"] < 0.75 * sum(p.numel() for p in yolo26n.module.parameters())
    assert art.manifest["head"]["layout"] == "xyxy_scores"
    sess = ort.InferenceSession(str(art.onnx_path), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: calib[:1]})[0]
    assert out.shape == (1, 4 + 6, (16 * 16 + 8 * 8 + 4 * 4))  # decoded one-to-one outputs, top-k on the device


def test_the_one_to_one_fine_tune_reaches_the_backbone(yolo26n):
    import torch

    from edgetune.data.shapes import shapes_split

    adapter, module = yolo26n.adapter, yolo26n.module
    data = adapter.prepare(shapes_split("train", 8), size=128, limit=8)
    batch = adapter.sample(data, np.random.default_rng(0), 4, None)
    module.train()
    try:
        loss = adapter.loss(adapter.forward(module, batch[0]), batch)
        loss.backward()
        stem = module.model.model[0].conv.weight
        assert torch.isfinite(loss) and stem.grad is not None and float(stem.grad.abs().sum()) > 0
    finally:
        module.zero_grad(set_to_none=True)
        module.eval()


def test_an_unshipped_builtin_says_how_to_train_it(monkeypatch):
    from edgetune.config import ModelSpec
    from edgetune.errors import ModelError
    from edgetune.models import load_model, sources

    monkeypatch.setitem(sources.BUILTIN_MODELS, "yolo26n", {**sources.BUILTIN_MODELS["yolo26n"], "sha256": None})
    with pytest.raises(ModelError, match="edgetune train-builtin --name yolo26n"):
        load_model(ModelSpec(source="builtin", name="yolo26n"), class_names=tuple("abcdef"),
                   category_ids=tuple(range(1, 7)))


def test_the_trained_model_with_both_branches_decodes_as_the_loaded_one():
    """The trainer wraps YOLO26n with its one-to-many branch still there, where Ultralytics decodes xywh: the
    wrapper decodes x1y1x2y2 either way (a validation curve scored 0.0 before it did)."""
    import torch

    from edgetune.config import ModelSpec
    from edgetune.models import load_model
    from edgetune.models.ultralytics_yolo import build_from_yaml, wrap_detection_model

    full = wrap_detection_model(build_from_yaml("yolo26n.yaml", 6)).eval()
    assert full.model.model[-1].cv2 is not None
    loaded = load_model(ModelSpec(source="ultralytics", name="yolo26n.yaml", input_size=128),
                        class_names=tuple("abcdef"), category_ids=tuple(range(1, 7)))  # fresh: the fixture trained
    x = torch.rand(1, 3, 128, 128)
    with torch.no_grad():
        a, b = full(x), loaded.module.eval()(x)
    assert a.shape == b.shape and torch.equal(a[:, :4], b[:, :4])  # same seeded weights, same boxes
    assert bool((a[0, 2] >= a[0, 0]).all())  # x2 >= x1: corners, not width and height
