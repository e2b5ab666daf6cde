"""Dataset sources: ``load_data(spec) -> Splits`` dispatches on ``spec.source``."""

from __future__ import annotations

from collections.abc import Callable

from edgetune.data._base import Dataset, Splits, plan_splits
from edgetune.errors import DataError

__all__ = ["register_data_source", "load_data", "available_data_sources", "data_source_requires", "make_splits"]

_LOADERS: dict[str, Callable] = {}
_REQUIRES: dict[str, tuple[str, ...]] = {}


def register_data_source(name: str, *, requires: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Register ``fn(spec, *, need_train) -> Splits`` as data source ``name``; ``requires``: the DataSpec
    fields it cannot do without (the sweep config checks them)."""
    def deco(fn: Callable) -> Callable:
        _LOADERS[name] = fn
        _REQUIRES[name] = tuple(requires)
        return fn

    return deco


def available_data_sources() -> list[str]:
    return sorted(_LOADERS)


def data_source_requires(name: str) -> tuple[str, ...]:
    """The DataSpec fields data source ``name`` needs (DataError for an unregistered name)."""
    if name not in _LOADERS:
        raise DataError(f"unknown data source {name!r}; registered sources: {', '.join(available_data_sources())}.")
    return _REQUIRES[name]


def load_data(spec, *, need_train: bool = False) -> Splits:
    """The deterministic train / val / calib splits described by a DataSpec (``train`` may be None
    unless ``need_train``)."""
    data_source_requires(spec.source)
    return _LOADERS[spec.source](spec, need_train=need_train)


@register_data_source("builtin", requires=("name",))
def _builtin(spec, *, need_train: bool) -> Splits:
    from edgetune.data.shapes import shapes_split

    if spec.name != "shapes":
        raise DataError(f"unknown builtin dataset {spec.name!r}; builtin datasets: shapes.")
    train = shapes_split("train", spec.train_size, seed=spec.seed) if need_train and spec.train_size else None
    return Splits(train=train, val=shapes_split("val", spec.val_images, seed=spec.seed),
                  calib=shapes_split("calib", spec.calib_images, seed=spec.seed))


@register_data_source("coco", requires=("annotations", "images"))
def _coco(spec, *, need_train: bool) -> Splits:
    from edgetune.data.coco import load_coco

    pool = load_coco(spec.annotations, spec.images, name="coco")
    train = None
    if spec.train_annotations:
        train = load_coco(spec.train_annotations, spec.train_images or spec.images, name="coco-train")
    return make_splits(
        spec, need_train=need_train, name="coco", n_val=len(pool),
        val_set=lambda idx, name: pool.subset(idx, name=name),
        n_train=len(train) if train is not None else 0,
        train_set=(lambda idx, name: train.subset(idx, name=name)) if train is not None else None,
    )


def make_splits(spec, *, need_train: bool, name: str, n_val: int, val_set: Callable[[list[int], str], Dataset],
                n_train: int = 0, train_set: Callable[[list[int], str], Dataset] | None = None) -> Splits:
    """Splits of a file-based source by the rule of :func:`plan_splits`.

    ``val_set(indices, name)`` / ``train_set(indices, name)`` build a Dataset from the listed images of the
    val / train set, so a source only reads what a split uses (label files, image headers).
    """
    val_idx, calib_idx, train_idx = plan_splits(n_val, n_train, val=spec.val_images, calib=spec.calib_images,
                                                seed=spec.seed)
    pool = train_set if n_train and train_set is not None else val_set
    if need_train and not train_idx:
        raise DataError(
            f"fine-tuning needs training images, but dataset '{name}' has none left after {len(val_idx)} val "
            f"and {len(calib_idx)} calibration images. Add a training set (COCO: `data.train_annotations`; "
            "YOLO: `train:` in data.yaml; ImageFolder: a `train/` folder) or lower `data.val_images` / "
            "`data.calib_images`."
        )
    return Splits(train=pool(train_idx, f"{name}-train") if need_train else None,
                  val=val_set(val_idx, f"{name}-val"), calib=pool(calib_idx, f"{name}-calib"))
