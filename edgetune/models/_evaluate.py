"""Accuracy of a model on a dataset: raw outputs -> metrics in one place, for every forward function.

:class:`OutputScorer` (and its one-shot form :func:`score_outputs`) is the only code that turns raw model
outputs into metrics (detection: decode,
unletterbox, COCO mAP; classification: top-k). :func:`evaluate` (controller, ``edgetune eval``) and
``edgetune.device_agents.evaluate_bundle`` (agent) compute the outputs of their forward function
(torch module, onnxruntime session, TensorRT engine, ...) on float32 (N, 3, S, S) batches in [0, 1]
and hand them to it, so agent and in-process numbers of the same outputs are the same. numpy only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from edgetune.data import Dataset, LetterboxMeta, letterbox, to_input, unletterbox
from edgetune.errors import DataError
from edgetune.models.heads import ClassifyHead, DetectHead, decode_detections
from edgetune.objectives.accuracy import coco_map, detections_to_coco, topk_accuracy, topk_se

__all__ = ["iter_batches", "evaluate", "score_outputs", "OutputScorer", "postprocess_detections"]


def iter_batches(ds: Dataset, *, size: int, batch: int) -> Iterator[tuple[np.ndarray, list[LetterboxMeta], list[int]]]:
    """Letterboxed uint8 batches (N, 3, S, S), their letterbox metas, and image ids."""
    for start in range(0, len(ds), batch):
        idx = range(start, min(start + batch, len(ds)))
        items = [letterbox(ds.load_image(i), size) for i in idx]
        yield np.stack([a for a, _ in items]), [m for _, m in items], [ds.records[i].id for i in idx]


def postprocess_detections(output: np.ndarray, metas: Sequence[LetterboxMeta], ids: Sequence[int],
                           head: DetectHead) -> list[dict]:
    """Raw output (N, 4 + C, A) -> COCO result dicts in original-image pixels."""
    dets: list[dict] = []
    for out, meta, iid in zip(output, metas, ids, strict=True):
        boxes, scores, classes = decode_detections(out, head)
        dets.extend(detections_to_coco(iid, unletterbox(boxes, meta), scores, classes, head.category_ids))
    return dets


class OutputScorer:
    """Scores raw outputs batch by batch: :meth:`add` each batch's outputs (row ``k`` being image
    ``ids[k]``), then :meth:`result`. Detections are decoded as they come, so only the boxes kept by NMS
    stay in memory (not the (N, 4 + C, A) outputs of a whole validation set: 14 GB for COCO val at 640).

    Detection (``DetectHead``): outputs (b, 4 + C, A) are decoded, mapped back to original pixels with
    ``metas`` and scored against ``coco_gt`` (a COCO instances dict): the 12 COCO metrics. Classification
    (``ClassifyHead``): outputs (b, C) are scored against ``labels`` (N,): top-1 / top-5. Each comes with
    its standard error over images (``map50_95_se``, ``top1_se``, ...: what a difference between two models
    must exceed to be more than noise). The ground truth the task needs missing, or row counts that
    disagree, raise DataError.
    """

    def __init__(self, head: DetectHead | ClassifyHead, *, coco_gt: dict | None = None,
                 labels: np.ndarray | Sequence[int] | None = None):
        self.head, self.coco_gt, self.n = head, coco_gt, 0
        self._dets: list[dict] = []
        self._scores: list[np.ndarray] = []
        if isinstance(head, DetectHead) and coco_gt is None:
            raise DataError("scoring a detector needs the COCO ground truth of the images (`coco_gt`), but it is "
                            "missing: use a detection dataset (or a bundle made from one).")
        if not isinstance(head, DetectHead):
            if labels is None:
                raise DataError("scoring a classifier needs the label of every image (`labels`), but they are "
                                "missing: use a classification dataset (or a bundle made from one).")
            self.labels = np.asarray(labels)

    def add(self, outputs: np.ndarray, metas: Sequence[LetterboxMeta], ids: Sequence[int]) -> None:
        outputs = np.asarray(outputs)
        rows = outputs.shape[0] if outputs.ndim else 0
        if rows != len(ids) or len(metas) != len(ids):
            raise DataError(f"got outputs of {rows} images, {len(metas)} letterbox metas and {len(ids)} image ids; "
                            "they must be one per image: pass the outputs of every image, in the order of `ids`.")
        self.n += len(ids)
        if isinstance(self.head, DetectHead):
            self._dets.extend(postprocess_detections(outputs, metas, ids, self.head))
        else:
            self._scores.append(outputs)

    def result(self) -> dict[str, float]:
        if isinstance(self.head, DetectHead):
            return coco_map(self.coco_gt, self._dets, se=True)
        if self.labels.shape != (self.n,):
            raise DataError(f"labels must be one per image, shape ({self.n},), but got shape {self.labels.shape}.")
        acc = topk_accuracy(np.concatenate(self._scores) if self._scores else np.zeros((0, 1)), self.labels)
        return {**acc, **topk_se(acc, self.n)}


def score_outputs(outputs: np.ndarray, *, head: DetectHead | ClassifyHead, metas: Sequence[LetterboxMeta],
                  ids: Sequence[int], coco_gt: dict | None = None,
                  labels: np.ndarray | Sequence[int] | None = None) -> dict[str, float]:
    """Metrics of the raw outputs of a whole validation set at once (see :class:`OutputScorer`)."""
    scorer = OutputScorer(head, coco_gt=coco_gt, labels=labels)
    scorer.add(outputs, metas, ids)
    return scorer.result()


def evaluate(forward: Callable[[np.ndarray], np.ndarray], ds: Dataset, head: DetectHead | ClassifyHead, *,
             size: int, batch: int = 16) -> dict[str, float]:
    """COCO metrics (detection) or top-1/top-5 (classification) of ``forward`` on ``ds``."""
    if len(ds) == 0:
        raise DataError(f"dataset '{ds.name}' is empty: evaluation needs at least one image.")
    labels = np.asarray([r.label for r in ds.records]) if ds.task == "classify" else None
    scorer = OutputScorer(head, coco_gt=ds.coco_gt() if ds.task == "detect" else None, labels=labels)
    for x, m, i in iter_batches(ds, size=size, batch=batch):
        scorer.add(np.asarray(forward(to_input(x))), m, i)
    return scorer.result()
