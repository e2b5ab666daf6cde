"""``search.screen``: the graph features, the latency predictor and the skip rule (the sweep's own use of
them is in tests/search/test_sweep_e2e.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgetune.objectives.constraints import parse_constraint
from edgetune.search.records import TrialRecord
from edgetune.search.screen import LatencyModel, Screen, graph_features, screen_report


def _conv_graph(path, *, int8: bool):
    """x (1,3,32,32) -> Conv 8x3x3x3 (pad 1) -> Gemm (8*32*32 -> 10), the conv's weight through a
    DequantizeLinear when ``int8``."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    if int8:
        inits += [numpy_helper.from_array(rng.integers(-127, 127, (8, 3, 3, 3)).astype(np.int8), "wq"),
                  numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
                  numpy_helper.from_array(np.array(0, np.int8), "wz")]
        nodes.append(helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"]))
    else:
        inits.append(numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"))
    inits += [numpy_helper.from_array(rng.standard_normal((10, 8 * 32 * 32)).astype(np.float32), "g"),
              numpy_helper.from_array(np.array([1, -1], np.int64), "shape")]
    nodes += [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
              helper.make_node("Reshape", ["c", "shape"], ["f"]),
              helper.make_node("Gemm", ["f", "g"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_graph_features_count_macs_by_the_precision_of_each_weight(tmp_path):
    conv, gemm = 8 * 32 * 32 * 3 * 3 * 3, 10 * 8 * 32 * 32
    f = graph_features(_conv_graph(tmp_path / "fp32.onnx", int8=False))
    assert f["gmacs_fp32"] == pytest.approx((conv + gemm) / 1e9) and f["gmacs_int8"] == 0
    q = graph_features(_conv_graph(tmp_path / "int8.onnx", int8=True))
    assert q["gmacs_int8"] == pytest.approx(conv / 1e9) and q["gmacs_fp32"] == pytest.approx(gemm / 1e9)
    assert f["mpixels"] == q["mpixels"] == pytest.approx(32 * 32 / 1e6)


def _features(rng, n):
    return [{"gmacs_fp32": float(a), "gmacs_int8": float(b), "gmacs_fp16": 0.0, "mpixels": float(p)}
            for a, b, p in zip(rng.uniform(0, 1, n), rng.uniform(0, 1, n), rng.choice([0.05, 0.065], n), strict=True)]


def test_the_latency_model_learns_non_negative_costs_and_reports_its_held_out_error():
    rng = np.random.default_rng(1)
    rows = _features(rng, 20)
    truth = [10 * r["gmacs_fp32"] + 3 * r["gmacs_int8"] + 20 * r["mpixels"] + 0.5 for r in rows]
    noisy = [y * (1 + rng.normal(0, 0.02)) for y in truth]
    m = LatencyModel(rows, noisy)
    assert (m.coef >= 0).all()
    assert m.coef[0] == pytest.approx(10, rel=0.15) and m.coef[1] == pytest.approx(3, rel=0.3)
    errs = LatencyModel.held_out_errors(rows, noisy)
    assert len(errs) == 20 and np.median(errs) < 0.05
    # an unrelated latency: the held-out error says so (it is the margin the screen uses)
    assert np.median(LatencyModel.held_out_errors(rows, list(rng.uniform(1, 10, 20)))) > 0.2


def _record(features, *, latency, acc, size, rung=None, runtime="ort", feasible=True):
    return TrialRecord(runtime=runtime, values={"map50_95@dev": acc, "latency_p50_ms@dev": latency, "size_bytes": size},
                       feasible=feasible, screen={"features": features, "rung": {"map50_95": rung if rung is not None else acc},
                                                  "skip": None, "applied": False})


KEYS, GOALS = ["map50_95@dev", "latency_p50_ms@dev", "size_bytes"], ["max", "min", "min"]
SLOW = {"gmacs_fp32": 5.0, "gmacs_int8": 0.0, "gmacs_fp16": 0.0, "mpixels": 0.065}  # far slower than all measured
FAST = {"gmacs_fp32": 0.0, "gmacs_int8": 0.01, "gmacs_fp16": 0.0, "mpixels": 0.05}  # faster than all measured


def _judge(screen, features, acc, *, runtime="ort", size=5000.0, records, baseline=None):
    return screen.judge({"features": features, "rung": {"map50_95": acc}}, runtime=runtime,
                        known={"size_bytes": size}, records=records, baseline=baseline)


def _history(n=10):
    rng = np.random.default_rng(2)
    rows = _features(rng, n)
    return [(i, _record(r, latency=10 * r["gmacs_fp32"] + 3 * r["gmacs_int8"] + 20 * r["mpixels"] + 0.5,
                        acc=0.8 + 0.01 * (i % 3), size=1000 + i, rung=0.79 + 0.01 * (i % 3)))
            for i, r in enumerate(rows)]


def test_a_candidate_dominated_even_at_its_optimistic_values_is_skipped_and_one_that_could_win_is_not():
    history = _history()
    screen = Screen(mode="on", keys=KEYS, goals=GOALS, constraints=[], devices=["dev"], min_trials=8)
    # far slower (all fp32, many MACs), no more accurate, larger than everything measured
    out = _judge(screen, SLOW, 0.79, records=history)
    assert out["skip"].startswith("dominated by trial") and out["applied"] and out["predicted"]["latency_p50_ms@dev"] > 40
    # optimistic: latency lowered by the held-out error, accuracy raised by the largest rung residual (+0.01 here)
    assert out["optimistic"]["map50_95@dev"] == pytest.approx(0.79 + 0.01 + 0.005)
    # the smallest model: nothing measured dominates it, whatever its accuracy
    assert _judge(screen, FAST, 0.5, size=10.0, records=history)["skip"] is None


def test_no_skip_before_the_margins_are_calibrated_on_that_runtime_and_constraints_skip_with_their_text():
    history = _history()
    screen = Screen(mode="on", keys=KEYS, goals=GOALS, constraints=[], devices=["dev"], min_trials=8)
    out = _judge(screen, SLOW, 0.79, runtime="openvino", records=history)
    assert out["skip"] is None and any("predictor: 0 of 8" in u for u in out["unknown"])
    out = _judge(screen, SLOW, 0.79, records=history[:5])
    assert out["skip"] is None and out["unknown"]
    c = parse_constraint("map50_95 >= 0.95 * baseline.map50_95", devices=["dev"], where="constraints.0")
    screen = Screen(mode="on", keys=KEYS, goals=GOALS, constraints=[c], devices=["dev"], min_trials=8)
    out = _judge(screen, SLOW, 0.70, records=history, baseline={"map50_95@dev": 0.82})
    assert out["skip"].startswith("cannot meet `map50_95 >= 0.95 * baseline.map50_95`")
    # the accuracy margin is calibrated per runtime too: none measured on openvino, no skip there
    assert _judge(screen, SLOW, 0.70, runtime="openvino", records=history,
                  baseline={"map50_95@dev": 0.82})["skip"] is None
    # two estimated values in one constraint: their optimistic bounds do not bound it, so it never skips
    two = parse_constraint("latency_p50_ms@dev <= 0.001 * map50_95@dev", devices=["dev"], where="constraints.1")
    screen = Screen(mode="on", keys=KEYS, goals=GOALS, constraints=[two], devices=["dev"], min_trials=8)
    assert _judge(screen, FAST, 0.5, size=10.0, records=history)["skip"] is None


def test_the_report_counts_skips_and_the_shadow_mode_false_skips():
    history = _history()
    shadow = _record(history[0][1].screen["features"], latency=1.0, acc=0.9, size=1)
    shadow.screen.update(skip="dominated by trial 3", applied=False)
    skipped = TrialRecord(runtime="ort", screen={"features": {}, "rung": {}, "skip": "dominated by trial 2",
                                                 "applied": True})
    assert skipped.skipped and not shadow.skipped
    rep = screen_report([*history, (10, shadow), (11, skipped)], keys=KEYS, ranks={10: 0, 1: 0})
    assert rep["skipped"] == [11] and rep["would_skip"] == [10] and rep["false_skips"] == [10]
    assert rep["predictor"]["latency_p50_ms@dev"]["trials"] == 11 and rep["predictor"]["latency_p50_ms@dev"]["median_pct"] >= 0
    _, _, tags, _ = skipped.mlflow(number=11, state="PRUNED", sampler="tpe")
    assert tags["status"] == "skipped" and tags["skip_reason"] == "dominated by trial 2"
