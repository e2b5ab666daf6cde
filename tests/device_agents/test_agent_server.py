"""A real agent process on 127.0.0.1 driven over HTTP: auth, uploads, measurements, failures, queueing."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time

import httpx
import numpy as np
import psutil
import pytest
from agent_helpers import FAST, one_conv_onnx, start_agent, wait_until

from edgetune.device_agents import LatencySpec
from edgetune.device_agents.protocol import PROTOCOL_HEADER, PROTOCOL_VERSION
from edgetune.errors import AgentError, AgentUnavailable, AuthError, MeasurementFailed


def _worker_pid(agent_pid: int, timeout: float = 30.0) -> int:
    """The measurement process of an agent, once it exists: a child of its fork server (which has the
    fork server's command line), or a ``python -m edgetune.device_agents._worker`` child of the agent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in psutil.Process(agent_pid).children():
            cmd = " ".join(child.cmdline())
            if "forkserver" in cmd:
                for forked in child.children():
                    return forked.pid
            elif "edgetune.device_agents._worker" in cmd:
                return child.pid
        time.sleep(0.05)
    raise AssertionError("no measurement process appeared")


def _in_background(fn):
    box: dict = {}

    def run():
        try:
            box["result"] = fn()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


# ------------------------------------------------------------------ security


def test_health_is_public_and_everything_else_needs_the_token(agent, client, det_s_onnx):
    sha = hashlib.sha256(det_s_onnx.read_bytes()).hexdigest()
    with httpx.Client(base_url=agent.url, timeout=10) as raw:
        health = raw.get("/health")
        assert health.status_code == 200 and health.json()["kind"] == "local-cpu"
        assert health.headers[PROTOCOL_HEADER] == PROTOCOL_VERSION
        calls = [("GET", "/info", None), ("GET", "/queue", None), ("HEAD", f"/artifacts/{sha}", None),
                 ("PUT", f"/artifacts/{sha}", b"x"), ("HEAD", f"/datasets/{sha}", None),
                 ("PUT", f"/datasets/{sha}", b"x"), ("POST", "/measure", None)]
        for headers in ({}, {"Authorization": "Bearer wrong-token-123"}, {"Authorization": f"Basic {agent.token}"}):
            for method, path, body in calls:
                kw = {"json": {"artifact": sha}} if method == "POST" else {}
                r = raw.request(method, path, headers=headers, content=body, **kw)
                assert r.status_code == 401, (method, path, headers, r.status_code)
                if method != "HEAD":
                    assert r.json()["error"]["type"] == "AuthError"
        ok = raw.get("/info", headers={"Authorization": f"Bearer {agent.token}"})
        assert ok.status_code == 200 and ok.json()["kind"] == "local-cpu"
    with agent.client() as c:
        c.token = "wrong-token-123"
        with pytest.raises(AuthError):
            c.info()
    assert client.info().agent.threads == 1


def test_upload_is_content_addressed_and_verified(agent, client, det_s_onnx):
    data = det_s_onnx.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    assert client.upload_artifact(det_s_onnx) == sha
    assert client.has_artifact(sha)
    assert (agent.workdir / "artifacts" / f"{sha}.onnx").read_bytes() == data
    auth = {"Authorization": f"Bearer {agent.token}"}
    with httpx.Client(base_url=agent.url, timeout=30, headers=auth) as raw:
        again = raw.put(f"/artifacts/{sha}", content=data)
        assert again.status_code == 200 and again.json()["created"] is False
        # wrong hash: 400, nothing stored under either name
        other = hashlib.sha256(b"something else").hexdigest()
        bad = raw.put(f"/artifacts/{other}", content=data)
        assert bad.status_code == 400 and bad.json()["error"]["type"] == "HashMismatch"
        assert raw.head(f"/artifacts/{other}").status_code == 404
        assert raw.put("/artifacts/not-a-sha", content=data).status_code == 400
    stored = {p.name for p in (agent.workdir / "artifacts").iterdir() if p.is_file()}  # the agent is shared
    assert f"{sha}.onnx" in stored and f"{other}.onnx" not in stored and not any("not-a-sha" in n for n in stored)
    assert list((agent.workdir / "artifacts" / ".tmp").iterdir()) == []


def test_oversize_upload_is_413_and_stores_nothing(agent):
    big = os.urandom((8 << 20) + 1024)  # the session agent accepts 8 MiB artifacts
    sha = hashlib.sha256(big).hexdigest()
    auth = {"Authorization": f"Bearer {agent.token}"}
    with httpx.Client(base_url=agent.url, timeout=30, headers=auth) as raw:
        declared = raw.put(f"/artifacts/{sha}", content=big)
        assert declared.status_code == 413 and "max-artifact-mb" in declared.json()["error"]["message"]

        def chunks():  # no Content-Length: the limit is enforced while streaming
            for i in range(0, len(big), 1 << 20):
                yield big[i : i + (1 << 20)]

        streamed = raw.put(f"/artifacts/{sha}", content=chunks())
        assert streamed.status_code == 413
        assert raw.head(f"/artifacts/{sha}").status_code == 404
        body = raw.post("/measure", content=b"{" + b" " * (2 << 20) + b"}", headers={"Content-Type": "application/json"})
        assert body.status_code == 413
    assert list((agent.workdir / "artifacts" / ".tmp").iterdir()) == []


def test_pickles_and_external_data_are_refused(agent, client, det_s_onnx, tmp_path):
    import pickle

    import onnx

    with pytest.raises(AgentError) as e:
        client.upload_artifact(pickle.dumps({"weights": [1, 2, 3]}))
    assert e.value.status_code == 415 and "pickle" in str(e.value)
    model = onnx.load(str(det_s_onnx))
    ext = tmp_path / "ext.onnx"
    onnx.save_model(model, str(ext), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    with pytest.raises(AgentError) as e:
        client.upload_artifact(ext)
    assert e.value.status_code == 415 and "external data" in str(e.value)
    assert not client.has_artifact(hashlib.sha256(ext.read_bytes()).hexdigest())


def test_protocol_major_mismatch_is_refused(agent):
    with httpx.Client(base_url=agent.url, timeout=10) as raw:
        r = raw.get("/health", headers={PROTOCOL_HEADER: "2.3"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "ProtocolMismatch"
    assert "2.3" in r.json()["error"]["message"]


def test_bad_requests_say_what_is_wrong(client, det_s_onnx):
    sha = client.upload_artifact(det_s_onnx)
    with pytest.raises(AgentError) as e:
        client._request("POST", "/measure", idempotent=False, json={"artifact": sha, "latency": {"warmpu": 3}})
    assert e.value.status_code == 400 and "warmpu" in str(e.value)
    with pytest.raises(AgentError) as e:
        client.measure("0" * 64)
    assert e.value.status_code == 404 and "upload it first" in str(e.value)
    with pytest.raises(AgentError) as e:
        client.measure(sha, runtime="tensorrt")
    assert "--runtime ort,tensorrt" in str(e.value)


# ------------------------------------------------------------------ measuring


def test_compare_times_artifacts_side_by_side_in_one_process(client, det_s_onnx, tmp_path):
    small = one_conv_onnx(tmp_path / "one-conv.onnx")
    c = client.compare([det_s_onnx, small], runs=40, burst=4, warmup=2)
    big_sha, small_sha = c.artifacts
    assert set(c.latency) == {big_sha, small_sha}
    assert all(s.n == 40 and s.p50_ms > 0 for s in c.latency.values())
    assert c.runtime.name == "ort" and c.threads == 1 and c.device.kind == "local-cpu"
    # each artifact's paired ratio to the first: 1 for the first, the one-conv model far below the detector
    assert c.ratios[big_sha] == (1.0, 1.0, 1.0)
    ratio, low, high = c.ratios[small_sha]
    assert low <= ratio <= high < 1
    with pytest.raises(AgentError) as e:
        client._request("POST", "/compare", idempotent=False, json={"artifacts": [big_sha, big_sha]})
    assert e.value.status_code == 400 and "distinct" in str(e.value)
    with pytest.raises(AgentError) as e:
        client.compare([big_sha, "0" * 64])
    assert e.value.status_code == 404 and "upload it first" in str(e.value)


def test_measure_paired_times_the_model_in_turns_with_its_reference(client, det_s_onnx, tmp_path):
    """``reference``: det-s and a one-conv model timed in turns in the measuring process; the ratio and its
    CI come with both timings, and a reference that is not on the agent is a 404 naming the upload."""
    small = one_conv_onnx(tmp_path / "one-conv.onnx")
    m = client.measure(small, latency={"min_runs": 20, "min_seconds": 0, "warmup": 2, "end_to_end": False},
                       reference=det_s_onnx, paired_runs=20)
    p = m.paired
    assert p is not None and p.runs == 20 and p.model.n == 20 and p.reference_latency.n == 20
    assert p.reference_runtime == "ort" and p.reference == client.upload_artifact(det_s_onnx)
    assert p.burst == 5 and p.ratio_ci95_low <= p.ratio_p50 <= p.ratio_ci95_high
    assert p.ratio_p50 < 1  # one conv against the whole detector, same input size
    assert client.measure(small, latency={"min_runs": 5, "min_seconds": 0, "end_to_end": False}).paired is None
    with pytest.raises(AgentError) as e:
        client.measure(small, reference="0" * 64, latency={"min_runs": 5, "min_seconds": 0})
    assert e.value.status_code == 404 and "upload it first" in str(e.value)


def test_measure_det_s_accuracy_equals_in_process_onnxruntime(agent, client, det_s, det_s_onnx, det_s_bundle, shapes_val):
    import onnxruntime as ort

    from edgetune.models._evaluate import evaluate

    m = client.measure(det_s_onnx, dataset=det_s_bundle,
                       latency=LatencySpec(warmup=5, min_runs=30, min_seconds=0.0, keep_samples=True))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(det_s_onnx), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    ref = evaluate(lambda x: np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))]),
                   shapes_val, det_s.head, size=det_s.input_size)
    assert m.accuracy is not None and set(m.accuracy) == set(ref)
    for k, v in ref.items():
        assert abs(m.accuracy[k] - v) <= 1e-6, (k, m.accuracy[k], v)
    assert m.accuracy_images == len(shapes_val)
    # provenance and statistics
    assert m.device.kind == "local-cpu" and m.device.detected_kind == "x86-cpu"
    assert m.runtime.providers_used == ["CPUExecutionProvider"] and m.threads == 1 and m.cpus == list(agent.cpus)
    assert m.input_shape == [1, 3, 256, 256] and m.output_shape[:2] == [1, 4 + det_s.head.num_classes]
    lat = m.latency
    assert lat.n >= 30 and len(lat.samples_ms) == lat.n
    assert lat.min_ms <= lat.ci95_low_ms <= lat.p50_ms <= lat.ci95_high_ms <= lat.max_ms
    assert lat.p50_ms <= lat.p90_ms <= lat.p99_ms and lat.ci_coverage >= 0.95
    assert abs(lat.p50_ms - float(np.median(lat.samples_ms))) < 1e-9
    assert m.end_to_end is not None and m.end_to_end.n >= 30
    assert m.peak_rss_bytes > m.baseline_rss_bytes > 0
    assert m.finished_at - m.started_at == pytest.approx(m.wall_s) and m.wall_s > lat.total_s
    assert m.power is None and m.warnings == []  # no power sensor on this machine


def test_corrupt_onnx_fails_with_the_runtime_error_and_the_agent_serves_the_next(client, det_s_onnx):
    data = det_s_onnx.read_bytes()
    with pytest.raises(AgentError) as e:  # truncated: refused at upload, nothing stored
        client.measure(data[: len(data) // 2], latency=FAST)
    assert "refused this artifact" in str(e.value) and "truncated" in str(e.value)
    mangled = data.replace(b"\x22\x04Conv", b"\x22\x04Cnov")  # NodeProto.op_type (field 4) of every Conv
    with pytest.raises(MeasurementFailed) as e:
        client.measure(mangled, latency=FAST)
    assert "Cnov" in str(e.value)
    assert client.measure(det_s_onnx, latency=FAST).latency.n >= 20


def test_a_killed_measurement_process_is_an_error_and_the_agent_stays_up(agent, client, det_s_onnx):
    t, box = _in_background(lambda: client.measure(det_s_onnx, latency={**FAST, "min_seconds": 60.0}))
    pid = _worker_pid(agent.proc.pid)
    os.kill(pid, signal.SIGKILL)  # what the kernel's OOM killer does
    t.join(60)
    assert isinstance(box.get("error"), MeasurementFailed), box
    assert "SIGKILL" in str(box["error"]) and "still up" in str(box["error"])
    assert client.health().status == "ok" and client.queue().running is False


def test_a_measurement_and_the_fork_server_never_outlive_the_agent(tmp_path, det_s_onnx):
    """Measurement processes are forked from a server process with the runtime preloaded; the agent killed
    the hard way (SIGKILL) mid-measurement leaves neither behind."""
    agent = start_agent(tmp_path / "agent-killed-mid-measurement")
    try:
        with agent.client(measure_timeout=120) as c:
            t, _ = _in_background(lambda: c.measure(det_s_onnx, latency={**FAST, "min_seconds": 60.0}))
            worker = psutil.Process(_worker_pid(agent.proc.pid))
            left = [p for p in psutil.Process(agent.proc.pid).children(recursive=True)]
            assert worker in left and len(left) >= 2  # the fork server and its measurement child
            agent.proc.kill()
            agent.proc.wait()
            _, alive = psutil.wait_procs(left, timeout=30)
            assert not alive, f"outlived the agent: {[p.cmdline()[:3] for p in alive]}"
            t.join(60)
    finally:
        agent.stop()


def test_a_measurement_past_its_timeout_is_killed(client, det_s_onnx):
    with pytest.raises(MeasurementFailed) as e:  # it would run for 60 s: the agent's own limit ends it
        client.measure(det_s_onnx, latency={**FAST, "min_seconds": 60.0}, timeout_s=2.0)
    assert "longer than 2 s" in str(e.value)
    assert client.health().status == "ok" and client.queue().running is False


def test_concurrent_measurements_never_overlap_and_a_full_queue_answers_429(agent, client, det_s_onnx):
    client.upload_artifact(det_s_onnx)
    slow = {**FAST, "min_seconds": 1.5}
    t1, b1 = _in_background(lambda: client.measure(det_s_onnx, latency=slow))
    _worker_pid(agent.proc.pid)
    t2, b2 = _in_background(lambda: client.measure(det_s_onnx, latency=slow))
    wait_until(lambda: client.queue().waiting >= 1, what="the second measurement to queue")  # a queue of 1
    with pytest.raises(AgentError) as e:
        client.measure(det_s_onnx, latency=FAST)
    assert e.value.status_code == 429
    t1.join(120)
    t2.join(120)
    a, b = sorted([b1["result"], b2["result"]], key=lambda m: m.started_at)
    assert a.finished_at <= b.started_at, (a.started_at, a.finished_at, b.started_at, b.finished_at)


def test_an_agent_killed_mid_request_raises_agent_unavailable(tmp_path, det_s_onnx):
    victim = start_agent(tmp_path / "victim")
    try:
        with victim.client(measure_timeout=120, retries=1, backoff=0.05) as c:
            c.upload_artifact(det_s_onnx)
            t, box = _in_background(lambda: c.measure(det_s_onnx, latency={**FAST, "min_seconds": 60.0}))
            worker = _worker_pid(victim.proc.pid)
            victim.proc.send_signal(signal.SIGKILL)
            t.join(60)  # the client's timeout is 120 s: the dropped connection must end the call, not it
            assert not t.is_alive() and isinstance(box.get("error"), AgentUnavailable), box
            with pytest.raises(AgentUnavailable):
                c.health()
        # the orphaned measurement process dies with its agent (PR_SET_PDEATHSIG)
        wait_until(lambda: not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE,
                   what="the measurement process to die with its agent")
    finally:
        victim.stop()
