"""Accuracy metrics: COCO mAP through faster-coco-eval (equal to pycocotools' COCOeval), top-k.

numpy only: the device agents compute accuracy from their own runtime's outputs with this module.
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np

__all__ = ["COCO_METRICS", "coco_map", "topk_accuracy", "detections_to_coco"]

# The first 12 entries of COCOeval.stats, in order.
COCO_METRICS = (
    "map50_95", "map50", "map75", "map_small", "map_medium", "map_large",
    "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large",
)


def detections_to_coco(image_id: int, boxes_xyxy: np.ndarray, scores: np.ndarray, classes: np.ndarray,
                       category_ids: tuple[int, ...] | list[int]) -> list[dict]:
    """One image's detections (original-image pixels) as COCO result dicts (bbox xywh)."""
    out = []
    for (x0, y0, x1, y1), s, c in zip(boxes_xyxy.tolist(), scores.tolist(), classes.tolist(), strict=True):
        out.append({"image_id": int(image_id), "category_id": int(category_ids[c]),
                    "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(s)})
    return out


def coco_map(gt: dict, detections: list[dict], *, image_ids: list[int] | None = None) -> dict[str, float]:
    """COCO bbox metrics (the 12 of COCOeval.stats, named as in COCO_METRICS).

    ``gt`` is a COCO instances dict; ``image_ids`` restricts evaluation to those images (default: all
    images of ``gt``; images without detections count as misses). No detections at all gives zeros
    (pycocotools raises on an empty result list).
    """
    from faster_coco_eval import COCO, COCOeval_faster

    ids = sorted(image_ids if image_ids is not None else [im["id"] for im in gt["images"]])
    if not detections:
        return dict.fromkeys(COCO_METRICS, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(copy.deepcopy(gt))
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=lambda *a, **k: None)
        ev.params.imgIds = ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [float(v) for v in ev.stats[:12]]
    return dict(zip(COCO_METRICS, stats, strict=True))


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy of (N, C) scores against (N,) integer labels: {'top1': ..., 'top5': ...}."""
    labels = np.asarray(labels)
    out = {}
    for k in ks:
        kk = min(k, scores.shape[1])
        pred = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]  # the k best, in any order (ties: any of them)
        out[f"top{k}"] = float((pred == labels[:, None]).any(1).mean()) if len(labels) else 0.0
    return out
