"""Dataset sources: ``load_data(spec) -> Splits`` dispatches on ``spec.source``."""

from __future__ import annotations

from collections.abc import Callable

from edgetune.data._base import Splits, split_indices
from edgetune.errors import DataError

__all__ = ["register_data_source", "load_data", "available_data_sources"]

_LOADERS: dict[str, Callable] = {}


def register_data_source(name: str) -> Callable[[Callable], Callable]:
    def deco(fn: Callable) -> Callable:
        _LOADERS[name] = fn
        return fn

    return deco


def available_data_sources() -> list[str]:
    return sorted(_LOADERS)


def load_data(spec, *, need_train: bool = False) -> Splits:
    """The deterministic train / val / calib splits described by a DataSpec (``train`` may be None
    unless ``need_train``)."""
    if spec.source not in _LOADERS:
        raise DataError(f"unknown data source {spec.source!r}; valid: {', '.join(available_data_sources())}.")
    return _LOADERS[spec.source](spec, need_train=need_train)


@register_data_source("builtin")
def _builtin(spec, *, need_train: bool) -> Splits:
    from edgetune.data.shapes import shapes_split

    if spec.name != "shapes":
        raise DataError(f"unknown builtin dataset {spec.name!r}; builtin datasets: shapes.")
    train = shapes_split("train", spec.train_size, seed=spec.seed) if need_train and spec.train_size else None
    return Splits(train=train, val=shapes_split("val", spec.val_images, seed=spec.seed),
                  calib=shapes_split("calib", spec.calib_images, seed=spec.seed))


@register_data_source("coco")
def _coco(spec, *, need_train: bool) -> Splits:
    from edgetune.data.coco import load_coco

    pool = load_coco(spec.annotations, spec.images, name="coco")
    train = None
    if spec.train_annotations:
        train = load_coco(spec.train_annotations, spec.train_images or spec.images, name="coco-train")
        val_n = min(spec.val_images, len(pool))
        calib_idx = split_indices(len(train), seed=spec.seed, val=0, calib=min(spec.calib_images, len(train)))[2]
        calib = train.subset(calib_idx, name="coco-calib")
        train = train.subset([i for i in range(len(train)) if i not in set(calib_idx)], name="coco-train")
        val = pool.subset(range(val_n), name="coco-val")
        return Splits(train=train if need_train else None, val=val, calib=calib)
    tr, va, ca = split_indices(len(pool), seed=spec.seed, val=min(spec.val_images, len(pool) - spec.calib_images),
                               calib=spec.calib_images)
    train = pool.subset(tr, name="coco-train") if tr else None
    if need_train and train is None:
        raise DataError("fine-tuning needs training images, but the COCO set is used up by val + calib. "
                        "Set `data.train_annotations` or lower `data.val_images`.")
    return Splits(train=train, val=pool.subset(va, name="coco-val"), calib=pool.subset(ca, name="coco-calib"))
