"""The builtin shapes dataset: deterministic, >= 6 classes, small / medium / large objects, fast enough."""

from __future__ import annotations

import json

import numpy as np

from edgetune.data import load_coco, read_image
from edgetune.data.shapes import CLASSES, generate_split


def _read(root, split: str) -> tuple[dict, list[np.ndarray]]:
    gt = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    return gt, [read_image(str(root / split / im["file_name"])) for im in gt["images"]]


def test_same_seed_same_pixels_and_boxes(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        generate_split(tmp_path / name, "val", 4, seed=seed)
    (gt_a, px_a), (gt_b, px_b), (gt_c, px_c) = (_read(tmp_path / n, "val") for n in "abc")
    assert gt_a["annotations"] == gt_b["annotations"] and gt_a["annotations"]
    assert all(np.array_equal(x, y) for x, y in zip(px_a, px_b, strict=True))
    assert gt_a["annotations"] != gt_c["annotations"]
    assert not any(np.array_equal(x, y) for x, y in zip(px_a, px_c, strict=True))


def test_shapes_val_is_real_coco(shapes_val):
    assert len(CLASSES) >= 6 and shapes_val.num_classes == len(CLASSES)
    assert shapes_val.category_ids == tuple(range(1, len(CLASSES) + 1))
    present = {a["category_id"] for anns in shapes_val.annotations.values() for a in anns}
    assert present == set(shapes_val.category_ids)
    assert shapes_val.load_image(0).shape == (256, 256, 3)


def test_300_val_images_cover_every_size_bucket(tmp_path):
    ann = generate_split(tmp_path, "val", 300)
    ds = load_coco(ann, tmp_path / "val")
    areas = np.array([a["area"] for anns in ds.annotations.values() for a in anns])
    small, large = (areas < 32**2).sum(), (areas > 96**2).sum()
    medium = len(areas) - small - large
    print(f"shapes: {len(areas)} objects: {small} small, {medium} medium, {large} large")
    assert len(ds) == 300 and min(small, medium, large) >= 30
    per_image = [len(a) for a in ds.annotations.values()]
    assert max(per_image) >= 6  # crowded images exist
