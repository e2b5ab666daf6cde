"""Accuracy metrics: COCO mAP through faster-coco-eval (equal to pycocotools' COCOeval), top-k.

numpy only: the device agents compute accuracy from their own runtime's outputs with this module.
"""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np

__all__ = ["COCO_METRICS", "SE_SUFFIX", "coco_map", "topk_accuracy", "topk_se", "detections_to_coco"]

SE_SUFFIX = "_se"  # ``map50_95_se``: the standard error over images of ``map50_95`` (see coco_map)
SE_FOLDS = 10

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


def coco_map(gt: dict, detections: list[dict], *, image_ids: list[int] | None = None,
             se: bool = False) -> dict[str, float]:
    """COCO bbox metrics (the 12 of COCOeval.stats, named as in COCO_METRICS).

    ``gt`` is a COCO instances dict; ``image_ids`` restricts evaluation to those images (default: all
    images of ``gt``; images without detections count as misses). No detections at all gives zeros
    (pycocotools raises on an empty result list).

    ``se``: add ``map50_95_se`` and ``map50_se``, the standard error over images of the two, by batch
    means: the images are dealt into 10 interleaved folds, each fold is scored alone, and the standard
    error is the folds' standard deviation over sqrt(10) (a fold has 1/10 of the images, so ~10x the
    variance). It is what tells a real difference between two models from the luck of which images were
    drawn; it needs >= 20 images (fewer: left out). It costs about one more evaluation.
    """
    from faster_coco_eval import COCO

    ids = sorted(image_ids if image_ids is not None else [im["id"] for im in gt["images"]])
    if not detections:
        out = dict.fromkeys(COCO_METRICS, 0.0)
        return {**out, "map50_95_se": 0.0, "map50_se": 0.0} if se and len(ids) >= 2 * SE_FOLDS else out
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(copy.deepcopy(gt))
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        stats = _stats(coco_gt, coco_dt, ids)
        out = dict(zip(COCO_METRICS, stats, strict=True))
        if se and len(ids) >= 2 * SE_FOLDS:
            folds = np.asarray([_stats(coco_gt, coco_dt, ids[k::SE_FOLDS])[:2] for k in range(SE_FOLDS)])
            folds = folds[(folds >= 0).all(axis=1)]  # -1: a fold without ground truth has no mAP
            if len(folds) >= 2:
                spread = folds.std(axis=0, ddof=1) / np.sqrt(len(folds))
                out.update({"map50_95_se": float(spread[0]), "map50_se": float(spread[1])})
    return out


def _stats(coco_gt, coco_dt, ids: list[int]) -> list[float]:
    from faster_coco_eval import COCOeval_faster

    ev = COCOeval_faster(coco_gt, coco_dt, iouType="bbox", print_function=lambda *a, **k: None)
    ev.params.imgIds = ids
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return [float(v) for v in ev.stats[:12]]


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Top-k accuracy of (N, C) scores against (N,) integer labels: {'top1': ..., 'top5': ...}."""
    labels = np.asarray(labels)
    out = {}
    for k in ks:
        kk = min(k, scores.shape[1])
        pred = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]  # the k best, in any order (ties: any of them)
        out[f"top{k}"] = float((pred == labels[:, None]).any(1).mean()) if len(labels) else 0.0
    return out


def topk_se(acc: dict[str, float], n: int) -> dict[str, float]:
    """The binomial standard error over ``n`` images of each top-k accuracy: ``{"top1_se": ...}``."""
    if n < 2:
        return {}
    return {k + SE_SUFFIX: float(np.sqrt(v * (1 - v) / n)) for k, v in acc.items()}
