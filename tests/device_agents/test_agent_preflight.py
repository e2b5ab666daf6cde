"""An agent that could not measure refuses to start (exit 2, the fix in the message); a wrong token is
answered in words the user can act on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from agent_helpers import start_agent

from edgetune.device_agents.runtimes.ort import MIN_ONNXRUNTIME
from edgetune.errors import AuthError

# run in the agent's interpreter before it starts: what `onnxruntime_version()` answers there
_ORT_SAYS = """
import edgetune.device_agents.runtimes.ort as ort_runtime
assert callable(ort_runtime.onnxruntime_version)
ort_runtime.onnxruntime_version = lambda: {version!r}
"""


def serve(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGETUNE_AGENT_TOKEN": "a-token-of-16-chars"}
    return subprocess.run([sys.executable, "-m", "edgetune.cli", "agent", "serve", "--port", "0", "--no-host-lock",
                           *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)


@pytest.mark.parametrize("args, words", [
    (("--cpus", "4096"), ["--cpus 4096", "available:"]),
    (("--runtime", "tensorrt"), ["--runtime tensorrt cannot run on this machine", 'edgetune[tensorrt]']),
    (("--runtime", "openvino-nope"), ["unknown runtime 'openvino-nope'", "valid runtimes"]),
])
def test_start_fails_with_the_fix(tmp_path, args, words):
    if args[0] == "--runtime" and args[1] == "tensorrt":
        try:
            import tensorrt  # noqa: F401

            pytest.skip("TensorRT is installed here")
        except ImportError:
            pass
    r = serve(tmp_path, "--workdir", str(tmp_path / "wd"), *args)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    text = " ".join(r.stderr.split())
    for w in words:
        assert w in text, (w, text)
    assert "listening" not in text


def test_an_unwritable_workdir_fails_at_start(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = serve(tmp_path, "--workdir", str(blocker / "wd"))
    assert r.returncode == 2 and "is not writable" in " ".join(r.stderr.split()), r.stderr[-2000:]


def test_a_wrong_token_is_answered_in_words(agent):
    with agent.client() as c:
        c.token = "wrong-token-123"
        with pytest.raises(AuthError) as err:
            c.info()
    assert "refused the token" in str(err.value) and "token_env" in str(err.value) and "token_file" in str(err.value)


def test_an_onnxruntime_older_than_required_refuses_to_start(tmp_path):
    with pytest.raises(RuntimeError) as err:
        start_agent(tmp_path / "agent-old-ort", prelude=_ORT_SAYS.format(version="1.20.1"))
    text = " ".join(str(err.value).split())
    assert "(exit 2)" in text and "listening" not in text, text
    assert f"onnxruntime 1.20.1 is older than {MIN_ONNXRUNTIME}" in text, text
    assert f'pip install "onnxruntime>={MIN_ONNXRUNTIME}"' in text, text
    agent = start_agent(tmp_path / "agent-min-ort", prelude=_ORT_SAYS.format(version=MIN_ONNXRUNTIME + ".0"))
    try:  # the oldest version allowed starts: the refusal above is about the version and nothing else
        assert httpx.get(agent.url + "/health", timeout=30).status_code == 200
    finally:
        agent.stop()


def test_the_oldest_onnxruntime_is_the_one_pyproject_requires():
    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    assert f"onnxruntime>={MIN_ONNXRUNTIME}" in [d.replace(" ", "") for d in deps]
