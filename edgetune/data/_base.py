"""The dataset interface: images + COCO-style ground truth + class names, numpy only.

A :class:`Dataset` is an immutable list of :class:`ImageRecord` plus, for detection, the COCO ground
truth of exactly those images. It imports nothing heavy: the device agent uses it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgetune.errors import DataError

__all__ = ["Task", "ImageRecord", "Dataset", "Splits", "IMAGE_EXTENSIONS", "read_image", "read_image_size",
           "split_indices", "plan_splits"]

IMAGE_EXTENSIONS = frozenset({".bmp", ".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp"})

Task = str  # "detect" | "classify"


@dataclass(frozen=True)
class ImageRecord:
    """One image: COCO id, absolute file path, size, and (classification) its label index."""

    id: int
    file: str
    width: int
    height: int
    label: int | None = None


def read_image(path: str) -> np.ndarray:
    """Read an image file as HxWx3 uint8 RGB, or raise DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError as exc:
        raise DataError(
            f"image file '{path}' does not exist. Check the dataset path (`data.path`) and that the "
            "annotation file names match the files on disk."
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(
            f"image file '{path}' is corrupt or not an image ({exc}). Replace or remove it from the dataset."
        ) from exc


def read_image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image from its header only (cheap), or raise DataError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError as exc:
        raise DataError(f"image file '{path}' does not exist. Check the dataset path (`data.path`).") from exc
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(
            f"image file '{path}' is corrupt or not an image ({exc}). Replace or remove it from the dataset."
        ) from exc


@dataclass(frozen=True)
class Dataset:
    """Images with ground truth.

    ``category_ids[k]`` is the COCO category id of model class ``k`` (detections are written with it).
    For detection, ``annotations`` maps image id -> list of COCO annotation dicts (``bbox`` is xywh in
    original pixels). For classification each record carries ``label``.
    """

    name: str
    task: Task
    class_names: tuple[str, ...]
    category_ids: tuple[int, ...]
    records: tuple[ImageRecord, ...]
    annotations: dict[int, list[dict]] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def load_image(self, index: int) -> np.ndarray:
        return read_image(self.records[index].file)

    def subset(self, indices: Sequence[int], *, name: str | None = None) -> Dataset:
        """A new Dataset holding the records at ``indices`` (in that order)."""
        records = tuple(self.records[i] for i in indices)
        ann = {r.id: self.annotations.get(r.id, []) for r in records} if self.annotations else {}
        return Dataset(
            name=name or self.name,
            task=self.task,
            class_names=self.class_names,
            category_ids=self.category_ids,
            records=records,
            annotations=ann,
        )

    def targets(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Ground truth of one image: boxes xyxy (M, 4) float32 in original pixels, classes (M,) int64."""
        rec = self.records[index]
        cat_to_cls = {c: k for k, c in enumerate(self.category_ids)}
        anns = [a for a in self.annotations.get(rec.id, []) if not a.get("iscrowd", 0)]
        if not anns:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64)
        xywh = np.array([a["bbox"] for a in anns], np.float32)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        classes = np.array([cat_to_cls[a["category_id"]] for a in anns], np.int64)
        return boxes, classes

    def coco_gt(self) -> dict:
        """COCO ground truth (images, annotations, categories) of exactly this dataset's images."""
        if self.task != "detect":
            raise DataError(f"dataset '{self.name}' is a {self.task} dataset: it has no COCO boxes.")
        images = [
            {"id": r.id, "file_name": r.file.rsplit("/", 1)[-1], "width": r.width, "height": r.height}
            for r in self.records
        ]
        anns: list[dict] = []
        for r in self.records:
            anns.extend(self.annotations.get(r.id, []))
        cats = [{"id": c, "name": n} for c, n in zip(self.category_ids, self.class_names, strict=True)]
        return {"images": images, "annotations": anns, "categories": cats}


@dataclass(frozen=True)
class Splits:
    """Deterministic, disjoint splits: ``train`` (recovery fine-tuning; may be None), ``val``, ``calib``."""

    train: Dataset | None
    val: Dataset
    calib: Dataset


def split_indices(n: int, *, seed: int, val: int, calib: int) -> tuple[list[int], list[int], list[int]]:
    """Deterministic disjoint (train, val, calib) index lists for a dataset with one pool of ``n`` images."""
    if val + calib > n:
        raise DataError(
            f"the dataset has {n} images but val_images={val} + calib_images={calib} were asked for. "
            "Lower `data.val_images` / `data.calib_images` or add images."
        )
    order = np.random.default_rng(seed).permutation(n).tolist()
    return order[val + calib :], sorted(order[:val]), sorted(order[val : val + calib])


def plan_splits(n_val: int, n_train: int, *, val: int, calib: int, seed: int) -> tuple[list[int], list[int], list[int]]:
    """The split rule of the file-based sources: (val, calib, train) index lists, deterministic in ``seed``.

    - Two sets (``n_train > 0``): ``val`` indexes the val set: ``val`` images of it chosen by ``seed``
      (all of them when it has fewer). ``calib`` and ``train`` index the train set: ``min(calib, n_train // 2)``
      (at least 1) images of it chosen by ``seed``, and the rest is ``train``. Val never feeds calibration
      or fine-tuning.
    - One set (``n_train == 0``): all three index the val set, split disjointly by :func:`split_indices`
      with calib = ``min(calib, n // 2)`` and val = ``min(val, n - calib)``; what is left is ``train``.
    """
    if n_val < 1:
        raise DataError("the validation set has no images. Point the data source at a folder / annotation file "
                        "that lists some.")
    if n_train > 0:
        val_idx = _seeded_subset(n_val, val, seed)
        calib_idx = _seeded_subset(n_train, min(calib, max(1, n_train // 2)), seed)
        chosen = set(calib_idx)
        return val_idx, calib_idx, [i for i in range(n_train) if i not in chosen]
    if n_val < 2:
        raise DataError(
            f"the dataset has {n_val} image(s) and no training set, but validation and calibration need at "
            "least one image each, disjoint. Add images or a training set."
        )
    calib = min(calib, n_val // 2)
    train_idx, val_idx, calib_idx = split_indices(n_val, seed=seed, val=min(val, n_val - calib), calib=calib)
    return val_idx, calib_idx, train_idx


def _seeded_subset(n: int, k: int, seed: int) -> list[int]:
    """``k`` of ``range(n)`` chosen by ``seed`` (all when ``k >= n``), ascending."""
    if k >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).permutation(n)[:k].tolist())
