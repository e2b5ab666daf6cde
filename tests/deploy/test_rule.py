"""Pick rules: parsing (errors name the problem) and picking over trial records (ties, strictness,
baselines, the nearest candidates when nothing matches)."""

from __future__ import annotations

import pytest

from edgetune.deploy import TrialPoint, parse_rule, pick
from edgetune.errors import ConfigError, DeployError
from edgetune.search.records import TrialRecord

DEVICES = ["pi", "orin"]


def point(n: int, baseline: str | None = None, state: str = "COMPLETE", **values) -> TrialPoint:
    vals = {k.replace("__", "@"): v for k, v in values.items()}
    return TrialPoint(number=n, state=state, record=TrialRecord(values=vals, label=f"cfg{n}"), baseline=baseline)


POINTS = [
    point(0, "fp32", map50_95__pi=0.50, latency_p50_ms__pi=80.0, size_bytes=8e6),
    point(1, "int8-uniform", map50_95__pi=0.47, latency_p50_ms__pi=35.0, size_bytes=2.1e6),
    point(2, map50_95__pi=0.49, latency_p50_ms__pi=40.0, size_bytes=1.9e6),
    point(3, map50_95__pi=0.49, latency_p50_ms__pi=30.0, size_bytes=1.5e6),
    point(4, state="FAIL"),
]


def test_parse_keys_and_default_device():
    rule = parse_rule("max map50_95 where latency_p50_ms@pi <= 40 and size_bytes <= 2e6", devices=DEVICES)
    assert (rule.goal, rule.key) == ("max", "map50_95@pi")
    assert rule.keys == ["map50_95@pi", "latency_p50_ms@pi", "size_bytes"]
    assert parse_rule("min latency_p50_ms@orin", devices=DEVICES).key == "latency_p50_ms@orin"
    assert parse_rule("min size_bytes", devices=DEVICES).conditions == ()


@pytest.mark.parametrize("text, fragment", [
    ("best map50_95", "is not a rule"),
    ("max map50_95 where", "nothing after `where`"),
    ("max map50_95 where size_bytes <= 1 or size_bytes >= 3", "only `and`"),
    ("max mAP where size_bytes <= 1", "unknown metric 'mAP'"),
    ("max map50_95@jetson", "not in the sweep's `devices:`"),
    ("max map50_95 where latency_p50_ms@nano <= 4", "'nano' is not in `devices:`"),
    ("max map50_95 where __import__('os') <= 1", "is not allowed"),
    ("min size_bytes@pi", "does not depend on the device"),
])
def test_parse_errors_say_what_is_wrong(text, fragment):
    with pytest.raises(ConfigError, match=None) as err:
        parse_rule(text, devices=DEVICES)
    assert fragment in str(err.value)


def test_pick_best_under_conditions_ties_and_strictness():
    rule = parse_rule("max map50_95 where latency_p50_ms@pi <= 40 and size_bytes <= 2e6", devices=DEVICES)
    assert pick(rule, POINTS).number == 2  # 2 and 3 tie on mAP: the lower trial number wins
    strict = parse_rule("max map50_95 where latency_p50_ms@pi < 40 and size_bytes <= 2e6", devices=DEVICES)
    assert pick(strict, POINTS).number == 3  # 40 is not < 40
    assert pick(parse_rule("min latency_p50_ms", devices=DEVICES), POINTS).number == 3
    relative = parse_rule("min size_bytes where map50_95 >= 0.97 * baseline.map50_95", devices=DEVICES)
    assert pick(relative, POINTS, baseline=POINTS[0].values).number == 3  # 0.49 >= 0.485; 0.47 is not


def test_no_match_lists_the_nearest_candidates_with_values():
    rule = parse_rule("max map50_95 where latency_p50_ms@pi <= 20 and size_bytes <= 1e6", devices=DEVICES)
    with pytest.raises(DeployError) as err:
        pick(rule, POINTS, sweep="sweep 'demo'")
    msg = str(err.value)
    assert "no trial of sweep 'demo' satisfies" in msg and "4 completed" in msg
    nearest = msg.split("Nearest: ", 1)[1]
    assert nearest.startswith("trial 3 (cfg3): map50_95@pi=0.49, latency_p50_ms@pi=30, size_bytes=1,500,000")
    assert "trial 4" not in msg  # failed trials are not candidates
    with pytest.raises(DeployError, match="never measured"):
        pick(parse_rule("max map50_95@orin", devices=DEVICES), POINTS)


def test_pick_names_the_trials_it_beat_by_less_than_the_noise():
    from edgetune.deploy._rule import noise_ties

    pts = [point(0, "fp32", map50_95__pi=0.7580, map50_95_se__pi=0.004, size_bytes=8e6),
           point(1, map50_95__pi=0.7585, map50_95_se__pi=0.004, size_bytes=4e6),  # +0.0005: noise
           point(2, map50_95__pi=0.7400, map50_95_se__pi=0.004, size_bytes=2e6)]
    rule = parse_rule("max map50_95", devices=DEVICES)
    chosen = pick(rule, pts)
    assert chosen.number == 1
    assert [p.number for p in noise_ties(rule, chosen, pts)] == [0]
    no_se = [point(0, map50_95__pi=0.7580), point(1, map50_95__pi=0.7585)]
    assert noise_ties(rule, pick(rule, no_se), no_se) == []  # noise unknown: nothing claimed
