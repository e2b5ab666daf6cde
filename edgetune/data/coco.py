"""COCO json + image folder datasets (detection)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from edgetune.data._base import Dataset, ImageRecord
from edgetune.errors import DataError

__all__ = ["load_coco"]

BOX_TOLERANCE = 1.0  # pixels a box may stick out of its image (rounding in third-party exports)


def load_coco(annotation_file: str | os.PathLike, image_dir: str | os.PathLike, *, name: str = "coco") -> Dataset:
    """Read a COCO ``instances_*.json`` and its image folder, validating as much as is cheap.

    Raises DataError naming the file, the annotation and the fix for: a missing json, broken json,
    unknown category ids, boxes outside their image, annotations for unknown images, missing image files.
    """
    ann_path, img_dir = Path(annotation_file), Path(image_dir)
    if not ann_path.is_file():
        raise DataError(f"annotation file '{ann_path}' does not exist. Fix `data.annotations`.")
    if not img_dir.is_dir():
        raise DataError(f"image folder '{img_dir}' does not exist. Fix `data.images`.")
    try:
        gt = json.loads(ann_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"annotation file '{ann_path}' is not valid JSON ({exc}).") from exc
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise DataError(f"annotation file '{ann_path}' has no '{key}' list: it is not COCO instances json.")
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    if not cats:
        raise DataError(f"annotation file '{ann_path}' defines no categories.")
    cat_ids = {c["id"] for c in cats}

    records: list[ImageRecord] = []
    sizes: dict[int, tuple[int, int]] = {}
    for im in gt["images"]:
        try:
            iid, fname, w, h = int(im["id"]), im["file_name"], int(im["width"]), int(im["height"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"image entry {im!r} in '{ann_path}' lacks id / file_name / width / height ({exc})."
            ) from exc
        path = img_dir / fname
        if not path.is_file():
            raise DataError(
                f"image '{fname}' (id {iid}) listed in '{ann_path}' is missing from '{img_dir}'. "
                "Restore the file or remove the image from the annotation file."
            )
        records.append(ImageRecord(iid, str(path.resolve()), w, h))
        sizes[iid] = (w, h)

    annotations: dict[int, list[dict]] = {r.id: [] for r in records}
    for i, a in enumerate(gt["annotations"]):
        where = f"annotation #{i} (id {a.get('id')}) in '{ann_path}'"
        if a.get("category_id") not in cat_ids:
            raise DataError(
                f"{where} has category_id {a.get('category_id')!r}, which is not among the categories "
                f"{sorted(cat_ids)}. Add the category or fix the annotation."
            )
        if a.get("image_id") not in sizes:
            raise DataError(f"{where} refers to image_id {a.get('image_id')!r}, which is not in 'images'.")
        bbox = a.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise DataError(f"{where} has bbox {bbox!r}; expected [x, y, width, height].")
        x, y, w, h = (float(v) for v in bbox)
        iw, ih = sizes[a["image_id"]]
        t = BOX_TOLERANCE
        if w <= 0 or h <= 0 or x < -t or y < -t or x + w > iw + t or y + h > ih + t:
            raise DataError(
                f"{where} has bbox [x={x}, y={y}, w={w}, h={h}] outside its {iw}x{ih} image. "
                "Boxes must be [x, y, width, height] in pixels inside the image; fix or drop it."
            )
        ann = {
            "id": int(a.get("id", i + 1)),
            "image_id": int(a["image_id"]),
            "category_id": int(a["category_id"]),
            "bbox": [x, y, w, h],
            "area": float(a.get("area") or w * h),
            "iscrowd": int(a.get("iscrowd", 0)),
        }
        annotations[ann["image_id"]].append(ann)
    return Dataset(
        name=name,
        task="detect",
        class_names=tuple(str(c["name"]) for c in cats),
        category_ids=tuple(int(c["id"]) for c in cats),
        records=tuple(records),
        annotations=annotations,
    )
