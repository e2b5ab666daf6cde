"""Datasets: the interface, preprocessing (letterbox), formats (builtin shapes, COCO, YOLO, ImageFolder).

Importing this package does not import torch: the device agent uses it.
"""

from edgetune.data._base import Dataset, ImageRecord, Splits, read_image, split_indices
from edgetune.data._preprocess import LetterboxMeta, letterbox, to_input, unletterbox
from edgetune.data._registry import available_data_sources, load_data, register_data_source

__all__ = [
    "Dataset", "ImageRecord", "Splits", "read_image", "split_indices",
    "LetterboxMeta", "letterbox", "to_input", "unletterbox",
    "available_data_sources", "load_data", "register_data_source",
]
