"""An ONNX file with no torch module behind it (``model.source: onnx``): precision search end to end."""

from __future__ import annotations

import onnx
import pytest

from edgetune.search.records import RECORD_ATTR
from edgetune.search.wiring import prepare_sweep


def _onnx_model(det_s_onnx) -> dict:
    return {"source": "onnx", "path": str(det_s_onnx), "task": "detect"}


@pytest.mark.slow
def test_an_onnx_only_sweep_runs_four_trials(tmp_path, make_sweep, local_agent, sweep_workdir, det_s_onnx):
    from edgetune.compress import Artifact
    from edgetune.compress._onnx_map import quantized_nodes

    path = make_sweep(tmp_path, name="onnx-only", trials=4, ratios=(0.0, 0.5), extra={"model": _onnx_model(det_s_onnx)})
    sweep, space, cfg = prepare_sweep(path, workdir=sweep_workdir, local_agents=local_agent)
    assert sweep.hooks.parts.model.module is None and not space.groups
    assert any("sparsity not offered" in n for n in space.notes)
    assert {d.kind for d in space.dimensions} == {"precision"}
    sweep.run(space)
    trials = sweep.study.get_trials()
    records = [t.user_attrs.get(RECORD_ATTR, {}) for t in trials]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4, [r.get("error") for r in records]
    by_base = {t.user_attrs.get("baseline"): r for t, r in zip(trials, records, strict=True)}
    fp32 = Artifact.load(sweep.hooks.artifact_dir(by_base["fp32"]["artifact_hash"]))
    int8 = Artifact.load(sweep.hooks.artifact_dir(by_base["int8-uniform"]["artifact_hash"]))
    assert fp32.manifest["max_abs_diff_vs_torch"] == 0.0  # fp32 is the source graph, renamed and compacted
    q = quantized_nodes(onnx.load(str(int8.onnx_path)))
    assert sum(q.values()) == 99  # the uniform baseline: every layer int8
    assert "stem.conv" in q and "stage2.0.conv" in q  # nodes carry the layer names
    assert all(t.values[0] > 0.5 for t in trials)  # map50_95 on the agent, from the device runtime's outputs


def test_pruning_or_resizing_an_onnx_model_is_refused_naming_the_field(tmp_path, make_sweep, det_s_onnx, det_s,
                                                                       shapes_calib):
    from edgetune.assembly import assemble
    from edgetune.compress import compress
    from edgetune.config import load_sweep_config
    from edgetune.errors import CompressionError, ConfigError

    path = make_sweep(tmp_path, name="onnx-resize", trials=2, extra={
        "model": _onnx_model(det_s_onnx), "space": {"precision": ["fp32", "int8"], "input_size": [256, 224]}})
    with pytest.raises(ConfigError, match=r"`space.input_size`.*exported at 256 px"):
        assemble(load_sweep_config(path), train=False)
    path = make_sweep(tmp_path, name="onnx-prune", trials=2, extra={"model": _onnx_model(det_s_onnx)})
    parts = assemble(load_sweep_config(path), train=False)
    from edgetune.spaces import build_space

    pruned = build_space(det_s, parts.cfg.space).config_from(
        {d.name: "channel:0.5" if "channel:0.5" in d.choices else d.choices[0]
         for d in build_space(det_s, parts.cfg.space).dimensions})
    with pytest.raises(CompressionError, match="can be quantized per layer, not pruned"):
        compress(parts.model, pruned, calib=shapes_calib, workdir=tmp_path)
