"""ImageFolder classification datasets: labels, both layouts and their splits, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgetune.config import DataSpec
from edgetune.data import load_data, load_imagefolder
from edgetune.errors import DataError

CLASSES = ("cat", "dog", "emu")


def _tree(root: Path, make_image, per_class: int, *, seed: int = 0) -> None:
    for k, c in enumerate(CLASSES):
        for i in range(per_class):
            make_image(root / c / f"{i:03d}.png", 20 + k, 10 + i, seed=seed + 10 * k + i)


def _label_of(path: str) -> int:
    (name,) = set(Path(path).parts) & set(CLASSES)
    return CLASSES.index(name)


def test_train_val_layout(tmp_path, make_image):
    _tree(tmp_path / "train", make_image, 6)
    _tree(tmp_path / "val", make_image, 3, seed=100)
    (tmp_path / "val" / "dog" / "notes.txt").write_text("not an image")
    make_image(tmp_path / "val" / "dog" / "nested" / "deep.jpg", 8, 8)
    spec = DataSpec(source="imagefolder", path=str(tmp_path), val_images=100, calib_images=4)
    s = load_data(spec, need_train=True)
    assert s.val.task == "classify"
    assert s.val.class_names == CLASSES and s.val.category_ids == (0, 1, 2)
    assert len(s.val) == 10 and len(s.calib) == 4 and len(s.train) == 14
    assert all(r.label == _label_of(r.file) for ds in (s.val, s.calib, s.train) for r in ds)
    assert all("/val/" in r.file for r in s.val) and all("/train/" in r.file for r in s.calib)
    assert {r.file for r in s.calib}.isdisjoint(r.file for r in s.train)
    rec = next(r for r in s.val if r.file.endswith("001.png") and "/emu/" in r.file)
    assert (rec.width, rec.height) == (22, 11)
    assert s.val.load_image(0).shape == (s.val.records[0].height, s.val.records[0].width, 3)
    assert len({r.id for r in s.val}) == len(s.val)
    again = load_data(spec)
    assert [r.file for r in again.calib] == [r.file for r in s.calib]


def test_single_tree_is_split_deterministically(tmp_path, make_image):
    _tree(tmp_path, make_image, 10)
    spec = DataSpec(source="imagefolder", path=str(tmp_path), val_images=12, calib_images=6, seed=1)
    a, b = load_data(spec, need_train=True), load_data(spec, need_train=True)
    files = [{r.file for r in ds} for ds in (a.val, a.calib, a.train)]
    assert [len(f) for f in files] == [12, 6, 12]
    assert not files[0] & files[1] and not files[0] & files[2] and not files[1] & files[2]
    assert [r.file for r in a.val] == [r.file for r in b.val]
    assert [r.file for r in a.calib] == [r.file for r in b.calib]
    assert all(r.label == _label_of(r.file) for r in a.val)


def test_load_imagefolder_reads_every_image(tmp_path, make_image):
    _tree(tmp_path, make_image, 2)
    ds = load_imagefolder(tmp_path)
    assert [r.label for r in ds] == [0, 0, 1, 1, 2, 2]
    assert [r.id for r in ds] == [1, 2, 3, 4, 5, 6]


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        load_data(DataSpec(source="imagefolder", path=str(tmp_path / "nope")))
    assert str(tmp_path / "nope") in str(err.value)


def test_empty_folder(tmp_path):
    (tmp_path / "val").mkdir()
    with pytest.raises(DataError, match="has no class folders") as err:
        load_data(DataSpec(source="imagefolder", path=str(tmp_path)))
    assert str(tmp_path / "val") in str(err.value)


def test_class_folder_without_images(tmp_path, make_image):
    _tree(tmp_path, make_image, 2)
    (tmp_path / "fox").mkdir()
    (tmp_path / "fox" / "readme.md").write_text("no images here")
    with pytest.raises(DataError, match="holds no images") as err:
        load_data(DataSpec(source="imagefolder", path=str(tmp_path)))
    assert str(tmp_path / "fox") in str(err.value)


def test_val_class_missing_from_train(tmp_path, make_image):
    _tree(tmp_path / "train", make_image, 2)
    _tree(tmp_path / "val", make_image, 1)
    make_image(tmp_path / "val" / "yak" / "0.png", 8, 8)
    with pytest.raises(DataError, match=r"\['yak'\]") as err:
        load_data(DataSpec(source="imagefolder", path=str(tmp_path)))
    assert str(tmp_path / "val") in str(err.value)


def test_corrupt_image_names_the_file(tmp_path, make_image):
    _tree(tmp_path, make_image, 2)
    bad = tmp_path / "dog" / "001.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="corrupt") as err:
        load_imagefolder(tmp_path)
    assert str(bad) in str(err.value)
