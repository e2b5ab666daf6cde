"""Constraint parsing and evaluation (<= 0 means satisfied, as Optuna's set_constraint expects)."""

from __future__ import annotations

import pytest

from edgetune.errors import ConfigError
from edgetune.objectives import parse_constraint


def test_relative_to_baseline_on_default_device():
    c = parse_constraint("map50_95 >= 0.95 * baseline.map50_95", devices=["local", "pi"])
    assert c.keys == {"map50_95@local"} and c.baseline_keys == {"map50_95@local"}
    assert c.violation({"map50_95@local": 0.80}, {"map50_95@local": 0.80}) <= 0
    assert c.violation({"map50_95@local": 0.70}, {"map50_95@local": 0.80}) == pytest.approx(0.06)


def test_device_suffix_and_upper_bound():
    c = parse_constraint("latency_p50_ms@pi <= 40", devices=["local", "pi"])
    assert c.keys == {"latency_p50_ms@pi"}
    assert c.violation({"latency_p50_ms@pi": 35.0}) == pytest.approx(-5.0)
    assert c.violation({"latency_p50_ms@pi": 41.0}) == pytest.approx(1.0)


def test_device_independent_metric_and_arithmetic():
    c = parse_constraint("size_bytes <= baseline.size_bytes / 2 + 1000", devices=[])
    assert c.violation({"size_bytes": 500.0}, {"size_bytes": 2000.0}) == pytest.approx(-1500.0)


@pytest.mark.parametrize(("text", "match"), [
    ("map50_95 >=", "does not parse"),
    ("map50_95", "one comparison"),
    ("mAP >= 0.5", "unknown metric 'mAP'"),
    ("latency_p50_ms@jetson <= 3", "device 'jetson' is not in `devices:`"),
    ("__import__('os') <= 1", "not allowed"),
    ("map50_95 == 0.5", "use <=, <, >= or >"),
])
def test_bad_constraints_name_the_problem(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_constraint(text, devices=["local"])


def test_on_device_metric_needs_a_device_when_there_is_none():
    with pytest.raises(ConfigError, match="write latency_p50_ms@DEVICE"):
        parse_constraint("latency_p50_ms <= 3", devices=[])


def test_unmeasured_value_raises_keyerror():
    c = parse_constraint("energy_mj <= 3", devices=["local"])
    with pytest.raises(KeyError, match="energy_mj@local"):
        c.violation({"latency_p50_ms@local": 1.0})


def test_device_names_with_dashes_and_dots():
    c = parse_constraint("latency_p50_ms@jetson-orin.lab <= 5 * baseline.latency_p50_ms@jetson-orin.lab / 2",
                         devices=["local-0", "jetson-orin.lab"])
    assert c.keys == {"latency_p50_ms@jetson-orin.lab"}
    assert c.violation({"latency_p50_ms@jetson-orin.lab": 4.0}, {"latency_p50_ms@jetson-orin.lab": 2.0}) == pytest.approx(-1.0)


@pytest.mark.parametrize(("shown", "canonical"), [
    ("mAP50-95 >= 0.7", "map50_95 >= 0.7"),
    ("MAP50 > 0.9", "map50 > 0.9"),
    ("p50@pi-1 <= 4", "latency_p50_ms@pi-1 <= 4"),
    ("mAP50-95 >= 0.95 * baseline.mAP50-95", "map50_95 >= 0.95 * baseline.map50_95"),
    ("size <= 2e6", "size_bytes <= 2e6"),
])
def test_the_names_tables_show_are_accepted(shown, canonical):
    """mAP50-95 is the metric, not mAP50 minus 95; the aliases read exactly as the canonical names."""
    a = parse_constraint(shown, devices=["pi-1"])
    b = parse_constraint(canonical, devices=["pi-1"])
    assert (a.keys, a.baseline_keys, a.op) == (b.keys, b.baseline_keys, b.op)
    values = {"map50_95@pi-1": 0.8, "map50@pi-1": 0.95, "latency_p50_ms@pi-1": 3.0, "size_bytes": 1e6}
    assert a.violation(values, values) == b.violation(values, values)


def test_a_pick_rule_takes_the_shown_names_too():
    from edgetune.deploy._rule import parse_rule

    rule = parse_rule("max mAP50-95 where p50 <= 4 and size <= 2e6", devices=["local"])
    assert rule.key == "map50_95@local" and rule.keys == ["map50_95@local", "latency_p50_ms@local", "size_bytes"]
