"""Statistics, protocol versions, the ONNX wire scan and dataset bundles (no agent process needed)."""

from __future__ import annotations

import io
import math
import re
import zipfile
from fractions import Fraction

import numpy as np
import pytest

from edgetune.device_agents import LatencySpec, MeasureRequest, check_protocol, make_bundle, read_bundle
from edgetune.device_agents._onnx_check import not_onnx_reason, scan_onnx
from edgetune.device_agents._stats import latency_stats, median_ci, paired_ratio
from edgetune.device_agents.protocol import PROTOCOL_VERSION
from edgetune.errors import DataError, ProtocolMismatch


def _exact_ranks(n: int, level: float = 0.95) -> tuple[int, Fraction]:
    """Independent check: largest j with 1 - 2 P(B <= j-1) >= level, B ~ Bin(n, 1/2), in exact fractions."""
    best, best_cov, cdf = 1, None, Fraction(0)
    for j in range(1, n // 2 + 1):
        cdf += Fraction(math.comb(n, j - 1), 2**n)
        cov = 1 - 2 * cdf
        if best_cov is None or cov >= level:
            best, best_cov = j, cov
        if cov < level:
            break
    return best, best_cov


@pytest.mark.parametrize("n", [2, 5, 6, 10, 30, 100, 1001])
def test_median_ci_uses_the_binomial_order_statistics(n):
    xs = np.random.default_rng(n).lognormal(size=n)
    lo, hi, cov = median_ci(xs)
    j, exact = _exact_ranks(n)
    s = np.sort(xs)
    assert (lo, hi) == (s[j - 1], s[n - j]) and cov == pytest.approx(float(exact), abs=1e-12)
    assert (cov >= 0.95) == (n >= 6)
    if n == 100:  # the textbook answer: ranks 40 and 61, coverage 0.9648
        assert (j, n - j + 1) == (40, 61) and cov == pytest.approx(0.9648, abs=1e-4)


def test_median_ci_covers_the_true_median_about_95_percent():
    rng = np.random.default_rng(0)
    hits = sum(lo <= 1.0 <= hi for lo, hi, _ in (median_ci(rng.lognormal(size=50)) for _ in range(2000)))
    assert 0.93 < hits / 2000 < 0.99  # true median of lognormal(0, 1) is 1


def test_paired_ratio_is_the_median_of_each_turns_ratio_of_fastest_runs():
    # 20 turns of 5 runs: the device slows 4x over the loop (drift between turns), and in every turn two runs
    # of each model are preempted by another process (a 4 ms time slice more); the model's own cost is 0.4x
    rng = np.random.default_rng(0)
    model, ref, per_turn = [], [], []
    for t in range(20):
        speed = 1 + 3 * t / 19
        r = 10 * speed * (1 + rng.uniform(0, 0.01, 5)) + np.array([0, 4, 0, 4, 0])
        m = 4 * speed * (1 + rng.uniform(0, 0.01, 5)) + np.array([4, 0, 0, 0, 4])
        ref += list(r)
        model += list(m)
        per_turn.append(m.min() / r.min())
    ratio, low, high = paired_ratio(model, ref, burst=5)
    assert ratio == pytest.approx(float(np.median(per_turn)))
    assert (low, high) == pytest.approx(median_ci(per_turn)[:2]) and low <= ratio <= high
    assert low > 0.39 and high < 0.41  # neither the drift nor the preemptions move it off 0.4
    assert np.median(model) / np.median(ref) > 0.41  # the pooled medians do not survive both


def test_latency_stats_fields():
    xs = [1.0, 2.0, 3.0, 4.0, 100.0]
    s = latency_stats(xs)
    assert s.n == 5 and s.p50_ms == 3.0 and s.mean_ms == 22.0 and s.min_ms == 1.0 and s.max_ms == 100.0
    assert s.std_ms == pytest.approx(np.std(xs, ddof=1)) and s.total_s == pytest.approx(0.11)
    assert s.samples_ms == xs and latency_stats(xs, keep_samples=False).samples_ms is None
    with pytest.raises(ValueError):
        latency_stats([])


def test_protocol_versions_and_strict_requests():
    check_protocol("1.0", where="x")
    check_protocol("1.7", where="x")  # minor versions only add fields
    with pytest.raises(ProtocolMismatch, match=rf"speaks edgetune protocol 2.0.*{re.escape(PROTOCOL_VERSION)}"):
        check_protocol("2.0", where="the agent at http://pi:8765")
    with pytest.raises(ProtocolMismatch, match="not an edgetune agent"):
        check_protocol(None, where="x")
    with pytest.raises(ValueError, match="warmpu"):
        LatencySpec(warmpu=3)
    with pytest.raises(ValueError, match="max_runs"):
        LatencySpec(min_runs=50, max_runs=10)
    with pytest.raises(ValueError):
        MeasureRequest(artifact="../../etc/passwd")
    from edgetune.device_agents.protocol import Health

    assert Health.model_validate({"name": "a", "kind": "k", "edgetune_version": "9", "new_field": 1}).name == "a"


def test_onnx_scan_of_real_and_hostile_files(det_s_onnx, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    data = det_s_onnx.read_bytes()
    s = scan_onnx(data)
    assert s.parsed and s.ir_version >= 8 and "Conv" in s.op_types and s.external_tensors == []
    assert not s.has_qdq and not s.has_fp16 and s.opsets.get("ai.onnx", 0) >= 17
    assert not scan_onnx(data[: len(data) // 2]).parsed
    assert not scan_onnx(b"hello world, not a model").parsed
    ext = tmp_path / "ext.onnx"
    onnx.save_model(onnx.load(str(det_s_onnx)), str(ext), save_as_external_data=True, location="w.bin",
                    size_threshold=0)
    se = scan_onnx(ext.read_bytes())
    assert se.parsed and len(se.external_tensors) > 10
    # external data hidden in a Constant node's tensor attribute, and fp16 + QDQ precisions
    t = helper.make_tensor("c", TensorProto.FLOAT16, [1], [1.0])
    t.data_location = TensorProto.EXTERNAL
    g = helper.make_graph([helper.make_node("Constant", [], ["y"], value=t),
                           helper.make_node("QuantizeLinear", ["y", "s"], ["q"])], "g", [],
                          [helper.make_tensor_value_info("q", TensorProto.UINT8, [1])])
    sc = scan_onnx(helper.make_model(g).SerializeToString())
    assert sc.parsed and sc.external_tensors == ["c"] and sc.has_fp16 and sc.has_qdq
    assert "pickle" in not_onnx_reason(b"\x80\x04\x95") and "zip" in not_onnx_reason(b"PK\x03\x04")
    assert not_onnx_reason(data[:8]) is None


def test_bundle_is_deterministic_and_safe(shapes_val, det_s):
    sub = shapes_val.subset(range(12))
    a = make_bundle(sub, det_s.head, size=256, raw_images=3)
    b = make_bundle(sub, det_s.head, size=256, raw_images=3)
    assert a.data == b.data and a.sha256 == b.sha256 and a.num_images == 12
    got = read_bundle(a.data)
    assert got.images.shape == (12, 3, 256, 256) and got.images.dtype == np.uint8 and len(got.raw) == 3
    assert got.head == det_s.head and got.ids == [r.id for r in sub.records]
    assert got.coco_gt == sub.coco_gt()
    # an object array (a pickle inside the .npz) is refused, never unpickled
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(a.data)) as src, zipfile.ZipFile(buf, "w") as dst:
        for item in src.infolist():
            dst.writestr(item, src.read(item))
        obj = io.BytesIO()
        np.lib.format.write_array(obj, np.array([{"x": 1}], dtype=object), allow_pickle=True)
        dst.writestr("labels.npy", obj.getvalue())
    with pytest.raises(DataError, match="plain arrays"):
        read_bundle(buf.getvalue())
    with pytest.raises(DataError):
        read_bundle(b"not a zip at all")
