"""An agent that offers several runtimes (``--runtime ort,openvino``): /info lists each, a measurement runs
on the runtime the request names, /compare times one file on two runtimes side by side, and a runtime the
agent does not offer is refused with the fix."""

from __future__ import annotations

import pytest
from agent_helpers import FAST, start_agent

from edgetune.device_agents.protocol import compare_key
from edgetune.device_agents.runtimes import get_runtime
from edgetune.errors import AgentError

pytestmark = pytest.mark.skipif(get_runtime("openvino").info().error is not None,
                                reason="openvino is not importable here (pip install 'edgetune[openvino]')")


@pytest.fixture(scope="module")
def two_runtime_agent(tmp_path_factory):
    a = start_agent(tmp_path_factory.mktemp("agent-two-runtimes"), args=("--runtime", "ort,openvino"))
    yield a
    a.stop()


def test_info_lists_every_offered_runtime_the_first_is_the_default(two_runtime_agent):
    with two_runtime_agent.client() as c:
        info = c.info()
    assert info.runtime.name == "ort"
    assert [r.name for r in info.runtimes] == ["ort", "openvino"] == info.offered_runtimes
    ov = info.runtimes[1]
    assert ov.error is None and ov.version and "CPU" in ov.available_providers


def test_measure_runs_on_the_requested_runtime_with_the_same_accuracy(two_runtime_agent, det_s_onnx, det_s_bundle):
    with two_runtime_agent.client() as c:
        default = c.measure(det_s_onnx, dataset=det_s_bundle, latency=FAST)
        ov = c.measure(det_s_onnx, dataset=det_s_bundle, latency=FAST, runtime="openvino")
    assert default.runtime.name == "ort" and default.runtime.providers_used == ["CPUExecutionProvider"]
    assert ov.runtime.name == "openvino" and ov.runtime.providers_used == ["CPU"]
    assert ov.runtime.detail["INFERENCE_PRECISION_HINT"] == "f32" and ov.runtime.detail["INFERENCE_NUM_THREADS"] == "1"
    # fp32 on both runtimes: the same detections up to float rounding
    assert ov.accuracy["map50_95"] == pytest.approx(default.accuracy["map50_95"], abs=2e-3)
    assert ov.latency.n >= FAST["min_runs"] and ov.end_to_end is not None


def test_compare_times_one_file_on_two_runtimes_side_by_side(two_runtime_agent, det_s_onnx):
    with two_runtime_agent.client() as c:
        sha = c.upload_artifact(det_s_onnx)
        cmp = c.compare([sha, sha], runtimes=["ort", "openvino"], runs=20, burst=4, warmup=2)
        with pytest.raises(AgentError) as dup:
            c._request("POST", "/compare", idempotent=False,
                       json={"artifacts": [sha, sha], "runtimes": ["ort", "ort"]})
        with pytest.raises(AgentError) as short:
            c._request("POST", "/compare", idempotent=False,
                       json={"artifacts": [sha, "a" * 64], "runtimes": ["ort"]})
    keys = {compare_key(sha, "ort"), compare_key(sha, "openvino")}
    assert set(cmp.latency) == keys == set(cmp.runtimes)
    assert cmp.runtimes[compare_key(sha, "openvino")].name == "openvino"
    assert all(s.n == 20 for s in cmp.latency.values())
    assert dup.value.status_code == 400 and "pair" in str(dup.value)
    assert short.value.status_code == 400 and "one runtime per artifact" in str(short.value)


def test_a_runtime_the_agent_does_not_offer_is_refused_with_the_fix(client, two_runtime_agent, det_s_onnx):
    with pytest.raises(AgentError) as e:  # the session agent offers ort only
        client.measure(det_s_onnx, latency=FAST, runtime="openvino")
    assert e.value.status_code == 400 and "--runtime ort,openvino" in str(e.value)
    with two_runtime_agent.client() as c, pytest.raises(AgentError) as e2:
        c.measure(det_s_onnx, latency=FAST, runtime="tensorrt")
    assert e2.value.status_code == 400 and "offers the runtime(s) ort, openvino" in str(e2.value)
