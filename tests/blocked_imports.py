"""Run Python code in a child process where torch, optuna, ray and mlflow cannot be imported (the agent
side must install and work without them)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCKED = ("torch", "optuna", "ray", "mlflow")

BLOCKER = textwrap.dedent(
    f"""
    import sys
    class _Block:
        BLOCKED = {BLOCKED!r}
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"blocked for this test: {{name}}")
            return None
    sys.meta_path.insert(0, _Block())
    """
)


def run_blocked(code: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code), *args], capture_output=True,
                          text=True, timeout=timeout)
