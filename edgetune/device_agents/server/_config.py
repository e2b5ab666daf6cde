"""Agent settings (from ``edgetune agent serve`` options) and the per-app state."""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["AgentConfig", "default_host_lock"]

MiB = 1 << 20


def default_host_lock() -> Path:
    """One lock file per host and user: agents sharing a machine never measure at the same time."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"edgetune-agent-measure-{uid}.lock"


@dataclass(frozen=True)
class AgentConfig:
    """What an agent serves with. ``cpus`` pins the measurement processes (empty: no pinning);
    ``kind`` overrides the detected device kind (local agents say ``local-cpu``); ``host_lock`` is the
    lock file shared by the agents of one host (None: no cross-agent lock). ``runtime`` is the default
    runtime (requests that name none get it); ``runtimes`` the others the agent also offers (a request may
    name any of :attr:`offered_runtimes`). ``header_timeout_s``, ``stall_timeout_s`` and ``max_connections``
    bound what slow or half-open clients can hold (``server._http``; None: from the open-file limit).
    ``sensor_root``: where the volatile sensors (throttling flags, temperatures, cpufreq, power) are read,
    a directory laid out like ``/`` holding recorded sensor files (None: the live ``/``); for replaying a
    board's recorded state where no such sensor exists (see ``probes``)."""

    token: str
    workdir: Path
    runtime: str = "ort"
    runtimes: tuple[str, ...] = ()
    threads: int = 1
    cpus: tuple[int, ...] = ()
    name: str = field(default_factory=socket.gethostname)
    kind: str | None = None
    queue_size: int = 4
    max_artifact_bytes: int = 512 * MiB
    max_dataset_bytes: int = 2048 * MiB
    max_request_bytes: int = 1 * MiB
    max_image_bytes: int = 16 * MiB  # an image sent to POST /deployments/{name}/predict
    keep_deployments: int = 3  # versions kept per deployment slot (for rollback)
    measure_timeout_s: float = 900.0
    max_memory_bytes: int | None = None
    host_lock: Path | None = field(default_factory=default_host_lock)
    keep_jobs: bool = False
    header_timeout_s: float = 10.0  # request line + headers must arrive within this
    stall_timeout_s: float = 60.0  # a request body, or a response the client reads, may pause this long
    max_connections: int | None = None
    sensor_root: Path | None = None

    @property
    def offered_runtimes(self) -> tuple[str, ...]:
        """The default runtime first, then the others, each once."""
        return tuple(dict.fromkeys((self.runtime, *self.runtimes)))

    def __post_init__(self) -> None:
        from edgetune.errors import ConfigError

        if not self.token or len(self.token) < 8:
            raise ConfigError("the agent token must be at least 8 characters; generate one with "
                              "`python -c \"import secrets; print(secrets.token_urlsafe(24))\"`.")
        if self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}.")
        if self.queue_size < 0:
            raise ConfigError(f"--queue must be >= 0, got {self.queue_size}.")
        for flag, value in (("--header-timeout", self.header_timeout_s), ("--stall-timeout", self.stall_timeout_s)):
            if not value > 0:
                raise ConfigError(f"{flag} must be > 0 seconds, got {value}.")
        if self.sensor_root is not None and not Path(self.sensor_root).is_dir():
            raise ConfigError(f"--sensor-root {self.sensor_root} is not a directory; give a directory laid out like / "
                              "that holds recorded sensor files, or leave the option out to read this machine's.")
        if self.max_connections is not None and self.max_connections < 4:
            raise ConfigError(f"--max-connections must be >= 4 (a controller keeps a few open), got "
                              f"{self.max_connections}.")
