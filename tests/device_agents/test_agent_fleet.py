"""Fleet files, leasing, kind inference, local agents and the client's failure modes."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time

import pytest
from agent_helpers import FAST, start_agent

from edgetune.device_agents import DeviceSpec, Fleet, load_fleet, start_local_agents
from edgetune.device_agents.client import AgentClient
from edgetune.errors import AgentError, AgentUnavailable, ConfigError


def _write(tmp_path, text: str):
    p = tmp_path / "fleet.yaml"
    p.write_text(text)
    return p


def test_fleet_yaml_is_validated_with_field_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("ORIN_TOKEN", "secret-orin-token")
    fleet = load_fleet(_write(tmp_path, """
devices:
  - {name: orin, url: "http://10.0.0.21:8765/", token_env: ORIN_TOKEN, kind: jetson-orin, tags: [gpu, lab]}
  - {name: pi5, url: "https://pi5.local:8765"}
"""))
    assert fleet.names == ["orin", "pi5"]
    assert fleet["orin"].spec.url == "http://10.0.0.21:8765" and fleet["orin"].kind == "jetson-orin"
    assert fleet["orin"].client.token == "secret-orin-token"
    assert [d.name for d in fleet.select(tags=["gpu"])] == ["orin"]
    with pytest.raises(ConfigError, match="no device named 'nano'.*orin, pi5"):
        fleet["nano"]
    bad = {
        "devices:\n  - {name: a, url: 'http://x:1', tokn_env: T}": "devices.0.tokn_env",
        "devices:\n  - {name: a, url: 'ftp://x'}": "devices.0.url",
        "devices:\n  - {name: a, url: 'http://x:1'}\n  - {name: a, url: 'http://y:1'}": "repeated: a",
        "devices: []": "devices",
        "machines: []": "`devices:`",
    }
    for text, needle in bad.items():
        with pytest.raises(ConfigError) as e:
            load_fleet(_write(tmp_path, text))
        assert needle in str(e.value), (text, str(e.value))
    # a sweep file: only its devices: section is read
    sweep = load_fleet(_write(tmp_path, "name: s\nmodel: {source: builtin, name: det-s}\n"
                                        "devices:\n  - {name: local, url: 'http://127.0.0.1:1'}\n"))
    assert sweep.names == ["local"]


def test_token_file_and_token_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGETUNE_AGENT_TOKEN", raising=False)
    tf = tmp_path / "tok"
    tf.write_text("from-file-token\n")
    fleet = Fleet([DeviceSpec(name="a", url="http://127.0.0.1:1", token_file=str(tf)),
                   DeviceSpec(name="b", url="http://127.0.0.1:2"),
                   DeviceSpec(name="c", url="http://127.0.0.1:3")], tokens={"c": "explicit-token"})
    assert fleet["a"].client.token == "from-file-token"
    assert fleet["b"].client.token is None and fleet["c"].client.token == "explicit-token"
    with pytest.raises(ConfigError, match="does not exist"):
        DeviceSpec(name="d", url="http://x:1", token_file=str(tmp_path / "missing")).resolve_token()


def test_leases_give_one_trial_at_a_time_per_device():
    fleet = Fleet([DeviceSpec(name="a", url="http://127.0.0.1:1"), DeviceSpec(name="b", url="http://127.0.0.1:2")])
    lock = threading.Lock()
    holding = {"a": 0, "b": 0}
    most = {"a": 0, "b": 0}

    def trial(name: str) -> None:
        with fleet.lease(name):
            with lock:
                holding[name] += 1
                most[name] = max(most[name], holding[name])
            time.sleep(0.05)  # hold it while the other threads try
            with lock:
                holding[name] -= 1

    threads = [threading.Thread(target=trial, args=(n,)) for n in ("a", "a", "a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most == {"a": 1, "b": 1}  # never two trials at once on one device
    with fleet.lease("a"), fleet.lease("b", timeout=5):
        pass  # another device is not held up by a's lease
    with fleet.lease("a"), pytest.raises(AgentError, match="stayed leased"), fleet.lease("a", timeout=0.05):
        pass
    with fleet.lease_any() as first, fleet.lease_any() as second:
        assert {first.name, second.name} == {"a", "b"}


def test_client_raises_agent_unavailable_when_nothing_listens():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    c = AgentClient(f"http://127.0.0.1:{port}", token="whatever-token", retries=2, backoff=0.05, timeout=2)
    with pytest.raises(AgentUnavailable, match="unreachable after 3 attempts"):
        c.health()
    with pytest.raises(ConfigError):
        AgentClient("127.0.0.1:8765")


def test_kind_is_inferred_from_info_and_health_reports_down_devices(agent):
    fleet = Fleet([DeviceSpec(name="main", url=agent.url), DeviceSpec(name="gone", url="http://127.0.0.1:9")],
                  tokens={"main": agent.token}, retries=0, timeout=3)
    health = fleet.health(timeout=3)
    assert health["main"].status == "ok" and isinstance(health["gone"], AgentUnavailable)
    assert fleet.kind("main") == "local-cpu"  # not declared: from /info
    assert [d.name for d in fleet.select(kind="local-cpu")] == ["main"]
    fleet.close()


def test_local_agents_share_a_host_and_never_measure_at_once(tmp_path, det_s_onnx):
    with start_local_agents(2, workdir=tmp_path / "local", host_lock=tmp_path / "host.lock") as agents:
        assert [a.name for a in agents.agents] == ["local-0", "local-1"]
        assert len({a.cpus for a in agents.agents}) == 2  # each pinned to its own core
        path = agents.write_fleet(tmp_path / "fleet.local.yaml")
        results = {}
        with load_fleet(path, measure_timeout=120) as fleet:
            assert {fleet.kind(n) for n in fleet.names} == {"local-cpu"}

            def trial(name: str) -> None:
                with fleet.lease(name) as c:
                    results[name] = c.measure(det_s_onnx, latency={**FAST, "min_seconds": 1.0})

            threads = [threading.Thread(target=trial, args=(n,)) for n in fleet.names]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
        a, b = sorted(results.values(), key=lambda m: m.started_at)
        assert a.finished_at <= b.started_at
        assert {tuple(m.cpus) for m in results.values()} == {ag.cpus for ag in agents.agents}
    assert all(a.process.poll() is not None for a in agents.agents)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make a certificate")
def test_tls_through_uvicorn_certificate_options(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    agent = start_agent(tmp_path / "tls", args=("--ssl-certfile", str(cert), "--ssl-keyfile", str(key)))
    try:
        assert agent.url.startswith("https://127.0.0.1:")
        with agent.client(verify=str(cert)) as c:
            assert c.info().kind == "local-cpu"
        with agent.client(retries=0) as c, pytest.raises(AgentUnavailable):
            c.health()  # an unknown certificate is refused
        with AgentClient(agent.url.replace("https", "http"), retries=0) as c, pytest.raises(AgentUnavailable):
            c.health()
    finally:
        agent.stop()


def test_the_controller_is_pinned_off_the_cores_its_local_agents_measure_on(tmp_path):
    """``search.overlap: on`` with --local: the controller keeps the allowed cores no agent measures on; with
    no core left it pins nothing."""
    import os
    import subprocess
    import threading

    from edgetune.device_agents.local import LocalAgent, LocalAgents

    before = os.sched_getaffinity(0)
    proc = subprocess.Popen(["true"])
    proc.wait()
    stop = threading.Event()
    older = threading.Thread(target=stop.wait)  # a thread started before the pin is pinned too
    older.start()
    try:
        last = max(before)
        one = LocalAgents([LocalAgent("a", "", (last,), tmp_path, proc)], "t", tmp_path / "t", tmp_path)
        if len(before) > 1:
            assert one.isolate_controller() == tuple(sorted(before - {last}))
            assert os.sched_getaffinity(0) == before - {last}
            assert os.sched_getaffinity(older.native_id) == before - {last}
        for t in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(t), before)
        every = LocalAgents([LocalAgent("b", "", tuple(sorted(before)), tmp_path, proc)], "t", tmp_path / "t", tmp_path)
        assert every.isolate_controller() is None and os.sched_getaffinity(0) == before
    finally:
        stop.set()
        older.join()
        for t in os.listdir("/proc/self/task"):
            os.sched_setaffinity(int(t), before)
