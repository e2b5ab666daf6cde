"""YOLO txt datasets (detection), described by an Ultralytics ``data.yaml``.

``data.yaml`` keys: ``path`` (dataset root; relative to the yaml's folder, or else to the working
directory; default the yaml's folder), ``train``
and ``val`` (an image folder, a ``.txt`` list of image paths, or a list of those; relative to the root),
``names`` (a list, or a ``{index: name}`` dict with indices 0..n-1) and optionally ``nc``. Other keys
(``test``, ``download``, ...) are ignored.

Labels follow the Ultralytics convention: the label file of ``.../images/.../a.jpg`` is
``.../labels/.../a.txt`` (the last ``/images/`` replaced by ``/labels/``); each line is
``class cx cy w h``, normalized to [0, 1]. An image without a label file has no objects. Boxes become
COCO annotations (xywh in pixels, ``area = w * h``, ``category_id = class + 1``).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import yaml

from edgetune._logging import get_logger
from edgetune.data._base import IMAGE_EXTENSIONS, Dataset, ImageRecord, Splits, read_image_size
from edgetune.data._registry import make_splits, register_data_source
from edgetune.errors import DataError

__all__ = ["YoloDataset", "load_yolo"]

log = get_logger(__name__)

COORD_TOLERANCE = 1e-3  # normalized units a value or box edge may stray outside [0, 1] (export rounding)


class YoloDataset:
    """A parsed ``data.yaml``: class names and the image files of each split (labels are read later)."""

    def __init__(self, data_yaml: str | os.PathLike) -> None:
        path = Path(data_yaml)
        if path.is_dir():
            path = path / "data.yaml"
        if not path.is_file():
            raise DataError(f"YOLO data file '{path}' does not exist. Point `data.path` at the dataset's data.yaml.")
        try:
            cfg = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise DataError(f"YOLO data file '{path}' is not valid YAML ({exc}).") from exc
        if not isinstance(cfg, dict):
            raise DataError(f"YOLO data file '{path}' must be a mapping with `train`, `val` and `names`.")
        self.yaml_file = path.resolve()
        root = Path(str(cfg.get("path") or "."))
        if not root.is_absolute():  # the yaml's folder first, then the working directory (as Ultralytics)
            here = (self.yaml_file.parent / root).resolve()
            root = here if here.is_dir() or not root.resolve().is_dir() else root.resolve()
        self.root = root
        self.class_names = self._names(cfg)
        if cfg.get("val") in (None, "", []):
            raise DataError(f"YOLO data file '{path}' has no `val:` entry. Add the validation image folder.")
        self._entries = {k: cfg[k] for k in ("train", "val") if cfg.get(k) not in (None, "", [])}

    def _names(self, cfg: dict) -> tuple[str, ...]:
        names = cfg.get("names")
        where = f"YOLO data file '{self.yaml_file}'"
        if isinstance(names, dict):
            by_index = {int(k) if str(k).isdigit() else k: v for k, v in names.items()}
            if set(by_index) != set(range(len(names))):
                raise DataError(f"{where}: `names` keys must be the class indices 0..{len(names) - 1}, but got "
                                f"{list(names)}. Renumber the classes from 0.")
            names = [by_index[k] for k in range(len(names))]
        if not isinstance(names, list) or not names:
            raise DataError(f"{where} has no `names` (got {names!r}). Add `names: [class0, class1, ...]`.")
        nc = cfg.get("nc")
        if nc is not None and nc != len(names):
            raise DataError(f"{where}: `nc` is {nc} but `names` lists {len(names)} classes. Make them agree.")
        return tuple(str(n) for n in names)

    @property
    def splits(self) -> list[str]:
        """The splits this yaml defines (``val``, and ``train`` when present)."""
        return sorted(self._entries)

    def image_files(self, split: str) -> list[Path]:
        """The image files of ``split`` in a stable order (folders sorted, list files in file order)."""
        if split not in self._entries:
            raise DataError(f"YOLO data file '{self.yaml_file}' has no `{split}:` entry; it has {self.splits}.")
        entry = self._entries[split]
        files: list[Path] = []
        for item in entry if isinstance(entry, list) else [entry]:
            p = Path(str(item))
            p = p if p.is_absolute() else self.root / p
            if p.is_dir():
                files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            elif p.is_file() and p.suffix == ".txt":
                files += _list_file(p)
            else:
                raise DataError(
                    f"`{split}: {item}` in YOLO data file '{self.yaml_file}' resolves to '{p}', which is neither "
                    f"an image folder nor a .txt list. Fix the entry (relative paths start at '{self.root}')."
                )
        if not files:
            raise DataError(f"`{split}: {entry}` in YOLO data file '{self.yaml_file}' holds no images "
                            f"({', '.join(sorted(IMAGE_EXTENSIONS))}).")
        return files

    def dataset(self, files: list[Path], *, ids: list[int] | None = None, name: str = "yolo") -> Dataset:
        """Read the sizes and label files of ``files`` into a Dataset (image ``ids`` default to 1..n)."""
        ids = ids if ids is not None else list(range(1, len(files) + 1))
        records, annotations = [], {}
        for iid, f in zip(ids, files, strict=True):
            w, h = read_image_size(str(f))
            records.append(ImageRecord(iid, str(f), w, h))
            annotations[iid] = []
            for cls, (x, y, bw, bh) in self._labels(label_path(f), w, h):
                annotations[iid].append({"id": 0, "image_id": iid, "category_id": cls + 1,
                                         "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
        for k, a in enumerate(a for anns in annotations.values() for a in anns):
            a["id"] = k + 1
        return Dataset(name=name, task="detect", class_names=self.class_names,
                       category_ids=tuple(range(1, len(self.class_names) + 1)), records=tuple(records),
                       annotations=annotations)

    def _labels(self, path: Path, width: int, height: int) -> list[tuple[int, list[float]]]:
        if not path.is_file():
            return []
        nc, t = len(self.class_names), COORD_TOLERANCE
        out = []
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(f"label file '{path}' is not a text file ({exc}). Replace it with YOLO txt labels.") from exc
        for n, line in enumerate(text.splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            shown = line.strip() if len(line.strip()) <= 80 else line.strip()[:77] + "..."
            where = f"label file '{path}', line {n} ({shown!r})"
            if len(parts) != 5:
                raise DataError(f"{where}: expected 5 columns `class cx cy w h`, got {len(parts)}. Segmentation "
                                "polygons and keypoints are not read: export detection boxes, or fix the line.")
            try:
                vals = [float(v) for v in parts]
            except ValueError as exc:
                raise DataError(f"{where}: every column must be a number ({exc}). Fix the line.") from exc
            c, cx, cy, bw, bh = vals
            if not all(math.isfinite(v) for v in vals):
                raise DataError(f"{where}: values must be finite numbers. Fix the line.")
            if c != int(c) or not 0 <= c < nc:
                raise DataError(f"{where}: class {parts[0]} is not an index in 0..{nc - 1} (`names` in "
                                f"'{self.yaml_file}' has {nc} classes). Fix the label or add the class.")
            box = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
            if bw <= 0 or bh <= 0 or min(cx, cy, *box) < -t or max(cx, cy, bw, bh, *box) > 1 + t:
                raise DataError(f"{where}: the box must lie in [0, 1] (normalized `cx cy w h`, positive size); "
                                "pixel coordinates must be divided by the image width / height. Fix the line.")
            x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in box)
            out.append((int(c), [x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height]))
        return out


def label_path(image: Path) -> Path:
    """The Ultralytics label file of an image: last ``/images/`` -> ``/labels/``, extension -> ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    s = str(image)
    if sa in s:
        s = sb.join(s.rsplit(sa, 1))
    return Path(s).with_suffix(".txt")


def _list_file(path: Path) -> list[Path]:
    """Image paths listed in a .txt file, one a line; relative paths start at the list file's folder."""
    out = []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        line = line.strip()
        if line:
            p = Path(line)
            out.append(p if p.is_absolute() else (path.parent / p).resolve())
    return out


def load_yolo(data_yaml: str | os.PathLike, *, split: str = "val", name: str | None = None) -> Dataset:
    """All images of one split of a YOLO dataset, with COCO-style ground truth."""
    ds = YoloDataset(data_yaml)
    return ds.dataset(ds.image_files(split), name=name or f"yolo-{split}")


@register_data_source("yolo", requires=("path",))
def _yolo_source(spec, *, need_train: bool) -> Splits:
    """val from ``val``; calib (and train, when needed) from ``train`` minus any val image; with no
    ``train``, val and calib are split off ``val`` (see :func:`~edgetune.data._base.plan_splits`)."""
    ds = YoloDataset(spec.path)
    val_files = ds.image_files("val")
    train_files: list[Path] = []
    if "train" in ds.splits:
        in_val = {f.resolve() for f in val_files}
        all_train = ds.image_files("train")
        train_files = [f for f in all_train if f.resolve() not in in_val]
        if len(train_files) < len(all_train):
            log.info("%d images of `train` are also in `val`; they are left out of train and calib",
                     len(all_train) - len(train_files))

    def build(files: list[Path]):
        return lambda idx, name: ds.dataset([files[i] for i in idx], ids=[i + 1 for i in idx], name=name)

    return make_splits(spec, need_train=need_train, name="yolo", n_val=len(val_files), val_set=build(val_files),
                       n_train=len(train_files), train_set=build(train_files))
