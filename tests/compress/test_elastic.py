"""Train once, cut many (``recovery.mode: elastic``): one elastic fine-tune serves every width config and
input size of the space; each config is cut from it (real channel removal) with BatchNorm re-estimation
only, exports, and its ONNX matches its torch model. The quality of elastic weights is a benchmark
(``benchmarks/bench_front.py``), not a test: these use a handful of steps."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgetune.compress import compress
from edgetune.compress._spec import RecoverySpec
from edgetune.spaces import SpaceSpec, build_space

ELASTIC = RecoverySpec(mode="elastic", steps=4, batch=8, train_images=32, progressive=0.0)


@pytest.fixture(scope="module")
def elastic_space(det_s):
    # magnitude importance: no gradient pass before the fine-tune (taylor with elastic: test_yolo11n_sweep)
    spec = SpaceSpec(precision=["fp32", "int8"], sparsity={"kind": "channel", "ratios": [0, 0.25, 0.5],
                                                           "importance": "magnitude"},
                     keep={"precision": {"fp32": ["first", "last"]}, "sparsity": ["first", "last"]},
                     tie={"precision": "model", "sparsity": "model"}, input_size=[256, 192])
    return build_space(det_s, spec)


@pytest.fixture(scope="module")
def elastic_workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("elastic")


def _point(space, sparsity: str, size: str):
    return space.config_from({d.name: sparsity if d.kind == "sparsity" else size if d.kind == "input_size" else "fp32"
                              for d in space.dimensions})


@pytest.mark.slow
def test_two_width_configs_are_cut_from_one_elastic_model_and_match_their_torch_outputs(
        det_s, elastic_space, elastic_workdir, train_split, shapes_calib):
    a = compress(det_s, _point(elastic_space, "channel:0.25", "256"), calib=shapes_calib, workdir=elastic_workdir,
                 train=train_split, recovery=ELASTIC, space=elastic_space)
    b = compress(det_s, _point(elastic_space, "channel:0.5", "192"), calib=shapes_calib, workdir=elastic_workdir,
                 train=train_split, recovery=ELASTIC, space=elastic_space)
    trained = [p for p in (elastic_workdir / "elastic").iterdir()]
    assert len(trained) == 1, "both configs must come from ONE elastic fine-tune"
    meta = json.loads((trained[0] / "elastic.json").read_text())
    assert meta["sizes"] == [256, 192] and meta["recovery"]["steps"] == ELASTIC.steps
    assert a.manifest["timings_s"].get("elastic_train") and b.manifest["timings_s"].get("elastic_from_cache")
    for art, size in ((a, 256), (b, 192)):
        m = art.manifest
        assert m["input"]["shape"] == [1, 3, size, size]
        assert m["recovery"]["result"]["mode"] == "elastic" and m["recovery"]["result"]["steps"] == 0
        assert m["max_abs_diff_vs_torch"] < 1e-3  # the exported ONNX is the cut torch model (fp32 parity check)
        before, after = np.array(list(m["resolved"]["channels"].values())).T
        assert (after < before).all() and len(before) > 10  # channels physically removed in every cut group
    wa = sum(v[1] for v in a.manifest["resolved"]["channels"].values())
    wb = sum(v[1] for v in b.manifest["resolved"]["channels"].values())
    assert wb < wa and b.manifest["sizes"]["params"] < a.manifest["sizes"]["params"]
    # each cut keeps the head of its group's importance order (recorded once, with the elastic weights)
    order = meta["orders"]
    for g, (before, after) in b.manifest["resolved"]["channels"].items():
        assert len(order[g]) == before and after < before


def test_elastic_recovery_also_serves_unpruned_configs_at_another_size(elastic_space):
    from edgetune.compress import needs_train

    dense_192 = _point(elastic_space, "dense", "192")
    assert not dense_192.prunes and needs_train(ELASTIC, dense_192)  # the elastic weights were trained at 192 too
    assert not needs_train(RecoverySpec(), dense_192)  # per-config recovery fine-tunes pruned configs only
    assert not needs_train(ELASTIC, _point(elastic_space, "dense", "256"))  # the model itself


def test_the_shipped_elastic_weights_are_the_ones_the_demo_asks_for(tmp_path):
    """``make demo`` takes its elastic fine-tune from the package (edgetune/models/weights/elastic): the demo
    config must still ask for that key, or a fresh machine trains for minutes again. When this fails after a
    change to the demo's space, recovery, data or model, train the entry again (docs/models.md)."""
    from pathlib import Path

    import torch

    from edgetune.assembly import assemble
    from edgetune.compress._compress import elastic_key_for
    from edgetune.compress._elastic import SHIPPED
    from edgetune.search.wiring import _load_cfg

    cfg, _ = _load_cfg(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")
    parts = assemble(cfg, kinds=["local-cpu"], workdir=tmp_path)
    key = elastic_key_for(parts.model, parts.space, cfg.recovery, parts.splits.train)
    entry = SHIPPED / key
    assert (entry / "elastic.json").is_file(), (key, sorted(p.name for p in SHIPPED.iterdir()))
    assert sorted(p.name for p in SHIPPED.iterdir()) == [key], "an entry no config asks for is dead weight in git"
    meta = json.loads((entry / "elastic.json").read_text())
    assert meta["recovery"]["steps"] == cfg.recovery.steps and meta["sizes"] == [256, 224]
    state = torch.load(entry / "weights.pt", map_location="cpu", weights_only=True)
    assert state.keys() == parts.model.module.state_dict().keys()
