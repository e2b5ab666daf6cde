"""An agent that could not measure refuses to start (exit 2, the fix in the message); a wrong token is
answered in words the user can act on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edgetune.errors import AuthError


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
