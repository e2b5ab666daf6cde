"""The runtime conformance suite: every registered runtime loads, runs, reports and fails the same way.

TensorRT runs only where ``tensorrt`` and a GPU exist (not on the development machine: skipped there);
its GPU-free parts (cache key, missing-dependency errors) are checked everywhere.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from edgetune.device_agents.runtimes import available_runtimes, get_runtime
from edgetune.device_agents.runtimes.tensorrt import engine_cache_key
from edgetune.errors import ConfigError, MeasurementFailed, MissingDependency

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def _runtime(name: str):
    if name == "tensorrt" and not HAS_TRT:
        pytest.skip("tensorrt is not installed here (no GPU on the development machine)")
    return get_runtime(name)


@pytest.fixture(scope="module")
def reference(det_s_onnx):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(det_s_onnx), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((1, 3, 256, 256), dtype=np.float32)
    return x, sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_registry_lists_runtimes_and_rejects_unknown_names():
    assert available_runtimes() == ["ort", "tensorrt"]
    with pytest.raises(ConfigError, match="valid runtimes: ort, tensorrt"):
        get_runtime("openvino")


@pytest.mark.parametrize("name", ["ort", "tensorrt"])
def test_runtime_loads_and_matches_the_reference(name, det_s_onnx, reference, tmp_path):
    rt = _runtime(name)
    info = rt.info()
    assert info.name == name and info.version and info.error is None
    sess = rt.load(det_s_onnx, threads=1, cache_dir=tmp_path)
    assert sess.input_shape == (1, 3, 256, 256) and sess.input_dtype == np.float32
    assert sess.shape_for(1) == (1, 3, 256, 256)
    assert set(sess.providers_used) >= set(rt.default_providers())
    x, ref = reference
    out = sess.run(np.ascontiguousarray(x))
    assert out.shape == ref.shape
    tol = 0 if name == "ort" else 1e-2 * float(np.abs(ref).max())
    assert float(np.abs(out - ref).max()) <= tol
    sess.close()


@pytest.mark.parametrize("name", ["ort", "tensorrt"])
def test_runtime_reports_its_own_error_for_a_corrupt_model(name, det_s_onnx, tmp_path):
    rt = _runtime(name)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(det_s_onnx.read_bytes()[:5000])
    with pytest.raises(MeasurementFailed) as e:
        rt.load(bad, threads=1, cache_dir=tmp_path)
    assert ("onnxruntime" in str(e.value)) if name == "ort" else ("TensorRT" in str(e.value))


def test_ort_refuses_missing_or_dropped_providers(det_s_onnx):
    rt = get_runtime("ort")
    with pytest.raises(MeasurementFailed, match="not available.*available: "):
        rt.load(det_s_onnx, threads=1, providers=["CUDAExecutionProvider"])


def test_tensorrt_cache_key_and_missing_dependency(det_s_onnx):
    base = {"artifact_sha256": "a" * 64, "trt_version": "10.3.0", "gpu": "Orin", "compute_capability": "87", "batch": 1}
    key = engine_cache_key(**base)
    for field, other in [("artifact_sha256", "b" * 64), ("trt_version", "11.1.0"), ("gpu", "RTX 4090"),
                         ("compute_capability", "89"), ("batch", 4)]:
        assert engine_cache_key(**{**base, field: other}) != key, field
    if HAS_TRT:
        pytest.skip("tensorrt is installed")
    rt = get_runtime("tensorrt")
    assert "tensorrt is not importable" in rt.info().error
    with pytest.raises(MissingDependency, match=r"system-site-packages.*edgetune\[tensorrt\]"):
        rt.load(det_s_onnx, threads=1)
