"""CompressionConfig: serialisation, stable hash, baselines, sparsity labels (pure)."""

from __future__ import annotations

import pytest

from edgetune.errors import ConfigError
from edgetune.spaces import BASELINES, CompressionConfig, QuantSettings, Sparsity, baseline


def _cfg(**kw) -> CompressionConfig:
    base = {"precision": {"a.conv": "int8", "b.conv": "fp32"},
            "sparsity": {"a.conv": {"kind": "channel", "ratio": 0.25}, "b.conv": {"kind": "2:4"}}}
    return CompressionConfig.model_validate({**base, **kw})


def test_yaml_and_json_round_trip_keep_the_hash(tmp_path):
    c = _cfg()
    (tmp_path / "p.yaml").write_text(c.to_yaml())
    (tmp_path / "p.json").write_text(c.to_json())
    a, b = CompressionConfig.from_file(tmp_path / "p.yaml"), CompressionConfig.from_file(tmp_path / "p.json")
    assert a == c and b == c and a.hash() == b.hash() == c.hash()
    assert len(c.hash()) == 64


def test_hash_ignores_label_order_and_dense_groups_but_not_values():
    c = _cfg()
    same = CompressionConfig.model_validate({
        "name": "label", "sparsity": {"b.conv": {"kind": "2:4"}, "a.conv": {"ratio": 0.25}, "z.conv": {"ratio": 0.0}},
        "precision": {"b.conv": "fp32", "a.conv": "int8"}})
    assert same.hash() == c.hash()
    assert _cfg(precision={"a.conv": "fp16"}).hash() != c.hash()
    assert _cfg(quant=QuantSettings(calibration="entropy")).hash() != c.hash()
    assert _cfg(importance="lamp").hash() != c.hash()


def test_two_four_is_half_and_labels_parse():
    assert Sparsity(kind="2:4").ratio == 0.5
    with pytest.raises(ValueError, match="ratio must be 0.5"):
        Sparsity(kind="2:4", ratio=0.25)
    for label in ("dense", "2:4", "channel:0.25", "unstructured:0.5"):
        assert Sparsity.parse(label).label() == label
    with pytest.raises(ConfigError, match="KIND:RATIO"):
        Sparsity.parse("channel:lots")
    with pytest.raises(ValueError, match=r"\[0, 0.95\]"):
        Sparsity(ratio=0.99)


def test_baselines():
    assert set(BASELINES) == {"fp32", "int8-uniform", "fp16-uniform"}
    b = baseline("int8-uniform")
    assert b.precision_of("anything") == "int8" and not b.prunes and b.name == "int8-uniform"
    assert CompressionConfig.load("fp16-uniform").default_precision == "fp16"
    with pytest.raises(ConfigError, match="did you mean 'int8-uniform'"):
        baseline("int8-uniformm")
    with pytest.raises(ConfigError, match="Did you mean 'fp32'"):
        CompressionConfig.load("fp33")


def test_bad_point_files(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("precision: {a: int4}\n")
    with pytest.raises(ConfigError, match=r"`precision.a`"):
        CompressionConfig.from_file(p)
    p.write_text("sparsity: {g: {ratio: 1.5}}\n")
    with pytest.raises(ConfigError, match=r"\[0, 0.95\], but got 1.5"):
        CompressionConfig.from_file(p)
    p.write_text("precisoin: {}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        CompressionConfig.from_file(p)
    with pytest.raises(ConfigError, match="does not exist"):
        CompressionConfig.from_file(tmp_path / "nope.yaml")
