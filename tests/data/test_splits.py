"""Split rules: deterministic in the seed, disjoint, sizes as documented."""

from __future__ import annotations

import pytest

from edgetune.config import DataSpec
from edgetune.data import load_data, plan_splits, split_indices
from edgetune.errors import DataError


def test_split_indices_deterministic_and_disjoint():
    a = split_indices(100, seed=7, val=30, calib=10)
    assert a == split_indices(100, seed=7, val=30, calib=10)
    assert a != split_indices(100, seed=8, val=30, calib=10)
    train, val, calib = a
    assert (len(train), len(val), len(calib)) == (60, 30, 10)
    assert sorted(train + val + calib) == list(range(100))
    assert val == sorted(val) and calib == sorted(calib)


def test_split_indices_rejects_too_many():
    with pytest.raises(DataError, match="has 10 images but val_images=8 \\+ calib_images=4"):
        split_indices(10, seed=0, val=8, calib=4)


def test_plan_splits_two_sets():
    val, calib, train = plan_splits(50, 200, val=20, calib=64, seed=1)
    assert len(val) == 20 and len(calib) == 64 and len(train) == 136
    assert set(calib).isdisjoint(train) and sorted(calib + train) == list(range(200))
    assert (val, calib, train) == plan_splits(50, 200, val=20, calib=64, seed=1)
    assert val != plan_splits(50, 200, val=20, calib=64, seed=2)[0]
    # fewer images than asked: all of val; calib never takes more than half the train set
    val, calib, train = plan_splits(10, 30, val=500, calib=64, seed=0)
    assert val == list(range(10)) and len(calib) == 15 and len(train) == 15
    assert plan_splits(5, 1, val=5, calib=64, seed=0)[1:] == ([0], [])


def test_plan_splits_one_set():
    val, calib, train = plan_splits(1000, 0, val=500, calib=64, seed=0)
    assert (len(val), len(calib), len(train)) == (500, 64, 436)
    assert len(set(val) | set(calib) | set(train)) == 1000
    val, calib, train = plan_splits(40, 0, val=500, calib=64, seed=0)
    assert (len(val), len(calib), len(train)) == (20, 20, 0) and not set(val) & set(calib)
    with pytest.raises(DataError, match="1 image\\(s\\) and no training set"):
        plan_splits(1, 0, val=1, calib=1, seed=0)
    with pytest.raises(DataError, match="the validation set has no images"):
        plan_splits(0, 10, val=1, calib=1, seed=0)


def test_builtin_source(shapes_val, shapes_calib):
    spec = DataSpec(source="builtin", name="shapes", val_images=len(shapes_val), calib_images=len(shapes_calib))
    s = load_data(spec)
    assert s.train is None
    assert [r.file for r in s.val] == [r.file for r in shapes_val]
    assert s.calib.name == "shapes-calib" and len(s.calib) == len(shapes_calib)
    with pytest.raises(DataError, match="unknown builtin dataset 'cars'; builtin datasets: shapes"):
        load_data(spec.model_copy(update={"name": "cars"}))


def test_unknown_source_lists_the_valid_ones():
    class Spec:
        source = "voc"

    with pytest.raises(DataError, match="unknown data source 'voc'; registered sources: builtin, coco, imagefolder, yolo"):
        load_data(Spec())
