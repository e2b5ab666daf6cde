"""The sensitivity pass: each sparsity dimension cut alone for real, BatchNorm re-estimated, scored in torch;
``space.sparsity.max_drop`` removes the ratios that cost more (det-s, 16 validation images)."""

from __future__ import annotations

import dataclasses

import pytest

IMAGES = 16
STAGES = ("sparsity/stage:stage1", "sparsity/stage:stage3", "sparsity/stage:td3")


@pytest.fixture(scope="module")
def stage_space(det_s):
    from edgetune.spaces import SpaceSpec, build_space

    spec = SpaceSpec(precision=["fp32"], sparsity={"ratios": [0, 0.25, 0.5]}, keep={"sparsity": ["first", "last"]},
                     tie={"sparsity": "stage"}, targets=["local-cpu"])
    space = build_space(det_s, spec)
    keep = [d for d in space.dimensions if d.name in STAGES]
    assert len(keep) == len(STAGES)
    return dataclasses.replace(space, dimensions=tuple(keep))  # three stages: 6 cuts keep the test short


@pytest.fixture(scope="module")
def sens(det_s, stage_space, shapes_val, train_split, tmp_path_factory):
    from edgetune.compress import measure_sensitivity

    wd = tmp_path_factory.mktemp("sens")
    seen: list = []
    result = measure_sensitivity(det_s, stage_space, train=train_split, val=shapes_val, images=IMAGES, workdir=wd,
                                 on_cut=lambda done, total, cut: seen.append((done, total)))
    return result, wd, seen


def test_every_dimension_is_cut_alone_at_each_ratio_it_offers(sens, stage_space, det_s, shapes_val):
    import torch

    from edgetune.models._evaluate import evaluate

    result, _, seen = sens
    dims = [d for d in stage_space.dimensions if d.kind == "sparsity"]
    expected = {(d.name, float(c.split(":")[1])) for d in dims for c in d.choices if c.startswith("channel:")}
    assert {(c.dimension, c.ratio) for c in result.cuts} == expected and len(result.cuts) == len(expected) == 6
    assert seen[-1] == (len(expected), len(expected))
    with torch.no_grad():
        uncut = evaluate(lambda x: det_s.module(torch.from_numpy(x)).numpy(), shapes_val.subset(range(IMAGES)),
                         det_s.head, size=det_s.input_size)["map50_95"]
    assert result.uncut == pytest.approx(uncut, abs=1e-4) and result.images == IMAGES
    assert abs(result.baseline - result.uncut) < 0.03  # BatchNorm re-estimated on 128 train images
    assert result.importance == "taylor"  # auto with a train split and a supervised loss
    for c in result.cuts:
        assert 0 < c.kept < c.channels and 0 < c.macs_removed < 1
        assert c.drop == pytest.approx(result.baseline - c.metric, abs=2e-4)
    for d in dims:  # a deeper cut of the same dimension removes more of the model
        cuts = sorted((c for c in result.cuts if c.dimension == d.name), key=lambda c: c.ratio)
        assert [c.macs_removed for c in cuts] == sorted(c.macs_removed for c in cuts)


def test_the_result_is_cached_and_read_back(sens, det_s, stage_space, shapes_val, train_split):
    from edgetune.compress import measure_sensitivity

    result, wd, _ = sens
    files = list((wd / "sensitivity").glob("*.json"))
    assert len(files) == 1
    again = measure_sensitivity(det_s, stage_space, train=train_split, val=shapes_val, images=IMAGES, workdir=wd,
                                on_cut=lambda *a: pytest.fail("a cached result is measured again"))
    assert again == result


def test_max_drop_removes_the_costly_ratios_from_the_space(sens, stage_space):
    from edgetune.compress import restrict_space
    from edgetune.errors import ConfigError

    result, _, _ = sens
    drops = sorted(c.drop for c in result.cuts)
    max_drop = (drops[len(drops) // 2] + drops[len(drops) // 2 + 1]) / 2
    assert drops[0] < max_drop < drops[-1]
    small = restrict_space(stage_space, result, max_drop)
    costly = [c for c in result.cuts if c.drop > max_drop]
    base = {d.name: d.choices[0] for d in small.dimensions}
    for c in costly:
        dim = next((d for d in small.dimensions if d.name == c.dimension), None)
        label = f"channel:{c.ratio:g}"
        if dim is not None:
            assert label not in dim.choices
            with pytest.raises(ConfigError, match="not a choice"):
                small.config_from({**base, c.dimension: label})
        assert any(c.dimension in n and "max_drop" in n for n in small.notes)
    for c in result.cuts:  # the cheap cuts stay offered
        if c.drop <= max_drop:
            assert f"channel:{c.ratio:g}" in next(d for d in small.dimensions if d.name == c.dimension).choices
    gone = [d.name for d in stage_space.dimensions if d.name not in {x.name for x in small.dimensions}]
    for name in gone:  # a dimension left with dense only is pinned, with the reason
        members = next(d for d in stage_space.dimensions if d.name == name).members
        assert all(small.sparsity_choices[m] == ("dense",) and "sensitivity" in small.sparsity_pins[m]
                   for m in members)
    assert restrict_space(stage_space, result, 1.0).dimensions == stage_space.dimensions
