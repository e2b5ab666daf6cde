"""Task heads in numpy: detection decode + NMS, classification top-k.

Shared by the controller and the device agents (no torch, no torchvision). The model's detection
output layout is one of Ultralytics' two:

- ``xywh_scores`` (YOLOv8, YOLO11, edgetune's builtin detectors): ``(N, 4 + C, A)``, boxes as cx, cy, w, h in
  input pixels followed by per-class scores in [0, 1]; class-aware NMS here.
- ``xyxy_scores`` (end-to-end heads: YOLO26, YOLOv10, as edgetune exports them): ``(N, 4 + C, A)``, boxes as
  x1, y1, x2, y2 in input pixels followed by per-class scores; decoded by the head's own top-k (the ``topk``
  anchors with the highest class score, then the ``topk`` best anchor-class pairs among them, Ultralytics'
  ``Detect.postprocess``) and no NMS: the one-to-one head was trained not to need it.
- ``xyxy_score_class`` (an end-to-end model exported by Ultralytics with its top-k inside): ``(N, K, 6)``, the
  model's own top-K detections as x1, y1, x2, y2, score, class index; no NMS.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgetune.errors import ModelError

__all__ = ["DetectHead", "ClassifyHead", "head_from_dict", "nms", "decode_detections", "topk", "END2END_LAYOUT",
           "LAYOUTS", "layout_of"]

END2END_LAYOUT = "xyxy_scores"
LAYOUTS = ("xywh_scores", END2END_LAYOUT, "xyxy_score_class")


@dataclass(frozen=True)
class DetectHead:
    """How to turn a detector's raw output into detections.

    ``category_ids[k]`` is the dataset category id written for class ``k``. The thresholds are the
    evaluation defaults of the field (low score threshold so mAP is not understated).
    """

    num_classes: int
    category_ids: tuple[int, ...]
    layout: str = "xywh_scores"
    score_threshold: float = 0.001
    iou_threshold: float = 0.6
    max_det: int = 100
    pre_nms_topk: int = 3000
    multi_label: bool = False
    topk: int = 300  # end-to-end layouts: the detections the head keeps before the score threshold (max_det)
    kind: str = "detect"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["category_ids"] = list(self.category_ids)
        return d


@dataclass(frozen=True)
class ClassifyHead:
    """Classification: logits or probabilities ``(N, C)``; ``category_ids`` maps index -> label id."""

    num_classes: int
    category_ids: tuple[int, ...]
    kind: str = "classify"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["category_ids"] = list(self.category_ids)
        return d


def head_from_dict(d: dict) -> DetectHead | ClassifyHead:
    d = dict(d)
    kind = d.get("kind")
    d["category_ids"] = tuple(d.get("category_ids", ()))
    if kind == "detect":
        return DetectHead(**d)
    if kind == "classify":
        return ClassifyHead(**d)
    raise ModelError(f"unknown head kind {kind!r} in a head spec; expected 'detect' or 'classify'.")


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression on xyxy boxes; returns kept indices, best score first."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        xx1 = np.maximum(x1[i], x1[rest])
        yy1 = np.maximum(y1[i], y1[rest])
        xx2 = np.minimum(x2[i], x2[rest])
        yy2 = np.minimum(y2[i], y2[rest])
        inter = np.maximum(xx2 - xx1, 0) * np.maximum(yy2 - yy1, 0)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def layout_of(output_shape, num_classes: int) -> str:
    """The detection layout of an output of shape ``output_shape`` (batch first; unknown dims as 0, None or
    names): ``(N, K, 6)`` whose second dim is not ``4 + C`` is end-to-end, anything else the ``(N, 4 + C, A)``
    layout (whose shape check then says what is wrong)."""
    dims = [d if isinstance(d, int) and d > 0 else None for d in output_shape]
    if len(dims) == 3 and dims[2] == 6 and dims[1] != 4 + num_classes:
        return "xyxy_score_class"
    return "xywh_scores"


def _decode_end2end(output: np.ndarray, head: DetectHead) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if output.ndim != 2 or output.shape[1] != 6:
        raise ModelError(f"end-to-end detector output has shape {output.shape}, expected (detections, 6) per image "
                         "(x1, y1, x2, y2, score, class). Check the model's head or the head spec's layout.")
    pred = output.astype(np.float32, copy=False)
    keep = np.nonzero(pred[:, 4] > head.score_threshold)[0]
    keep = keep[np.argsort(-pred[keep, 4], kind="stable")][: head.max_det]
    classes = np.clip(np.rint(pred[keep, 5]), 0, head.num_classes - 1).astype(np.int64)
    return pred[keep, :4], pred[keep, 4], classes


def _top_pairs(pred: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A, 4 + C) -> the ``k`` best (anchor, class) pairs among the ``k`` anchors with the best class score:
    (anchor indices, class indices, scores), best first."""
    scores = pred[:, 4:]
    k = min(k, len(scores))
    if k <= 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    anchors = np.argpartition(-scores.max(1), k - 1)[:k]
    flat = scores[anchors].ravel()
    top = np.argpartition(-flat, k - 1)[:k]
    top = top[np.argsort(-flat[top], kind="stable")]
    nc = scores.shape[1]
    return anchors[top // nc], top % nc, flat[top]


def decode_detections(output: np.ndarray, head: DetectHead) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's raw output -> (boxes xyxy in input pixels, scores, class indices), by the head's layout
    (see the module doc): class-aware NMS for ``xywh_scores``, the top-k of an end-to-end head otherwise."""
    if head.layout == "xyxy_score_class":
        return _decode_end2end(output, head)
    if head.layout not in LAYOUTS:
        raise ModelError(f"unknown detection layout {head.layout!r}; expected one of {', '.join(LAYOUTS)}.")
    if output.ndim != 2 or output.shape[0] != 4 + head.num_classes:
        raise ModelError(
            f"detector output has shape {output.shape}, expected (4 + {head.num_classes}, anchors) per image "
            "(Ultralytics layout). Check the model's head or the head spec."
        )
    pred = output.T.astype(np.float32, copy=False)
    if head.layout == END2END_LAYOUT:  # one-to-one head: its top-k, no NMS
        a_idx, c_idx, scores = _top_pairs(pred, head.topk)
        keep = np.nonzero(scores > head.score_threshold)[0][: head.max_det]
        return pred[a_idx[keep], :4], scores[keep], c_idx[keep].astype(np.int64)
    cls_scores = pred[:, 4:]
    if head.multi_label:
        a_idx, c_idx = np.nonzero(cls_scores > head.score_threshold)
        scores = cls_scores[a_idx, c_idx]
    else:
        c_idx = cls_scores.argmax(1)
        scores = cls_scores[np.arange(len(c_idx)), c_idx]
        a_idx = np.nonzero(scores > head.score_threshold)[0]
        c_idx, scores = c_idx[a_idx], scores[a_idx]
    if scores.size > head.pre_nms_topk:
        top = np.argpartition(-scores, head.pre_nms_topk)[: head.pre_nms_topk]
        a_idx, c_idx, scores = a_idx[top], c_idx[top], scores[top]
    xywh = pred[a_idx, :4]
    boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
    if scores.size == 0:
        return boxes, scores, c_idx.astype(np.int64)
    # class-aware NMS with the coordinate-offset trick
    span = float(boxes.max() - boxes.min()) + 1.0  # boxes may start below 0: offset by the full span
    offset = c_idx[:, None].astype(np.float32) * span
    keep = nms(boxes + offset, scores, head.iou_threshold)[: head.max_det]
    return boxes[keep], scores[keep], c_idx[keep].astype(np.int64)


def topk(logits: np.ndarray, k: int = 5) -> np.ndarray:
    """Indices of the ``k`` largest scores per row, best first: (N, k)."""
    k = min(k, logits.shape[1])
    idx = np.argpartition(-logits, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(logits, idx, 1).argsort(1)[:, ::-1]
    return np.take_along_axis(idx, order, 1)
