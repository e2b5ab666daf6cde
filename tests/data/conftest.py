"""Builders of small real datasets on disk (images written with PIL) for the data-layer tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_files import export_yolo, write_yaml
from PIL import Image


def write_image(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A random-noise RGB image of the given size (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def yolo_shapes(tmp_path, shapes_val):
    """A YOLO dataset exported from shapes val: 20 val images (0..19), 30 train images (20..49)."""
    root = tmp_path / "shapes-yolo"
    export_yolo(shapes_val, root, "val", range(20))
    export_yolo(shapes_val, root, "train", range(20, 50))
    data_yaml = write_yaml(root / "data.yaml", {"path": ".", "train": "images/train", "val": "images/val",
                                                "names": dict(enumerate(shapes_val.class_names))})
    return data_yaml


@pytest.fixture
def make_image():
    """``make_image(path, width, height, seed=0)`` writes a noise image."""
    return write_image


@pytest.fixture
def make_yaml():
    """``make_yaml(path, cfg)`` writes a YAML file."""
    return write_yaml
