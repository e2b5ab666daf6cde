"""The side-by-side check: the interleaved timing loop and how the sweep reads its result (the end-to-end
sweep test times a real front on a real agent)."""

from __future__ import annotations

import pytest

from edgetune.device_agents._timing import time_interleaved
from edgetune.search.side_by_side import latency_keys, run_side_by_side, sbs_columns


def test_latency_keys_always_include_p50_per_device():
    keys = ["map50_95@a", "latency_p90_ms@a", "latency_p50_ms@b", "e2e_latency_p50_ms@c", "size_bytes"]
    assert latency_keys(keys) == {"a": ["latency_p50_ms", "latency_p90_ms"], "b": ["latency_p50_ms"]}


def test_interleaved_turns_rotate_and_each_burst_starts_untimed():
    calls: list[str] = []
    fns = {name: (lambda n: lambda: calls.append(n))(name) for name in "abc"}
    samples = time_interleaved(fns, runs=7, burst=3)
    assert {k: len(v) for k, v in samples.items()} == {"a": 7, "b": 7, "c": 7}
    # turn 0: a b c, turn 1: b c a, turn 2: c a b; each burst = 1 untimed + up to 3 timed calls
    assert calls[:12] == list("aaaabbbbcccc")
    assert calls[12:24] == list("bbbbccccaaaa")
    assert calls[24:] == list("ccaabb")  # last turn: 1 timed run left each
    assert all(v >= 0 for s in samples.values() for v in s)


def test_run_side_by_side_maps_stats_to_trials_and_dedupes_paths():
    seen = []

    def compare(entries, device):
        seen.append((tuple(entries), device))
        return {e: {"p50_ms": 2.0 if e[0] == "fp32.onnx" else 1.0 if e[1] is None else 0.5, "p90_ms": 3.0,
                    "ci95_low_ms": 0.9, "ci95_high_ms": 2.1, "n": 50} for e in entries}

    # two trials that produced the same artifact, and the same artifact measured on another runtime
    members = {0: ("fp32.onnx", None), 4: ("a.onnx", None), 9: ("a.onnx", None), 11: ("a.onnx", "openvino")}
    out = run_side_by_side(members, devices={"dev": ["latency_p50_ms", "latency_p90_ms"]}, compare=compare)
    assert seen == [((("fp32.onnx", None), ("a.onnx", None), ("a.onnx", "openvino")), "dev")]
    assert out["values"]["11"]["latency_p50_ms@dev"] == 0.5
    assert out["values"]["0"] == {"latency_p50_ms@dev": 2.0, "latency_p90_ms@dev": 3.0}
    assert out["values"]["9"]["latency_p50_ms@dev"] == 1.0 and out["n"] == 50
    assert out["ci95"]["4"]["dev"] == [0.9, 2.1]
    assert sbs_columns(out, 4) == {"sbs_latency_p50_ms@dev": 1.0, "sbs_latency_p90_ms@dev": 3.0,
                                   "sbs_ci95_low_latency_p50_ms@dev": 0.9, "sbs_ci95_high_latency_p50_ms@dev": 2.1}
    assert sbs_columns(out, 5) == {} and sbs_columns(None, 0) == {}
    assert out["estimator"] == "pooled median"  # an agent before protocol 1.5: no ratios


def test_with_ratios_a_members_p50_is_its_ratio_times_the_baselines():
    """Protocol 1.5: /compare gives each artifact's paired ratio to the first (the fp32 baseline); the
    check then reads p50 and its CI as ratio x the baseline's p50, the estimator the paired trials used."""
    def compare(entries, device):
        return {e: {"p50_ms": 4.0 if e[0] == "fp32.onnx" else 3.0, "p90_ms": 5.0, "ci95_low_ms": 2.9,
                    "ci95_high_ms": 3.1, "n": 40, "ratio": [1.0, 1.0, 1.0] if e[0] == "fp32.onnx" else [0.5, 0.45, 0.6]}
                for e in entries}

    out = run_side_by_side({0: ("fp32.onnx", None), 3: ("a.onnx", None)}, devices={"dev": ["latency_p50_ms"]},
                           compare=compare)
    assert out["values"]["0"]["latency_p50_ms@dev"] == 4.0 and out["ci95"]["0"]["dev"] == [4.0, 4.0]
    assert out["values"]["3"]["latency_p50_ms@dev"] == 2.0 and out["ci95"]["3"]["dev"] == [1.8, 2.4]
    assert out["estimator"] == "paired fastest-run ratio x fp32 p50"


def test_a_failing_device_raises_to_the_caller():
    def compare(paths, device):
        raise ConnectionError("agent gone")

    with pytest.raises(ConnectionError):
        run_side_by_side({0: ("x.onnx", None), 1: ("y.onnx", None)}, devices={"d": ["latency_p50_ms"]}, compare=compare)
