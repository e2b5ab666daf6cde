"""COCO json + image folder: bad input named by file and annotation, and the source's split rule."""

from __future__ import annotations

import json

import pytest

from edgetune.config import DataSpec
from edgetune.data import load_coco, load_data
from edgetune.errors import DataError


@pytest.fixture
def coco_dir(tmp_path, make_image):
    """10 images of 64x48 in ``images/``, one box each, in ``instances.json``."""
    images, anns = [], []
    for i in range(10):
        make_image(tmp_path / "images" / f"{i}.png", 64, 48, seed=i)
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 48})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1 + i % 2, "bbox": [4, 5, 20, 10],
                     "area": 200, "iscrowd": 0})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
    (tmp_path / "instances.json").write_text(json.dumps(gt))
    return tmp_path


def _rewrite(coco_dir, edit) -> str:
    path = coco_dir / "instances.json"
    gt = json.loads(path.read_text())
    edit(gt)
    path.write_text(json.dumps(gt))
    return str(path)


def test_loads(coco_dir):
    ds = load_coco(coco_dir / "instances.json", coco_dir / "images")
    assert len(ds) == 10 and ds.class_names == ("a", "b") and ds.category_ids == (1, 2)
    boxes, classes = ds.targets(1)
    assert boxes.tolist() == [[4, 5, 24, 15]] and classes.tolist() == [1]


def test_unknown_category_id(coco_dir):
    ann = _rewrite(coco_dir, lambda gt: gt["annotations"][3].update(category_id=7))
    with pytest.raises(DataError, match=r"annotation #3 \(id 4\).*category_id 7.*\[1, 2\]") as err:
        load_coco(ann, coco_dir / "images")
    assert ann in str(err.value)


@pytest.mark.parametrize("bbox", [[50, 5, 20, 10], [-3, 5, 20, 10], [4, 40, 20, 10], [4, 5, 0, 10]])
def test_box_outside_image(coco_dir, bbox):
    ann = _rewrite(coco_dir, lambda gt: gt["annotations"][5].update(bbox=bbox))
    with pytest.raises(DataError, match=r"annotation #5 \(id 6\).*outside its 64x48 image") as err:
        load_coco(ann, coco_dir / "images")
    assert ann in str(err.value)


def test_missing_image_file(coco_dir):
    (coco_dir / "images" / "4.png").unlink()
    with pytest.raises(DataError, match="'4.png' \\(id 5\\).*is missing") as err:
        load_coco(coco_dir / "instances.json", coco_dir / "images")
    assert str(coco_dir / "images") in str(err.value)


def test_corrupt_image_fails_when_loaded(coco_dir):
    (coco_dir / "images" / "2.png").write_bytes(b"garbage, not a png")
    ds = load_coco(coco_dir / "instances.json", coco_dir / "images")  # headers are not read up front
    ds.load_image(0)
    with pytest.raises(DataError, match="corrupt or not an image") as err:
        ds.load_image(2)
    assert str(coco_dir / "images" / "2.png") in str(err.value)


def test_broken_json(coco_dir):
    path = coco_dir / "instances.json"
    path.write_text(path.read_text()[:-20])
    with pytest.raises(DataError, match="not valid JSON") as err:
        load_coco(path, coco_dir / "images")
    assert str(path) in str(err.value)


def test_not_coco_json_and_missing_paths(coco_dir):
    path = coco_dir / "other.json"
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match="has no 'annotations' list"):
        load_coco(path, coco_dir / "images")
    with pytest.raises(DataError, match="does not exist") as err:
        load_coco(coco_dir / "nope.json", coco_dir / "images")
    assert str(coco_dir / "nope.json") in str(err.value)
    with pytest.raises(DataError, match="does not exist") as err:
        load_coco(coco_dir / "instances.json", coco_dir / "pics")
    assert str(coco_dir / "pics") in str(err.value)


def test_small_single_set_is_split_without_overlap(coco_dir):
    # 10 images with the default 500 val / 64 calib: calib takes at most half, val the rest
    spec = DataSpec(source="coco", annotations=str(coco_dir / "instances.json"), images=str(coco_dir / "images"))
    s = load_data(spec)
    val, calib = {r.id for r in s.val}, {r.id for r in s.calib}
    assert len(calib) == 5 and len(val) == 5 and not val & calib
    assert s.val.coco_gt()["images"] and len(s.val.coco_gt()["annotations"]) == 5
    with pytest.raises(DataError, match="fine-tuning needs training images"):
        load_data(spec, need_train=True)
    s = load_data(spec.model_copy(update={"val_images": 3, "calib_images": 2}), need_train=True)
    assert [len(s.val), len(s.calib), len(s.train)] == [3, 2, 5]
    assert len({r.id for d in (s.val, s.calib, s.train) for r in d}) == 10


def test_separate_train_set_feeds_calib(coco_dir):
    ann = str(coco_dir / "instances.json")
    spec = DataSpec(source="coco", annotations=ann, images=str(coco_dir / "images"), train_annotations=ann,
                    val_images=4, calib_images=3)
    s = load_data(spec, need_train=True)
    assert [len(s.val), len(s.calib), len(s.train)] == [4, 3, 7]
    assert s.calib.name == "coco-calib" and not {r.id for r in s.calib} & {r.id for r in s.train}
    assert [r.id for r in load_data(spec).val] == [r.id for r in s.val]
