"""ImageFolder classification datasets: one folder per class, as torchvision's ``ImageFolder`` reads them.

Two layouts:

- ``root/val/<class>/*.jpg`` (+ optionally ``root/train/<class>/*.jpg``): val from ``val/``, calib (and
  train) from ``train/``;
- ``root/<class>/*.jpg`` (or only ``root/train/<class>/``): one pool, split deterministically.

Class indices are the sorted class-folder names (of ``train/`` when it exists), as torchvision numbers
them; ``category_ids[k] = k`` and each record's ``label`` is its class index. Images are found
recursively inside a class folder; hidden folders and non-image files are skipped.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgetune.data._base import IMAGE_EXTENSIONS, Dataset, ImageRecord, Splits, read_image_size
from edgetune.data._registry import make_splits, register_data_source
from edgetune.errors import DataError

__all__ = ["class_folders", "load_imagefolder"]


def class_folders(folder: str | os.PathLike) -> dict[str, list[Path]]:
    """``{class name: sorted image files}`` of a folder of class folders, sorted by class name.

    Raises DataError for a missing folder, a folder without class folders, a class folder without images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder '{folder}' does not exist. Fix `data.path`.")
    classes = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"image folder '{folder}' has no class folders. An ImageFolder dataset is "
                        "`<root>/<class>/<image>` (or `<root>/train|val/<class>/<image>`).")
    out = {}
    for d in classes:
        files = sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
                       and not any(p.startswith(".") for p in f.relative_to(d).parts))
        if not files:
            raise DataError(f"class folder '{d}' holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}). "
                            "Add images or remove the folder.")
        out[d.name] = files
    return out


def _items(tree: dict[str, list[Path]], classes: list[str], where: Path) -> list[tuple[Path, int]]:
    extra = sorted(set(tree) - set(classes))
    if extra:
        raise DataError(f"class folders {extra} in '{where}' are not among the training classes {classes}; the "
                        "class indices come from `train/`. Add them to `train/` or remove them.")
    index = {c: k for k, c in enumerate(classes)}
    return [(f, index[c]) for c in tree for f in tree[c]]


def _dataset(items: list[tuple[Path, int]], classes: list[str], idx: list[int], name: str) -> Dataset:
    records = []
    for i in idx:
        f, label = items[i]
        w, h = read_image_size(str(f))
        records.append(ImageRecord(i + 1, str(f), w, h, label=label))
    return Dataset(name=name, task="classify", class_names=tuple(classes),
                   category_ids=tuple(range(len(classes))), records=tuple(records))


def _layout(root: Path) -> tuple[Path, Path | None]:
    """(val-or-pool folder, train folder or None)."""
    if not root.is_dir():
        raise DataError(f"ImageFolder root '{root}' does not exist. Fix `data.path`.")
    if (root / "val").is_dir():
        return root / "val", root / "train" if (root / "train").is_dir() else None
    if (root / "train").is_dir():
        return root / "train", None
    return root, None


def load_imagefolder(root: str | os.PathLike, *, name: str = "imagefolder") -> Dataset:
    """Every image under ``root`` (a folder of class folders) as a classification Dataset."""
    tree = class_folders(root)
    classes = list(tree)
    items = _items(tree, classes, Path(root))
    return _dataset(items, classes, list(range(len(items))), name)


@register_data_source("imagefolder", requires=("path",))
def _imagefolder_source(spec, *, need_train: bool) -> Splits:
    """val from ``val/``, calib and train from ``train/``; one pool split by seed otherwise."""
    val_dir, train_dir = _layout(Path(spec.path))
    val_tree = class_folders(val_dir)
    train_tree = class_folders(train_dir) if train_dir is not None else {}
    classes = list(train_tree or val_tree)
    val_items = _items(val_tree, classes, val_dir)
    train_items = _items(train_tree, classes, train_dir) if train_dir is not None else []
    return make_splits(
        spec, need_train=need_train, name="imagefolder", n_val=len(val_items),
        val_set=lambda idx, name: _dataset(val_items, classes, idx, name),
        n_train=len(train_items), train_set=lambda idx, name: _dataset(train_items, classes, idx, name),
    )
