"""Datasets: the interface, preprocessing (letterbox), formats (builtin shapes, COCO, YOLO, ImageFolder).

Importing this package does not import torch: the device agent uses it. Importing it registers the
``builtin``, ``coco``, ``yolo`` and ``imagefolder`` sources of :func:`load_data`.
"""

from edgetune.data._base import (
    Dataset,
    ImageRecord,
    Splits,
    plan_splits,
    read_image,
    read_image_size,
    split_indices,
)
from edgetune.data._preprocess import PAD_VALUE, LetterboxMeta, letterbox, to_input, unletterbox
from edgetune.data._registry import (
    available_data_sources,
    data_source_requires,
    load_data,
    make_splits,
    register_data_source,
)
from edgetune.data.coco import load_coco
from edgetune.data.imagefolder import class_folders, load_imagefolder
from edgetune.data.yolo import YoloDataset, load_yolo

__all__ = [
    "Dataset", "ImageRecord", "Splits", "plan_splits", "read_image", "read_image_size", "split_indices",
    "LetterboxMeta", "letterbox", "to_input", "unletterbox", "PAD_VALUE",
    "available_data_sources", "data_source_requires", "load_data", "make_splits", "register_data_source",
    "load_coco", "class_folders", "load_imagefolder", "YoloDataset", "load_yolo",
]
