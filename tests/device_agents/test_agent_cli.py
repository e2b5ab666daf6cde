"""``edgetune devices``, ``edgetune measure`` and ``edgetune compare`` against a real agent, through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from agent_helpers import one_conv_onnx

CLI = "import sys; from edgetune.cli import main; sys.argv[0] = 'edgetune'; main()"


def edgetune(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}  # rich tables: no header wrapping
    return subprocess.run([sys.executable, "-c", CLI, *args], capture_output=True, text=True, timeout=300, env=env)


def _fleet(tmp_path, agent):
    (tmp_path / "token").write_text(agent.token)
    path = tmp_path / "fleet.yaml"
    path.write_text(f"devices:\n  - {{name: main, url: '{agent.url}', token_file: '{tmp_path / 'token'}'}}\n"
                    "  - {name: gone, url: 'http://127.0.0.1:9', kind: rpi5}\n")
    return path


def test_devices_lists_health_kind_and_fingerprint(tmp_path, agent):
    r = edgetune("devices", "--fleet", str(_fleet(tmp_path, agent)), "--json", "--timeout", "3")
    assert r.returncode == 1, r.stderr  # one device is down: a script can tell
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["main"]["status"] == "up" and rows["main"]["kind"] == "local-cpu"
    assert rows["main"]["info"]["runtime"]["name"] == "ort" and rows["main"]["info"]["agent"]["threads"] == 1
    assert rows["gone"]["status"] == "down" and rows["gone"]["kind"] == "rpi5" and "unreachable" in rows["gone"]["error"]
    table = edgetune("devices", "--fleet", str(tmp_path / "fleet.yaml"), "--timeout", "3")
    assert table.returncode == 1 and "local-cpu" in table.stdout and "down or refusing: gone" in table.stdout
    assert rows["gone"]["error"].split()[-1].rstrip(".)") in table.stdout.replace("\n", " ")  # the whole reason
    (tmp_path / "up.yaml").write_text("\n".join((tmp_path / "fleet.yaml").read_text().splitlines()[:2]) + "\n")
    assert edgetune("devices", "--fleet", str(tmp_path / "up.yaml"), "--timeout", "3").returncode == 0
    (tmp_path / "token").write_text("not-the-token")  # up, but it refuses us: a script must be able to tell
    wrong = edgetune("devices", "--fleet", str(tmp_path / "up.yaml"), "--timeout", "3", "--json")
    assert wrong.returncode == 1 and json.loads(wrong.stdout)[0]["status"] == "up (no info)", wrong.stdout


def test_measure_one_model_on_one_device(tmp_path, agent, det_s_onnx):
    fleet = _fleet(tmp_path, agent)
    r = edgetune("measure", str(det_s_onnx), "--device", "main", "--fleet", str(fleet), "--json", "--warmup", "2",
                 "--min-runs", "15", "--min-seconds", "0", "--data", "builtin:shapes", "--val-images", "16")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["latency"]["n"] >= 15 and m["device"]["kind"] == "local-cpu" and m["accuracy_images"] == 16
    assert set(m["accuracy"]) >= {"map50_95", "map50"} and m["end_to_end"]["n"] >= 15
    table = edgetune("measure", str(det_s_onnx), "--device", "main", "--fleet", str(fleet), "--min-runs", "10",
                     "--min-seconds", "0", "--warmup", "1")
    assert table.returncode == 0 and "model only" in table.stdout and "p50 ms" in table.stdout
    bad = edgetune("measure", str(det_s_onnx), "--device", "nano", "--fleet", str(fleet))
    assert bad.returncode == 2 and "no device named 'nano'" in bad.stderr


def test_compare_times_models_side_by_side(tmp_path, agent, det_s_onnx):
    fleet = _fleet(tmp_path, agent)
    small = one_conv_onnx(tmp_path / "one-conv.onnx")
    r = edgetune("compare", str(det_s_onnx), str(small), "--device", "main", "--fleet", str(fleet), "--runs", "20",
                 "--warmup", "1", "--json")
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)
    assert len(c["artifacts"]) == 2 and all(s["n"] == 20 for s in c["latency"].values())
    table = edgetune("compare", str(det_s_onnx), str(small), "--device", "main", "--fleet", str(fleet), "--runs", "10")
    assert table.returncode == 0 and "speed-up vs first" in table.stdout and "1.00x" in table.stdout
    same = edgetune("compare", str(det_s_onnx), str(det_s_onnx), "--device", "main", "--fleet", str(fleet))
    assert same.returncode == 2 and "same model" in same.stderr
