"""YOLO txt datasets: same ground truth as COCO, the split rule, and every bad input named by file + line."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.config import DataSpec
from edgetune.data import load_data, load_yolo
from edgetune.data.yolo import label_path
from edgetune.errors import DataError
from edgetune.objectives.accuracy import coco_map


def _files(ds) -> set[str]:
    return {r.file for r in ds.records}


def test_yolo_gives_the_coco_boxes(yolo_shapes, shapes_val):
    ds = load_yolo(yolo_shapes, split="val")
    ref = shapes_val.subset(range(20))
    assert ds.task == "detect"
    assert ds.class_names == ref.class_names
    assert ds.category_ids == ref.category_ids
    assert len(ds) == 20
    n_boxes = 0
    for r, q in zip(ds.records, ref.records, strict=True):
        assert r.file.rsplit("/", 1)[-1] == q.file.rsplit("/", 1)[-1]
        assert (r.width, r.height) == (q.width, q.height)
        got, want = ds.annotations[r.id], ref.annotations[q.id]
        assert [a["category_id"] for a in got] == [a["category_id"] for a in want]
        if want:
            np.testing.assert_allclose([a["bbox"] for a in got], [a["bbox"] for a in want], atol=1e-3)
            np.testing.assert_allclose([a["area"] for a in got], [a["bbox"][2] * a["bbox"][3] for a in got])
        n_boxes += len(want)
    assert n_boxes > 40
    # the COCO dict is valid ground truth: the boxes as detections score a perfect mAP
    gt = ds.coco_gt()
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt["annotations"]]
    assert coco_map(gt, dets)["map50_95"] == pytest.approx(1.0)
    assert len({a["id"] for a in gt["annotations"]}) == len(gt["annotations"])


def test_image_without_label_file_has_no_objects(yolo_shapes, make_image):
    make_image(yolo_shapes.parent / "images" / "val" / "zzz_empty.png", 64, 48)
    ds = load_yolo(yolo_shapes)
    rec = ds.records[-1]
    assert rec.file.endswith("zzz_empty.png") and (rec.width, rec.height) == (64, 48)
    assert ds.annotations[rec.id] == []
    assert ds.targets(len(ds) - 1)[0].shape == (0, 4)


def test_label_path_follows_ultralytics(tmp_path):
    assert label_path(tmp_path / "images" / "a" / "images" / "x.jpg") == tmp_path / "images" / "a" / "labels" / "x.txt"
    assert label_path(tmp_path / "pics" / "x.png") == tmp_path / "pics" / "x.txt"


def test_list_files_names_list_and_yaml_folder(yolo_shapes, make_yaml, shapes_val):
    root = yolo_shapes.parent
    (root / "val.txt").write_text("".join(f"./images/val/{i:06d}.jpg\n" for i in (3, 1, 2)))
    sub = root / "alt"
    sub.mkdir()
    make_yaml(sub / "data.yaml", {"path": "..", "val": "val.txt", "names": list(shapes_val.class_names), "nc": 6})
    ds = load_yolo(sub)  # a folder holding data.yaml
    assert [r.file.rsplit("/", 1)[-1] for r in ds.records] == ["000003.jpg", "000001.jpg", "000002.jpg"]
    assert len(ds.annotations[1]) == len(shapes_val.annotations[shapes_val.records[3].id])


def test_yolo_source_splits(yolo_shapes):
    spec = DataSpec(source="yolo", path=str(yolo_shapes), val_images=8, calib_images=5, seed=3)
    a = load_data(spec)
    b = load_data(spec, need_train=True)
    assert a.train is None
    assert len(a.val) == 8 and len(a.calib) == 5 and len(b.train) == 25
    assert [r.file for r in a.val] == [r.file for r in b.val]  # deterministic
    assert [r.file for r in a.calib] == [r.file for r in b.calib]
    assert all("/images/val/" in f for f in _files(a.val))
    assert all("/images/train/" in f for f in _files(a.calib) | _files(b.train))
    assert not _files(b.calib) & _files(b.train)
    other = load_data(DataSpec(source="yolo", path=str(yolo_shapes), val_images=8, calib_images=5, seed=4))
    assert _files(other.calib) != _files(a.calib)


def test_yolo_without_train_splits_val(yolo_shapes, make_yaml, shapes_val):
    make_yaml(yolo_shapes, {"val": "images/val", "names": list(shapes_val.class_names)})
    s = load_data(DataSpec(source="yolo", path=str(yolo_shapes), val_images=100, calib_images=64))
    assert len(s.calib) == 10 and len(s.val) == 10  # calib is capped at half the pool
    assert not _files(s.val) & _files(s.calib)
    with pytest.raises(DataError, match="fine-tuning needs training images"):
        load_data(DataSpec(source="yolo", path=str(yolo_shapes), val_images=100, calib_images=64), need_train=True)


def test_train_images_also_in_val_stay_out_of_calib(yolo_shapes, make_yaml, shapes_val):
    make_yaml(yolo_shapes, {"train": ["images/train", "images/val"], "val": "images/val",
                            "names": list(shapes_val.class_names)})
    s = load_data(DataSpec(source="yolo", path=str(yolo_shapes), val_images=20, calib_images=64), need_train=True)
    assert len(s.val) == 20 and len(s.calib) == 15 and len(s.train) == 15  # calib <= half the train set
    assert not _files(s.calib) & _files(s.train)
    assert not (_files(s.calib) | _files(s.train)) & _files(s.val)


BAD_LINES = [
    ("0 0.5 0.5 0.2", "expected 5 columns"),
    ("0 0.5 0.5 0.2 0.2 0.9", "expected 5 columns"),
    ("0 0.5 abc 0.2 0.2", "must be a number"),
    ("0 0.5 nan 0.2 0.2", "finite"),
    ("6 0.5 0.5 0.2 0.2", "not an index in 0..5"),
    ("1.5 0.5 0.5 0.2 0.2", "not an index"),
    ("-1 0.5 0.5 0.2 0.2", "not an index"),
    ("0 1.2 0.5 0.2 0.2", "must lie in [0, 1]"),
    ("0 0.95 0.5 0.2 0.2", "must lie in [0, 1]"),
    ("0 0.5 0.5 0 0.2", "must lie in [0, 1]"),
    ("0 120 80 30 30", "must lie in [0, 1]"),
]


@pytest.mark.parametrize(("line", "message"), BAD_LINES)
def test_bad_label_line_names_file_and_line(yolo_shapes, line, message):
    label = yolo_shapes.parent / "labels" / "val" / "000004.txt"
    label.write_text(f"0 0.5 0.5 0.2 0.2\n\n{line}\n")
    with pytest.raises(DataError, match=message.replace("[", r"\[").replace("]", r"\]")) as err:
        load_yolo(yolo_shapes)
    assert f"label file '{label}', line 3" in str(err.value)


def test_binary_label_file_names_the_file(yolo_shapes):
    label = yolo_shapes.parent / "labels" / "val" / "000004.txt"
    label.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match="not a text file") as err:
        load_yolo(yolo_shapes)
    assert str(label) in str(err.value)


def test_names_dict_with_string_keys_and_crlf_bom_labels(yolo_shapes, make_yaml):
    make_yaml(yolo_shapes, {"val": "images/val", "names": {str(k): "abcdef"[k] for k in (5, 1, 0, 2, 4, 3)}})
    (yolo_shapes.parent / "labels" / "val" / "000004.txt").write_bytes(
        "\ufeff2 0.5 0.5 0.25 0.25\r\n1 0.25 0.25 0.1 0.1\r\n".encode())
    ds = load_yolo(yolo_shapes)
    assert ds.class_names == tuple("abcdef")
    assert [a["category_id"] for a in ds.annotations[5]] == [3, 2]
    np.testing.assert_allclose(ds.annotations[5][0]["bbox"], [96, 96, 64, 64], atol=1e-3)


def test_coordinates_within_tolerance_are_clipped(yolo_shapes):
    label = yolo_shapes.parent / "labels" / "val" / "000004.txt"
    label.write_text("2 0.1 0.5 0.2002 0.2\n")
    ds = load_yolo(yolo_shapes)
    (ann,) = ds.annotations[5]
    assert ann["category_id"] == 3
    assert ann["bbox"][0] == 0.0
    assert ann["bbox"][2] == pytest.approx(0.2001 * 256, abs=1e-3)


def test_corrupt_image_names_the_file(yolo_shapes):
    bad = yolo_shapes.parent / "images" / "val" / "000002.jpg"
    bad.write_bytes(b"not a jpeg at all")
    with pytest.raises(DataError, match="corrupt") as err:
        load_yolo(yolo_shapes)
    assert str(bad) in str(err.value)


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"val": "images/val"}, "has no `names`"),
        ({"val": "images/val", "names": []}, "has no `names`"),
        ({"val": "images/val", "names": {0: "a", 2: "b"}}, "keys must be the class indices 0..1"),
        ({"val": "images/val", "names": {"0": "a", "x": "b"}}, "keys must be the class indices 0..1"),
        ({"val": "images/val", "names": ["a", "b"], "nc": 3}, "`nc` is 3"),
        ({"names": ["a"]}, "has no `val:`"),
        ({"val": "images/nope", "names": ["a"]}, "neither an image folder nor a .txt list"),
        ({"val": "images/val", "train": "missing", "names": ["a"]}, "neither an image folder"),
        ({"val": "labels/val", "names": ["a"]}, "holds no images"),
    ],
)
def test_bad_data_yaml_names_the_file(yolo_shapes, make_yaml, cfg, message):
    make_yaml(yolo_shapes, cfg)
    with pytest.raises(DataError, match=message) as err:
        load_data(DataSpec(source="yolo", path=str(yolo_shapes)))
    assert str(yolo_shapes) in str(err.value)


def test_missing_or_broken_data_yaml(tmp_path):
    with pytest.raises(DataError, match="does not exist") as err:
        load_yolo(tmp_path / "nope" / "data.yaml")
    assert str(tmp_path / "nope" / "data.yaml") in str(err.value)
    broken = tmp_path / "data.yaml"
    broken.write_text("names: [a, b\nval: x\n")
    with pytest.raises(DataError, match="not valid YAML") as err:
        load_yolo(broken)
    assert str(broken) in str(err.value)
