"""One measurement at a time: a per-agent lock with a bounded wait queue, a per-host file lock shared by
the agents of one machine, and the child process that does the measuring.

A request that finds the queue full gets 429 at once. The child runs in its own session; a timeout kills
its whole process group; a crash or a kill (e.g. the kernel's OOM killer) becomes MeasurementFailed with
the signal and the tail of its stderr. The agent itself never runs a model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgetune._logging import get_logger
from edgetune._paths import FileLock
from edgetune.device_agents.protocol import QueueStatus
from edgetune.device_agents.server._config import AgentConfig
from edgetune.device_agents.server._errors import ApiError
from edgetune.errors import MeasurementFailed

__all__ = ["MeasureScheduler"]

log = get_logger(__name__)


class MeasureScheduler:
    def __init__(self, config: AgentConfig):
        self.config = config
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._running_since: float | None = None
        self._completed = 0
        self.jobs_dir = Path(config.workdir) / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)

    def status(self) -> QueueStatus:
        return QueueStatus(running=self._running_since is not None, running_since=self._running_since,
                           waiting=self._waiting, capacity=self.config.queue_size, completed=self._completed)

    async def run(self, job: dict, *, timeout: float, before: Callable[[], Any] | None = None
                  ) -> tuple[dict, float, float, Any]:
        """Run ``job`` in a child process when it is this request's turn; returns (result, start, end, and
        what ``before()`` returned: it is called once the device is ours, e.g. to take the fingerprint)."""
        if self._lock.locked() and self._waiting >= self.config.queue_size:
            raise ApiError(429, "AgentBusy", f"the agent is measuring and {self._waiting} request(s) are already "
                           f"waiting (queue size {self.config.queue_size}); retry later.",
                           headers={"Retry-After": "5"})
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        host_lock = FileLock(self.config.host_lock)  # one measurement per host across agents
        try:
            await asyncio.to_thread(host_lock.acquire)
            try:
                snapshot = await asyncio.to_thread(before) if before is not None else None
            except BaseException:
                host_lock.release()
                raise
            started = time.time()
            self._running_since = started
            try:
                result = await self._run_child(job, timeout=timeout)
            finally:
                finished = time.time()
                host_lock.release()
            return result, started, finished, snapshot
        finally:
            self._running_since = None
            self._completed += 1
            self._lock.release()

    async def _run_child(self, job: dict, *, timeout: float) -> dict:
        job_dir = self.jobs_dir / uuid.uuid4().hex
        job_dir.mkdir()
        (job_dir / "job.json").write_text(json.dumps(job))
        try:
            ctx = _fork_server()
            if ctx is not None:
                rc = await self._run_forked(ctx, job, job_dir, timeout=timeout)
            else:
                rc = await self._run_exec(job, job_dir, timeout=timeout)
            return self._read_result(job_dir, rc)
        finally:
            if not self.config.keep_jobs:
                shutil.rmtree(job_dir, ignore_errors=True)

    @staticmethod
    async def _run_forked(ctx, job: dict, job_dir: Path, *, timeout: float) -> int:
        from edgetune.device_agents._worker import forked

        proc = ctx.Process(target=forked, args=(str(job_dir),), daemon=False)
        await asyncio.to_thread(proc.start)
        log.info("measurement process %d forked for %s", proc.pid, _what(job))
        await asyncio.to_thread(proc.join, timeout)
        if proc.exitcode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # its session: anything it started goes too
            except (ProcessLookupError, PermissionError):
                proc.kill()  # killed before it made its session
            await asyncio.to_thread(proc.join)
            raise MeasurementFailed(_timed_out(timeout))
        return int(proc.exitcode)

    @staticmethod
    async def _run_exec(job: dict, job_dir: Path, *, timeout: float) -> int:
        with open(job_dir / "stderr.log", "wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edgetune.device_agents._worker", str(job_dir),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=err,
                start_new_session=True)
            log.info("measurement process %d started for %s", proc.pid, _what(job))
            try:
                return await asyncio.wait_for(proc.wait(), timeout)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
                raise MeasurementFailed(_timed_out(timeout)) from None

    @staticmethod
    def _read_result(job_dir: Path, rc: int) -> dict:
        result_file = job_dir / "result.json"
        if rc != 0 or not result_file.is_file():
            tail = (job_dir / "stderr.log").read_bytes()[-2000:].decode("utf-8", "replace").strip()
            if rc < 0:
                name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
                how = f"was killed by {name}" + (" (out of memory? the kernel's OOM killer sends SIGKILL)"
                                                  if -rc == signal.SIGKILL else "")
            else:
                how = f"exited with status {rc} without a result"
            raise MeasurementFailed(f"the measurement process {how}; the agent is still up."
                                    + (f" Its last output: {tail}" if tail else ""))
        payload = json.loads(result_file.read_text())
        if not payload.get("ok"):
            raise MeasurementFailed(payload.get("error", {}).get("message", "measurement failed (no message)"))
        return payload["result"]


# What the fork server imports once, so that a measurement process starts without importing them again
# (numpy + onnxruntime + the worker: ~0.65 s of CPU per measurement on the 2-core EPYC VM, seconds on a
# Pi; onnx, which reading the realised precision per layer needs after the timed loops: another 0.6 s and
# 16 MB of the baseline RSS a measurement reports). A module that is not installed is skipped. OpenVINO
# and NCNN are left out: their thread pools start at import, and a process must not fork after that.
_PRELOAD = ["numpy", "onnxruntime", "onnx", "edgetune.device_agents._worker", "edgetune.device_agents._stats",
            "edgetune.device_agents._timing", "edgetune.device_agents.protocol", "edgetune.device_agents.runtimes"]
_FORK_SERVER: list = []


def _fork_server():
    """The multiprocessing context that forks measurement processes from a server process started once
    (``forkserver``: a fresh interpreter, not this threaded one, with :data:`_PRELOAD` imported); None where
    the platform has none or ``EDGETUNE_AGENT_FORK_SERVER=0``: then each measurement execs a new
    interpreter (``python -m edgetune.device_agents._worker``). Either way one model per fresh process."""
    import multiprocessing

    if os.environ.get("EDGETUNE_AGENT_FORK_SERVER", "1") == "0" or \
            "forkserver" not in multiprocessing.get_all_start_methods():
        return None
    if not _FORK_SERVER:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        _FORK_SERVER.append(ctx)
    return _FORK_SERVER[0]


def _timed_out(timeout: float) -> str:
    return (f"the measurement took longer than {timeout:g} s and its process was killed. Lower the latency spec "
            "(min_runs / min_seconds / dataset size) or raise timeout_s / --timeout.")


def _what(job: dict) -> str:
    """What a job measures, for the log: one artifact, several (``/compare``) or a deployment."""
    req = job.get("request") or {}
    if req.get("artifact"):
        return f"artifact {req['artifact'][:12]}"
    if req.get("artifacts"):
        return "artifacts " + ", ".join(a[:12] for a in req["artifacts"])
    return str(job.get("task") or "a job")
