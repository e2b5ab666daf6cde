"""The runtime conformance suite: every registered runtime loads, runs, reports and fails the same way.

The suite is parametrized over ``available_runtimes()``, so a newly registered runtime runs it with no
edit here. A runtime that cannot run on this machine says so itself: ``info().error`` is set (its
framework does not import) or its default providers are not among ``info().available_providers``; its
load/run tests are skipped with that reason (TensorRT on the development machine, which has no GPU), and
what it must do instead (raise MissingDependency on load) is checked. GPU-free TensorRT parts (engine
cache key, install hint) are checked everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.device_agents.runtimes import Runtime, available_runtimes, get_runtime
from edgetune.device_agents.runtimes.tensorrt import engine_cache_key
from edgetune.errors import ConfigError, MeasurementFailed, MissingDependency

RUNTIMES = available_runtimes()
# Max abs difference to the onnxruntime-CPU reference, as a fraction of the largest output; default 1e-2.
TOLERANCE = {"ort": 0.0}


def _why_unavailable(rt: Runtime) -> str | None:
    """The runtime's own reason it cannot run here, or None when it can."""
    info = rt.info()
    if info.error:
        return info.error
    missing = [p for p in rt.default_providers() if p not in info.available_providers]
    if missing:
        return f"default provider(s) {', '.join(missing)} not available (available: {info.available_providers})"
    return None


@pytest.fixture(params=RUNTIMES)
def runtime(request) -> Runtime:
    """Each registered runtime that can run on this machine (skipped, with its reason, otherwise)."""
    rt = get_runtime(request.param)
    reason = _why_unavailable(rt)
    if reason:
        pytest.skip(f"runtime {request.param!r} cannot run on this machine: {reason}")
    return rt


@pytest.fixture(scope="module")
def reference(det_s_onnx):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(det_s_onnx), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).random((1, 3, 256, 256), dtype=np.float32)
    return x, sess.run(None, {sess.get_inputs()[0].name: x})[0]


def test_registry_lists_runtimes_and_rejects_unknown_names():
    assert {"ort", "openvino", "tensorrt"} <= set(RUNTIMES)
    with pytest.raises(ConfigError, match=f"valid runtimes: {', '.join(RUNTIMES)}"):
        get_runtime("no-such-runtime")


@pytest.mark.parametrize("name", RUNTIMES)
def test_runtime_info_never_raises_and_names_itself(name):
    rt = get_runtime(name)
    info = rt.info()
    assert rt.name == name and info.name == name
    if info.error is None:
        assert info.version, f"runtime {name!r} is available but reports no version"
    else:
        assert isinstance(info.error, str) and info.error.strip()


@pytest.mark.parametrize("name", RUNTIMES)
def test_unavailable_runtime_refuses_to_load_with_missing_dependency(name, det_s_onnx):
    rt = get_runtime(name)
    if rt.info().error is None:
        pytest.skip(f"runtime {name!r} is importable here")
    with pytest.raises(MissingDependency, match=r"pip install"):
        rt.load(det_s_onnx, threads=1)


def test_runtime_loads_and_matches_the_reference(runtime, det_s_onnx, reference, tmp_path):
    info = runtime.info()
    assert info.version and info.error is None
    sess = runtime.load(det_s_onnx, threads=1, cache_dir=tmp_path)
    assert sess.input_shape == (1, 3, 256, 256) and sess.input_dtype == np.float32
    assert sess.shape_for(1) == (1, 3, 256, 256)
    assert set(sess.providers_used) >= set(runtime.default_providers())
    x, ref = reference
    out = sess.run(np.ascontiguousarray(x))
    assert isinstance(out, np.ndarray) and out.shape == ref.shape
    tol = TOLERANCE.get(runtime.name, 1e-2) * float(np.abs(ref).max())
    assert float(np.abs(out - ref).max()) <= tol
    sess.close()


def test_runtime_reports_its_own_error_for_a_corrupt_model(runtime, det_s_onnx, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(det_s_onnx.read_bytes()[:5000])
    with pytest.raises(MeasurementFailed) as e:
        runtime.load(bad, threads=1, cache_dir=tmp_path)
    assert runtime.info().version in str(e.value), "the error must name the runtime version that failed"


def test_runtime_refuses_a_provider_it_does_not_have(runtime, det_s_onnx, tmp_path):
    with pytest.raises(MeasurementFailed, match="NoSuchExecutionProvider"):
        runtime.load(det_s_onnx, threads=1, providers=["NoSuchExecutionProvider"], cache_dir=tmp_path)


def test_tensorrt_cache_key_and_install_hint(det_s_onnx):
    base = {"artifact_sha256": "a" * 64, "trt_version": "10.3.0", "gpu": "Orin", "compute_capability": "87", "batch": 1}
    key = engine_cache_key(**base)
    for field, other in [("artifact_sha256", "b" * 64), ("trt_version", "11.1.0"), ("gpu", "RTX 4090"),
                         ("compute_capability", "89"), ("batch", 4)]:
        assert engine_cache_key(**{**base, field: other}) != key, field
    rt = get_runtime("tensorrt")
    if rt.info().error is None:
        pytest.skip("tensorrt is importable here")
    assert "tensorrt is not importable" in rt.info().error
    with pytest.raises(MissingDependency, match=r"system-site-packages.*edgetune\[tensorrt\]"):
        rt.load(det_s_onnx, threads=1)


def test_tensorrt_realised_precision_reads_a_recorded_engine_inspector_output():
    """What each layer ran in, from an engine inspector JSON NVIDIA recorded (fixtures/README.md): fused
    names resolve to their ONNX nodes, layers without weights and nodes the engine does not name are left
    out; TensorRT >= 10's ``Metadata`` names nodes too, and fp16 weights read as fp16."""
    import json
    from pathlib import Path

    from edgetune.device_agents.runtimes.tensorrt import realised_from_inspector

    text = (Path(__file__).parent / "fixtures" / "trt_inspector_mobilenet_qat.json").read_text()
    got = realised_from_inspector(text, ["Conv_12", "Conv_29", "Conv_94", "Gemm_864", "Conv_999", "GlobalAveragePool_843"])
    assert got == {"Conv_12": "int8", "Conv_29": "int8", "Conv_94": "int8", "Gemm_864": "int8"}
    layer = {"Name": "node_Conv_292 + node_relu", "Metadata": "[ONNX Layer: /dense/Conv]\x1f[ONNX Layer: /dense/Relu]",
             "Weights": {"Type": "Half", "Count": 9408}}
    assert realised_from_inspector(json.dumps({"Layers": [layer, "a name only"]}), ["/dense/Conv"]) == {"/dense/Conv": "fp16"}
