"""The device-kind rule table and the ``space:`` section (pure, no torch)."""

from __future__ import annotations

import pytest

from edgetune.config import load_sweep_config
from edgetune.errors import ConfigError
from edgetune.spaces import RULES, SpaceSpec, offered, quant_for_kinds, rule_for


def test_cpu_fleets_get_no_fp16_and_no_two_four():
    for kind in ("x86-cpu", "local-cpu", "rpi4", "rpi5"):
        precisions, sparsity = offered([kind])
        assert precisions == {"fp32", "int8"}, kind
        assert "2:4" not in sparsity and "channel" in sparsity, kind


def test_jetson_adds_fp16_two_four_and_makes_int8_symmetric():
    precisions, sparsity = offered(["rpi5", "jetson-orin"])
    assert precisions == {"fp32", "fp16", "int8"}
    assert sparsity == {"channel", "unstructured", "2:4"}
    q = quant_for_kinds(["rpi5", "jetson-orin"])
    assert q.activation_symmetric and q.activation_type == "int8"
    cpu = quant_for_kinds(["x86-cpu", "rpi4"])
    assert not cpu.activation_symmetric and cpu.activation_type == "uint8"
    assert "Conv" in cpu.op_types and "Sigmoid" not in cpu.op_types and "Mul" not in cpu.op_types


def test_local_cpu_is_x86_cpu():
    a, b = RULES["local-cpu"], RULES["x86-cpu"]
    assert (a.precisions, a.sparsity_kinds, a.quant) == (b.precisions, b.sparsity_kinds, b.quant)


def test_unknown_kind_suggests_the_close_one():
    with pytest.raises(ConfigError, match="Closest names: rpi4"):
        rule_for("rpi-4", strict=True)
    with pytest.raises(ConfigError, match="targets"):
        offered([])


def test_space_spec_rejects_bad_ratio_and_kind():
    with pytest.raises(ValueError, match=r"must be in \[0, 0.95\], but got 1.2"):
        SpaceSpec(sparsity={"ratios": [0.0, 1.2]})
    with pytest.raises(ValueError, match="Closest names: jetson-orin"):
        SpaceSpec(targets=["jetson-orn"])
    with pytest.raises(ValueError, match="both fp32 and int8"):
        SpaceSpec(keep={"precision": {"fp32": ["first"], "int8": ["first"]}})
    assert SpaceSpec(sparsity={"ratios": [0.5, 0.0, 0.5]}).sparsity.ratios == [0.0, 0.5]
    assert SpaceSpec(sparsity={"kind": ["channel", "2:4"]}).sparsity.kinds == ("channel", "2:4")


def _sweep(tmp_path, space_yaml: str):
    p = tmp_path / "s.yaml"
    p.write_text("name: t\nmodel: {source: builtin, name: det-s}\ndata: {source: builtin, name: shapes}\n"
                 "objectives: [{metric: size_bytes}]\n" + space_yaml)
    return p


def test_sweep_file_space_and_recovery_sections(tmp_path):
    cfg = load_sweep_config(_sweep(tmp_path, "space: {precision: [fp32, int8], tie: stage}\nrecovery: {steps: 0}\n"))
    assert cfg.space.tie == "stage" and cfg.recovery.steps == 0 and not cfg.recovery.enabled
    with pytest.raises(ConfigError, match=r"`space.sparsity.ratios.*must be in \[0, 0.95\]"):
        load_sweep_config(_sweep(tmp_path, "space: {sparsity: {ratios: [0.0, 1.5]}}\n"))
    with pytest.raises(ConfigError, match=r"`space.keep.precison`: unknown key"):
        load_sweep_config(_sweep(tmp_path, "space: {keep: {precison: {fp32: [first]}}}\n"))
    with pytest.raises(ConfigError, match=r"`recovery.steps`"):
        load_sweep_config(_sweep(tmp_path, "recovery: {steps: -1}\n"))


def test_demo_config_validates():
    cfg = load_sweep_config("configs/demo.yaml")
    assert cfg.model.name == "det-s" and cfg.data.name == "shapes"
    assert cfg.space.keep.precision == {"fp32": ["first", "last"]}


@pytest.mark.parametrize(("kind", "base"), [("riscv64-cpu", "x86-cpu"), ("jetson", "jetson-nano"),
                                           ("jetson-agx-2030", "jetson-nano"), ("rpi", "rpi4"), ("rpi7", "rpi4"),
                                           ("aarch64-cpu", "arm64-cpu")])
def test_a_kind_an_agent_reports_outside_the_table_gets_its_familys_rules_and_a_warning(kind, base, caplog,
                                                                                       monkeypatch):
    """What the agent's probe can report on an unknown board (board.infer_kind) builds a space, with a warning."""
    import logging

    from edgetune.spaces import _rules, space_from_layers
    from edgetune.spaces._layers import Layer

    monkeypatch.setattr(_rules, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="edgetune"):
        rule = rule_for(kind)
    ref = RULES[base]
    assert (rule.kind, rule.precisions, rule.sparsity_kinds, rule.quant) == (kind, ref.precisions, ref.sparsity_kinds,
                                                                            ref.quant)
    assert any(kind in r.getMessage() and "not in edgetune's rule table" in r.getMessage() for r in caplog.records)
    lay = Layer(name="conv", kind="dense", in_channels=3, out_channels=16, kernel=(3, 3), groups=1, params=432,
                macs=1000, first=True, last=True)
    space = space_from_layers([lay], [], SpaceSpec(precision=["fp32", "fp16", "int8"]), targets=[kind])
    assert set(space.precision_choices["conv"]) == set(ref.precisions)


def test_the_jetson_family_and_pi3_follow_their_gpus_and_cores():
    assert "2:4" not in RULES["jetson-xavier"].sparsity_kinds and "int8" in RULES["jetson-xavier"].precisions
    assert "2:4" in RULES["jetson-thor"].sparsity_kinds
    assert RULES["jetson-nano"].precisions == RULES["jetson-tx2"].precisions == ("fp32", "fp16")
    assert RULES["rpi3"].precisions == RULES["rpi4"].precisions and RULES["arm64-cpu"].runtime == "onnxruntime-cpu"
