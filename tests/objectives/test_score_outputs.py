"""One scoring path: the controller (``evaluate``) and the agent (``make_bundle -> read_bundle ->
evaluate_bundle``) give the same metrics for the same forward function, and missing ground truth is a
DataError, never a quiet zero."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from edgetune.data import Dataset, ImageRecord
from edgetune.device_agents import evaluate_bundle, make_bundle, read_bundle
from edgetune.errors import DataError
from edgetune.models import ClassifyHead, evaluate, score_outputs

SIZE = 32
REDS = (20, 60, 100, 140)  # class c is a solid image of red value REDS[c]


def _per_image(forward):
    """Call ``forward`` one image at a time, so both paths get bit-identical outputs whatever their batch."""
    return lambda x: np.concatenate([forward(x[i : i + 1]) for i in range(len(x))])


@pytest.fixture(scope="module")
def classify_ds(tmp_path_factory) -> Dataset:
    """12 solid SIZE x SIZE images (no resize, no padding), 3 per class; labels of the last 3 are wrong."""
    root = tmp_path_factory.mktemp("solid")
    records = []
    for k in range(12):
        pixels = np.zeros((SIZE, SIZE, 3), np.uint8)
        pixels[..., 0] = REDS[k % 4]
        Image.fromarray(pixels).save(root / f"{k}.png")
        label = (k % 4 + 1) % 4 if k >= 9 else k % 4
        records.append(ImageRecord(id=k + 1, file=str(root / f"{k}.png"), width=SIZE, height=SIZE, label=label))
    return Dataset(name="solid", task="classify", class_names=("a", "b", "c", "d"), category_ids=(0, 1, 2, 3),
                   records=tuple(records))


def _red_classifier(x: np.ndarray) -> np.ndarray:
    """(N, 3, S, S) in [0, 1] -> (N, 4) scores: the closer the red value to REDS[c], the higher."""
    red = x[:, 0].mean(axis=(1, 2)) * 255
    return -np.abs(red[:, None] - np.asarray(REDS, np.float32)[None, :])


def test_detection_agent_path_equals_controller_path(shapes_val, det_s):
    import torch

    ds = shapes_val.subset(range(20))

    @torch.no_grad()
    def forward(x: np.ndarray) -> np.ndarray:
        return det_s.module(torch.from_numpy(x)).numpy()

    fwd = _per_image(forward)
    controller = evaluate(fwd, ds, det_s.head, size=det_s.input_size, batch=8)
    bundle = read_bundle(make_bundle(ds, det_s.head, size=det_s.input_size).data)
    agent = evaluate_bundle(fwd, bundle, batch=1)
    assert agent == controller
    assert controller["map50_95"] > 0.5 and len(controller) == 14  # 12 COCO stats + 2 standard errors


def test_classification_agent_path_equals_controller_path(classify_ds):
    head = ClassifyHead(num_classes=4, category_ids=(0, 1, 2, 3))
    controller = evaluate(_red_classifier, classify_ds, head, size=SIZE, batch=5)
    agent = evaluate_bundle(_red_classifier, read_bundle(make_bundle(classify_ds, head, size=SIZE).data), batch=2)
    assert agent == controller == {"top1": 0.75, "top5": 1.0, "top1_se": 0.125, "top5_se": 0.0}


def test_classification_bundle_without_labels_is_a_data_error(classify_ds):
    head = ClassifyHead(num_classes=4, category_ids=(0, 1, 2, 3))
    src = zipfile.ZipFile(io.BytesIO(make_bundle(classify_ds, head, size=SIZE).data))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as dst:
        for info in src.infolist():
            if info.filename != "labels.npy":
                dst.writestr(info, src.read(info))
    bundle = read_bundle(buf.getvalue())
    assert bundle.labels is None
    with pytest.raises(DataError, match="classifier needs the label of every image"):
        evaluate_bundle(_red_classifier, bundle)


def test_missing_ground_truth_or_rows_are_data_errors(shapes_val, det_s):
    ds = shapes_val.subset(range(2))
    bundle = read_bundle(make_bundle(ds, det_s.head, size=det_s.input_size).data)
    outputs = np.zeros((2, 4 + det_s.head.num_classes, 8), np.float32)
    common = {"head": det_s.head, "metas": bundle.metas, "ids": bundle.ids}
    assert set(score_outputs(outputs, **common, coco_gt=bundle.coco_gt).values()) == {0.0}  # no detections
    with pytest.raises(DataError, match="detector needs the COCO ground truth"):
        score_outputs(outputs, **common)
    with pytest.raises(DataError, match="outputs of 1 images, 2 letterbox metas and 2 image ids"):
        score_outputs(outputs[:1], **common, coco_gt=bundle.coco_gt)
