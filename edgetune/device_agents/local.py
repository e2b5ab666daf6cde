"""Local agents: the agent program started on this machine as subprocesses, for the demo and the tests.

Each agent listens on 127.0.0.1 on a free port, pins its measurements to its own core(s) with fixed
threads and is labelled ``local-cpu`` (never a Jetson or a Pi). Agents on one host share a lock file,
so they never measure at the same time (their latencies would pollute each other).

```python
with start_local_agents(n=1) as agents:
    with agents.fleet() as fleet, fleet.lease("local-0") as client:
        m = client.measure("model.onnx")
```
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgetune._logging import get_logger
from edgetune.device_agents.fleet import DeviceSpec, Fleet
from edgetune.errors import AgentUnavailable, ConfigError

__all__ = ["LocalAgent", "LocalAgents", "start_local_agents", "LOCAL_KIND"]

log = get_logger(__name__)
LOCAL_KIND = "local-cpu"


@dataclass
class LocalAgent:
    name: str
    url: str
    cpus: tuple[int, ...]
    workdir: Path
    process: subprocess.Popen = field(repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class LocalAgents:
    """Running local agents; stop them with :meth:`stop` (or use as a context manager)."""

    agents: list[LocalAgent]
    token: str
    token_file: Path
    root: Path
    _owns_root: bool = False

    def specs(self) -> list[DeviceSpec]:
        return [DeviceSpec(name=a.name, url=a.url, token_env=None, token_file=str(self.token_file),
                           kind=LOCAL_KIND, tags=("local",)) for a in self.agents]

    def fleet(self, **client_options) -> Fleet:
        return Fleet(self.specs(), **client_options)

    def isolate_controller(self) -> tuple[int, ...] | None:
        """Pin this process (the controller: compression, the screen's rung) to the allowed CPUs none of
        these agents measures on, so that what it does while an agent measures (``search.overlap``) stays
        off that agent's core; returns the CPUs kept, or None (nothing pinned) when the agents take every
        core. Every thread of the process is pinned (Linux pins per thread; numpy's BLAS workers exist
        already) and threads started later inherit it. onnxruntime pins its own pool to every physical core
        unless given a thread count: the controller's sessions set one (``compress._quantize``)."""
        try:
            allowed = set(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return None
        rest = allowed - {c for a in self.agents for c in a.cpus}
        if not rest:
            return None
        tasks = Path("/proc/self/task")
        for tid in sorted(int(t.name) for t in tasks.iterdir()) if tasks.is_dir() else [0]:
            with contextlib.suppress(ProcessLookupError, PermissionError):  # a thread that just ended
                os.sched_setaffinity(tid, rest)
        os.sched_setaffinity(0, rest)
        return tuple(sorted(rest))

    def write_fleet(self, path: str | Path) -> Path:
        """Write a fleet YAML for these agents (tokens by ``token_file``)."""
        import yaml

        from edgetune._paths import atomic_write_bytes

        path = Path(path)
        devices = [s.model_dump(mode="json", exclude_none=True) | {"tags": list(s.tags)} for s in self.specs()]
        atomic_write_bytes(path, yaml.safe_dump({"devices": devices}, sort_keys=False).encode())
        return path

    def stop(self, *, timeout: float = 10.0) -> None:
        for a in self.agents:
            if a.process.poll() is None:
                a.process.terminate()
        for a in self.agents:
            try:
                a.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                a.process.kill()
                a.process.wait()
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LocalAgents:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _cpu_sets(n: int, threads: int) -> list[tuple[int, ...]]:
    """Disjoint CPU sets from the end of the allowed CPUs (CPU 0 takes most interrupts); when there are
    fewer cores than agents x threads, sets wrap around (the host lock keeps measurements apart)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:
        allowed = list(range(os.cpu_count() or 1))
    rev = allowed[::-1]
    return [tuple(sorted({rev[(i * threads + k) % len(rev)] for k in range(threads)})) for i in range(n)]


def start_local_agents(n: int = 1, *, threads: int = 1, workdir: str | Path | None = None, token: str | None = None,
                       name_prefix: str = "local", runtime: str = "ort", host_lock: str | Path | None = None,
                       startup_timeout: float = 60.0, extra_args: tuple[str, ...] = ()) -> LocalAgents:
    """Start ``n`` agents on 127.0.0.1 free ports and wait until each answers ``/health``."""
    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}.")
    owns = workdir is None
    root = Path(tempfile.mkdtemp(prefix="edgetune-local-agents-")) if owns else Path(workdir)
    root.mkdir(parents=True, exist_ok=True)
    token = token or secrets.token_urlsafe(24)
    token_file = root / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    started: list[LocalAgent] = []
    agents = LocalAgents(started, token, token_file, root, owns)
    try:
        # every agent started first, then each waited for (they load their runtimes at once); stop() ends
        # those started if one fails
        for i, cpus in enumerate(_cpu_sets(n, threads)):
            name = f"{name_prefix}-{i}"
            wd = root / name
            wd.mkdir(parents=True, exist_ok=True)
            ready = wd / "ready.json"
            ready.unlink(missing_ok=True)
            cmd = [sys.executable, "-m", "edgetune.device_agents", "serve", "--host", "127.0.0.1", "--port", "0",
                   "--token-file", str(token_file), "--workdir", str(wd), "--runtime", runtime,
                   "--threads", str(threads), "--cpus", ",".join(map(str, cpus)), "--kind", LOCAL_KIND,
                   "--name", name, "--ready-file", str(ready), *extra_args]
            if host_lock is not None:
                cmd += ["--host-lock", str(host_lock)]
            log_file = open(wd / "agent.log", "ab")  # noqa: SIM115 - owned by the child
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
            log_file.close()
            started.append(LocalAgent(name, "", cpus, wd, proc))
        for a in started:
            a.url = _wait_ready(a.process, a.workdir / "ready.json", a.workdir / "agent.log", timeout=startup_timeout)
            log.info("local agent %s on %s (cpus %s, pid %d)", a.name, a.url, a.cpus, a.pid)
        with agents.fleet(retries=10, backoff=0.05) as fleet:
            for name, status in fleet.health().items():
                if isinstance(status, Exception):
                    raise AgentUnavailable(f"local agent {name} started but does not answer /health: {status}")
    except BaseException:
        agents.stop()
        raise
    return agents


def _wait_ready(proc: subprocess.Popen, ready: Path, log_path: Path, *, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.is_file():
            return json.loads(ready.read_text())["url"]
        if proc.poll() is not None:
            tail = log_path.read_bytes()[-1500:].decode("utf-8", "replace")
            raise AgentUnavailable(f"local agent exited with status {proc.returncode} while starting: {tail}")
        time.sleep(0.05)
    proc.kill()
    raise AgentUnavailable(f"local agent did not start within {timeout} s (log: {log_path}).")
