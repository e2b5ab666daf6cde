"""coco_map (faster-coco-eval) equals pycocotools' COCOeval on shapes val with noisy detections."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest

from edgetune.objectives.accuracy import COCO_METRICS, coco_map


def _noisy_detections(gt: dict, seed: int) -> list[dict]:
    """GT boxes jittered (some a lot), a few dropped or relabelled, plus random false positives."""
    rng = np.random.default_rng(seed)
    sizes = {im["id"]: (im["width"], im["height"]) for im in gt["images"]}
    cats = [c["id"] for c in gt["categories"]]
    dets = []
    for a in gt["annotations"]:
        if rng.uniform() < 0.1:
            continue
        x, y, w, h = a["bbox"]
        jitter = rng.normal(0, rng.choice([0.01, 0.04, 0.15]), 4) * [w, h, w, h]
        cat = a["category_id"] if rng.uniform() > 0.08 else int(rng.choice(cats))
        dets.append({"image_id": a["image_id"], "category_id": cat,
                     "bbox": [x + jitter[0], y + jitter[1], max(w + jitter[2], 1.0), max(h + jitter[3], 1.0)],
                     "score": float(rng.uniform(0.05, 1.0))})
    for iid, (iw, ih) in sizes.items():
        for _ in range(int(rng.integers(0, 4))):
            w, h = rng.uniform(4, iw / 2), rng.uniform(4, ih / 2)
            dets.append({"image_id": iid, "category_id": int(rng.choice(cats)),
                         "bbox": [rng.uniform(0, iw - w), rng.uniform(0, ih - h), w, h],
                         "score": float(rng.uniform(0.0, 0.6))})
    return dets


def _pycocotools(gt: dict, dets: list[dict], image_ids: list[int]) -> list[float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), iouType="bbox")
        ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(v) for v in ev.stats]


@pytest.mark.parametrize("subset", [False, True])
def test_coco_map_equals_pycocotools(shapes_val, subset):
    gt = shapes_val.coco_gt()
    dets = _noisy_detections(gt, seed=int(subset))
    ids = [im["id"] for im in gt["images"]]
    if subset:  # evaluate part of the images; detections on the others must be ignored
        ids = ids[::3]
    ours = coco_map(gt, dets, image_ids=ids if subset else None)
    ref = _pycocotools(gt, dets, ids)
    diff = max(abs(ours[k] - r) for k, r in zip(COCO_METRICS, ref, strict=True))
    print(f"coco_map vs pycocotools (subset={subset}): max abs diff {diff:.2e} over 12 stats; "
          f"mAP50-95 {ours['map50_95']:.4f}")
    assert diff <= 1e-6
    assert 0.2 < ours["map50_95"] < 0.9 and ours["map_small"] > 0 and ours["map_large"] > 0  # a real fixture


def test_coco_map_without_detections_is_zero(shapes_val):
    assert set(coco_map(shapes_val.coco_gt(), []).values()) == {0.0}
