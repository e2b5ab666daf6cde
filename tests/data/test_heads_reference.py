"""numpy heads against brute-force references: NMS, detection decode, top-k accuracy."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.models.heads import DetectHead, decode_detections, nms, topk
from edgetune.objectives.accuracy import topk_accuracy


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _nms_reference(boxes, scores, thr) -> list[int]:
    keep: list[int] = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if all(_iou(boxes[i], boxes[k]) <= thr for k in keep):
            keep.append(i)
    return keep


def _random_boxes(rng, n, extent=100.0):
    xy = rng.uniform(0, extent, (n, 2))
    wh = rng.uniform(5, extent / 3, (n, 2))
    return np.concatenate([xy, xy + wh], 1).astype(np.float32)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("thr", [0.3, 0.6])
def test_nms_matches_brute_force(seed, thr):
    rng = np.random.default_rng(seed)
    boxes = _random_boxes(rng, 150)
    scores = rng.uniform(0, 1, 150).astype(np.float32)
    keep = nms(boxes, scores, thr).tolist()
    assert keep == _nms_reference(boxes.astype(np.float64), scores, thr)
    assert 10 < len(keep) < 150  # suppression happened


def _decode_reference(output, head) -> list[tuple[int, float, tuple]]:
    """Per anchor best class above threshold, greedy NMS per class, best max_det overall."""
    pred = output.T
    found = []
    for c in range(head.num_classes):
        cand = [a for a in range(len(pred)) if pred[a, 4:].argmax() == c and pred[a, 4 + c] > head.score_threshold]
        xyxy = {a: (pred[a, 0] - pred[a, 2] / 2, pred[a, 1] - pred[a, 3] / 2,
                    pred[a, 0] + pred[a, 2] / 2, pred[a, 1] + pred[a, 3] / 2) for a in cand}
        boxes = [xyxy[a] for a in cand]
        for k in _nms_reference(boxes, [pred[a, 4 + c] for a in cand], head.iou_threshold):
            found.append((c, float(pred[cand[k], 4 + c]), boxes[k]))
    return sorted(found, key=lambda t: -t[1])[: head.max_det]


@pytest.mark.parametrize("seed", range(4))
def test_decode_detections_matches_reference(seed):
    rng = np.random.default_rng(seed)
    n_cls, anchors = 4, 400
    xy = rng.uniform(0, 160, (anchors, 2))
    wh = rng.uniform(8, 60, (anchors, 2))
    scores = rng.uniform(0, 1, (anchors, n_cls)) ** 3
    output = np.concatenate([xy, wh, scores], 1).T.astype(np.float32)
    head = DetectHead(num_classes=n_cls, category_ids=(1, 2, 3, 4), score_threshold=0.05, iou_threshold=0.5,
                      max_det=60)
    boxes, got_scores, classes = decode_detections(output, head)
    ref = _decode_reference(output.astype(np.float64), head)
    assert len(ref) == 60 == len(boxes)
    assert classes.tolist() == [c for c, _, _ in ref]
    np.testing.assert_allclose(got_scores, [s for _, s, _ in ref], rtol=1e-6)
    np.testing.assert_allclose(boxes, [b for _, _, b in ref], atol=1e-4)


def test_decode_detections_without_anything_above_threshold():
    head = DetectHead(num_classes=2, category_ids=(1, 2), score_threshold=0.5)
    output = np.zeros((6, 10), np.float32)
    boxes, scores, classes = decode_detections(output, head)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and classes.shape == (0,)


def test_topk_accuracy_hand_made():
    scores = np.array([
        [0.1, 0.7, 0.2, 0.0, 0.0, 0.0],  # label 1: top-1 hit
        [0.5, 0.1, 0.4, 0.0, 0.0, 0.0],  # label 2: second best -> top-5 only
        [0.9, 0.05, 0.01, 0.02, 0.015, 0.005],  # label 5: last of six -> miss in top-5
        [0.0, 0.0, 0.0, 0.1, 0.3, 0.6],  # label 3: third best -> top-5 only
    ])
    labels = np.array([1, 2, 5, 3])
    assert topk_accuracy(scores, labels) == {"top1": 0.25, "top5": 0.75}
    assert topk_accuracy(scores, labels, ks=(1, 2, 3)) == {"top1": 0.25, "top2": 0.5, "top3": 0.75}
    assert topk(scores, 3).tolist() == [[1, 2, 0], [0, 2, 1], [0, 1, 3], [5, 4, 3]]


def test_end_to_end_layouts_take_the_top_k_and_run_no_nms():
    from edgetune.models.heads import DetectHead, decode_detections, layout_of

    # two overlapping boxes of class 1 (IoU 0.8) and a weak one of class 0: NMS would drop one of the pair
    boxes = np.array([[10, 10, 50, 50], [12, 10, 52, 50], [100, 100, 120, 130]], np.float32)
    scores = np.array([[0.01, 0.9], [0.02, 0.8], [0.3, 0.0]], np.float32)
    dense = np.concatenate([boxes, scores], 1).T  # (4 + C, A), boxes xyxy
    head = DetectHead(num_classes=2, category_ids=(1, 2), layout="xyxy_scores", topk=3, score_threshold=0.05)
    b, s, c = decode_detections(dense, head)
    assert np.allclose(s, [0.9, 0.8, 0.3]) and c.tolist() == [1, 1, 0] and np.allclose(b[1], boxes[1])
    one_to_many = DetectHead(num_classes=2, category_ids=(1, 2), score_threshold=0.05)
    xywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2], scores], 1).T
    assert len(decode_detections(xywh, one_to_many)[1]) == 2  # the same boxes through NMS: one of the pair goes
    rows = np.array([[10, 10, 50, 50, 0.9, 1], [12, 10, 52, 50, 0.8, 1], [0, 0, 1, 1, 0.0001, 0]], np.float32)
    head6 = DetectHead(num_classes=2, category_ids=(1, 2), layout="xyxy_score_class")
    b, s, c = decode_detections(rows, head6)
    assert np.allclose(s, [0.9, 0.8]) and c.tolist() == [1, 1]
    assert layout_of([1, 300, 6], 2) == "xyxy_score_class" and layout_of([1, 6, 1344], 2) == "xywh_scores"
