"""The suggested point: the fastest front member within 1 accuracy point of fp32, from side-by-side timings
where the sweep has them."""

from __future__ import annotations

import pandas as pd

from edgetune.search.front import fastest_close_to_fp32

KEYS = ["map50_95@local", "latency_p50_ms@local", "size_bytes"]


def frame(rows):
    return pd.DataFrame([{"state": "COMPLETE", "pareto": True, "baseline": None, "label": "", **r} for r in rows])


def test_the_fastest_member_within_one_point_of_fp32():
    df = frame([
        {"trial": 0, "baseline": "fp32", "map50_95@local": 0.758, "latency_p50_ms@local": 2.6, "sbs_latency_p50_ms@local": 2.5},
        {"trial": 1, "map50_95@local": 0.757, "latency_p50_ms@local": 1.9, "sbs_latency_p50_ms@local": 2.0, "label": "a"},
        {"trial": 2, "map50_95@local": 0.749, "latency_p50_ms@local": 1.2, "sbs_latency_p50_ms@local": 1.6, "label": "b"},
        {"trial": 3, "map50_95@local": 0.725, "latency_p50_ms@local": 1.0, "sbs_latency_p50_ms@local": 1.2, "label": "c"},
    ])
    s = fastest_close_to_fp32(df, KEYS)
    assert s["trial"] == 2 and s["side_by_side"] and abs(s["speedup"] - 2.5 / 1.6) < 1e-9  # 3 is 3.3 points off
    assert fastest_close_to_fp32(df.drop(columns=["sbs_latency_p50_ms@local"]), KEYS)["speedup"] == 2.6 / 1.2


def test_no_suggestion_without_a_faster_close_member_or_the_objectives():
    df = frame([{"trial": 0, "baseline": "fp32", "map50_95@local": 0.758, "latency_p50_ms@local": 2.0},
                {"trial": 1, "map50_95@local": 0.70, "latency_p50_ms@local": 1.0}])
    assert fastest_close_to_fp32(df, KEYS) is None
    assert fastest_close_to_fp32(df, ["size_bytes"]) is None


def test_the_printed_deploy_hint_starts_an_agent_with_the_runtimes_the_sweep_searched():
    from pathlib import Path

    from edgetune.config import load_sweep_config
    from edgetune.search._cli import _deploy_hint

    cfg = load_sweep_config(Path(__file__).resolve().parents[2] / "configs" / "demo.yaml")
    assert cfg.space.runtime == ["ort", "openvino"]
    df = frame([
        {"trial": 0, "baseline": "fp32", "map50_95@local": 0.758, "latency_p50_ms@local": 2.6, "size_bytes": 3e6},
        {"trial": 1, "map50_95@local": 0.757, "latency_p50_ms@local": 1.9, "size_bytes": 1e6, "label": "a"},
    ])
    df["feasible"] = True
    hint = _deploy_hint(cfg, df, KEYS, ["max", "min", "min"], config=Path("configs/demo.yaml"), local=True)
    agent = next(line for line in hint.splitlines() if "agent serve" in line)
    assert "--runtime ort,openvino " in agent and "--trial 1" in hint
