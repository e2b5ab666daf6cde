"""Accuracy of a model on a dataset: one loop over letterboxed batches for any forward function.

``run_batches`` takes a callable (torch module, onnxruntime session, ...) mapping a float32
(N, 3, S, S) batch in [0, 1] to the raw output, so torch and every runtime share the same decode and
COCO evaluation. numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from edgetune.data._base import Dataset
from edgetune.data._preprocess import LetterboxMeta, letterbox, to_input, unletterbox
from edgetune.models.heads import ClassifyHead, DetectHead, decode_detections
from edgetune.objectives.accuracy import coco_map, detections_to_coco, topk_accuracy

__all__ = ["iter_batches", "evaluate", "postprocess_detections"]


def iter_batches(ds: Dataset, *, size: int, batch: int) -> Iterator[tuple[np.ndarray, list[LetterboxMeta], list[int]]]:
    """Letterboxed uint8 batches (N, 3, S, S), their letterbox metas, and image ids."""
    for start in range(0, len(ds), batch):
        idx = range(start, min(start + batch, len(ds)))
        items = [letterbox(ds.load_image(i), size) for i in idx]
        yield np.stack([a for a, _ in items]), [m for _, m in items], [ds.records[i].id for i in idx]


def postprocess_detections(output: np.ndarray, metas: list[LetterboxMeta], ids: list[int],
                           head: DetectHead) -> list[dict]:
    """Raw batch output (N, 4 + C, A) -> COCO result dicts in original-image pixels."""
    dets: list[dict] = []
    for out, meta, iid in zip(output, metas, ids, strict=True):
        boxes, scores, classes = decode_detections(out, head)
        dets.extend(detections_to_coco(iid, unletterbox(boxes, meta), scores, classes, head.category_ids))
    return dets


def evaluate(forward: Callable[[np.ndarray], np.ndarray], ds: Dataset, head: DetectHead | ClassifyHead, *,
             size: int, batch: int = 16) -> dict[str, float]:
    """COCO metrics (detection) or top-1/top-5 (classification) of ``forward`` on ``ds``."""
    if isinstance(head, DetectHead):
        dets: list[dict] = []
        for x, metas, ids in iter_batches(ds, size=size, batch=batch):
            dets.extend(postprocess_detections(np.asarray(forward(to_input(x))), metas, ids, head))
        return coco_map(ds.coco_gt(), dets)
    scores, labels = [], []
    for x, _, ids in iter_batches(ds, size=size, batch=batch):
        scores.append(np.asarray(forward(to_input(x))))
        by_id = {r.id: r.label for r in ds.records}
        labels.extend(by_id[i] for i in ids)
    return topk_accuracy(np.concatenate(scores), np.asarray(labels))
