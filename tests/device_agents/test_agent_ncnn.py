"""The NCNN runtime: the agent converts the uploaded ONNX with pnnx once per model (cached by content),
runs it with the same accuracy as onnxruntime, refuses what NCNN cannot run here (int8 QDQ, fp16 casts,
operators pnnx leaves unmapped) with the reason, and an agent offering it without the packages refuses
to start with the pip line. The generic load/run/error contract is in test_agent_runtime_conformance.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from agent_helpers import FAST, start_agent
from blocked_imports import run_blocked

from edgetune.device_agents.runtimes import get_runtime
from edgetune.device_agents.runtimes.ncnn import conversion_cache_key
from edgetune.errors import MeasurementFailed

_REASON = get_runtime("ncnn").info().error
needs_ncnn = pytest.mark.skipif(_REASON is not None, reason=f"the NCNN runtime cannot run here: {_REASON}")


def _tiny_onnx(path: Path, *, qdq: bool = False, fp16: bool = False, op: str | None = None) -> Path:
    """A 1x3x8x8 -> Conv(4) graph; ``qdq``: QuantizeLinear/DequantizeLinear on its input (how edgetune's
    int8 artifacts look); ``fp16``: the conv in fp16 between Casts; ``op``: a unary op after the conv."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    wdt = np.float16 if fp16 else np.float32
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(wdt), "w")]
    nodes, x = [], "x"
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.02, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes += [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"])]
        x = "xd"
    if fp16:
        nodes.append(helper.make_node("Cast", [x], ["xh"], to=TensorProto.FLOAT16))
        x = "xh"
    nodes.append(helper.make_node("Conv", [x, "w"], ["c"], pads=[1, 1, 1, 1]))
    y = "c"
    if fp16:
        nodes.append(helper.make_node("Cast", [y], ["cf"], to=TensorProto.FLOAT))
        y = "cf"
    if op:
        nodes.append(helper.make_node(op, [y], ["o"]))
        y = "o"
    nodes.append(helper.make_node("Identity", [y], ["y"]))
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    # IR 8 as torch's exporter writes: the onnxruntime inside pnnx 20261020 reads IR versions up to 13
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_the_conversion_cache_key_follows_the_bytes_the_converter_and_the_shape():
    base = {"onnx_sha256": "a" * 64, "pnnx_version": "20261020", "input_shape": [1, 3, 256, 256]}
    key = conversion_cache_key(**base)
    assert key == conversion_cache_key(**base) and len(key) == 32
    for field, other in [("onnx_sha256", "b" * 64), ("pnnx_version", "20270101"), ("input_shape", [1, 3, 320, 320])]:
        assert conversion_cache_key(**{**base, field: other}) != key, field


@needs_ncnn
def test_each_model_converts_once_and_matches_onnxruntime(det_s_onnx, tmp_path):
    import onnxruntime as ort

    rt = get_runtime("ncnn")
    first = rt.load(det_s_onnx, threads=1, cache_dir=tmp_path)
    again = rt.load(det_s_onnx, threads=1, cache_dir=tmp_path)
    assert first.detail["conversion"] == "converted" and again.detail["conversion"] == "cached"
    folders = [p for p in (tmp_path / "ncnn").iterdir()]
    assert len(folders) == 1 and sorted(p.name for p in folders[0].iterdir()) == ["model.ncnn.bin", "model.ncnn.param"]
    # the precision options NCNN ran with are reported (its defaults: fp16 storage and arithmetic on)
    assert again.detail["use_fp16_storage"] is True and again.detail["use_fp16_arithmetic"] is True
    assert again.detail["threads"] == 1 and again.detail["weights"].startswith("fp32")
    x = np.random.default_rng(3).random((2, 3, 256, 256), dtype=np.float32)  # a batch runs image by image
    ref = ort.InferenceSession(str(det_s_onnx), providers=["CPUExecutionProvider"])
    want = np.concatenate([ref.run(None, {"images": x[i:i + 1]})[0] for i in range(2)])
    got = again.run(x)
    assert got.shape == want.shape == (2, 10, 1344)
    assert float(np.abs(got - want).max()) <= 1e-4 * float(np.abs(want).max())
    first.close()
    again.close()


@needs_ncnn
@pytest.mark.parametrize("kind, words", [
    ({"qdq": True}, ["takes fp32 artifacts here", "QuantizeLinear", "ncnn2int8", "future work"]),
    ({"fp16": True}, ["takes fp32 artifacts here", "fp16"]),
])
def test_int8_and_fp16_artifacts_are_refused_with_the_reason(tmp_path, kind, words):
    path = _tiny_onnx(tmp_path / "tiny.onnx", **kind)
    with pytest.raises(MeasurementFailed) as e:
        get_runtime("ncnn").load(path, threads=1, cache_dir=tmp_path)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    assert not (tmp_path / "ncnn").exists(), "refused before converting"


@needs_ncnn
def test_an_fp32_tiny_model_runs_and_an_operator_pnnx_cannot_map_is_refused_naming_pnnx(tmp_path):
    import onnxruntime as ort

    rt = get_runtime("ncnn")
    ok = _tiny_onnx(tmp_path / "ok.onnx")
    x = np.random.default_rng(0).random((1, 3, 8, 8), dtype=np.float32)
    want = ort.InferenceSession(str(ok), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = rt.load(ok, threads=1, cache_dir=tmp_path).run(x)
    assert got.shape == want.shape and float(np.abs(got - want).max()) <= 1e-4 * float(np.abs(want).max())
    bad = _tiny_onnx(tmp_path / "odd-op.onnx", op="Det")  # no NCNN layer computes a determinant
    with pytest.raises(MeasurementFailed) as e:
        rt.load(bad, threads=1, cache_dir=tmp_path)
    assert "pnnx" in str(e.value) and "odd-op.onnx" in str(e.value)


@needs_ncnn
def test_ncnn_loads_and_runs_where_torch_cannot_be_imported(det_s_onnx, tmp_path):
    """pnnx's Python package imports torch; the runtime only runs its binary."""
    r = run_blocked(
        """
        from pathlib import Path
        import numpy as np
        from edgetune.device_agents.runtimes import get_runtime
        rt = get_runtime("ncnn")
        assert rt.info().error is None, rt.info()
        s = rt.load(Path(sys.argv[1]), threads=1, cache_dir=Path(sys.argv[2]))
        assert s.run(np.zeros((1, 3, 256, 256), np.float32)).shape == (1, 10, 1344)
        heavy = [m for m in ("torch", "optuna", "ray", "mlflow", "pnnx") if m in sys.modules]
        assert not heavy, heavy
        print("ok")
        """,
        str(det_s_onnx), str(tmp_path),
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("ok")


@needs_ncnn
def test_an_agent_offering_ort_and_ncnn_measures_the_same_accuracy_on_both(tmp_path, det_s_onnx, det_s_bundle):
    agent = start_agent(tmp_path / "agent-ncnn", args=("--runtime", "ort,ncnn"))
    try:
        with agent.client() as c:
            info = c.info()
            default = c.measure(det_s_onnx, dataset=det_s_bundle, latency=FAST)
            nc = c.measure(det_s_onnx, dataset=det_s_bundle, latency=FAST, runtime="ncnn")
    finally:
        agent.stop()
    assert info.offered_runtimes == ["ort", "ncnn"] and info.runtimes[1].available_providers == ["CPU"]
    assert nc.runtime.name == "ncnn" and nc.runtime.providers_used == ["CPU"]
    assert nc.runtime.detail["threads"] == 1 and "use_fp16_arithmetic" in nc.runtime.detail
    # fp32 artifact on both runtimes: the same detections up to float rounding
    assert nc.accuracy["map50_95"] == pytest.approx(default.accuracy["map50_95"], abs=2e-3)
    assert nc.latency.n >= FAST["min_runs"] and nc.end_to_end is not None


def test_an_agent_offering_ncnn_without_its_packages_refuses_to_start_with_the_pip_line(tmp_path):
    hide = "import sys\nsys.modules['ncnn'] = None  # as if ncnn were not installed\n"
    env = {**os.environ, "EDGETUNE_AGENT_TOKEN": "a-token-of-16-chars"}
    r = subprocess.run([sys.executable, "-c", hide + "from edgetune.cli import main\nmain()", "agent", "serve",
                        "--port", "0", "--no-host-lock", "--workdir", str(tmp_path / "wd"), "--runtime", "ort,ncnn"],
                       capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    text = " ".join(r.stderr.split())
    assert r.returncode == 2, (r.returncode, text[-2000:])
    assert "--runtime ncnn cannot run on this machine" in text and 'pip install "ncnn>=' in text, text
    assert "--no-deps" in text and "listening" not in text
