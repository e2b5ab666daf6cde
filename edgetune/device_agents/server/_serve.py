"""Run an agent with uvicorn on a socket bound before startup (so ``--port 0`` picks a free port and the
``--ready-file`` tells the launcher which). TLS through uvicorn's certificate options. Connections are
uvicorn's h11 protocol with header and write deadlines and a connection cap (``_http``); websockets off."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

from edgetune._logging import get_logger
from edgetune.device_agents.server._config import AgentConfig

__all__ = ["serve", "bind_socket"]

log = get_logger(__name__)


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        from edgetune.errors import ConfigError

        raise ConfigError(f"cannot listen on {host}:{port} ({exc}); pick another --port (0 = any free port).") from exc
    sock.set_inheritable(True)
    return sock


def preflight(config: AgentConfig) -> None:
    """What would make the first measurement fail, checked before the agent listens (ConfigError: the CLI
    exits 2 with the fix): CPUs to pin that this process may not use, a runtime that cannot run here, a
    workdir that cannot be written."""
    from edgetune.device_agents.runtimes import get_runtime
    from edgetune.errors import ConfigError

    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    bad = [c for c in config.cpus if c not in allowed]
    if bad:
        raise ConfigError(f"--cpus {','.join(map(str, config.cpus))}: CPU(s) {','.join(map(str, bad))} do not exist or "
                          f"are not available to this process; available: {_ranges(allowed)}. Pick from those "
                          "(e.g. --cpus " + str(allowed[-1]) + ").")
    for runtime in config.offered_runtimes:
        reason = get_runtime(runtime).unusable_reason()
        if reason:
            raise ConfigError(f"--runtime {runtime} cannot run on this machine: {reason}.")
    workdir = Path(config.workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--workdir {workdir} is not writable ({exc.strerror or exc}); pass a folder this user "
                          "can write (uploads, engines and jobs live there).") from None


def _ranges(cpus: list[int]) -> str:
    out, start = [], None
    for i, c in enumerate(cpus):
        start = c if start is None else start
        if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
            out.append(f"{start}" if start == c else f"{start}-{c}")
            start = None
    return ",".join(out)


def serve(config: AgentConfig, *, host: str = "127.0.0.1", port: int = 8765, ssl_certfile: str | None = None,
          ssl_keyfile: str | None = None, ready_file: str | Path | None = None) -> None:
    """Serve the agent until SIGINT/SIGTERM."""
    import uvicorn

    from edgetune.device_agents.server._app import create_app

    preflight(config)
    app = create_app(config)
    sock = bind_socket(host, port)
    actual = sock.getsockname()[1]
    scheme = "https" if ssl_certfile else "http"
    url = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{actual}"

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started and ready_file:
                from edgetune._paths import atomic_write_bytes

                atomic_write_bytes(Path(ready_file), json.dumps({"url": url, "port": actual, "pid": os.getpid()}).encode())
            log.warning("edgetune agent '%s' (%s, runtime %s) listening on %s", config.name,
                        app.state.agent.kind, ",".join(config.offered_runtimes), url)

    from edgetune.device_agents.server._http import (
        ACCEPT_BACKLOG,
        MAX_HEADER_BYTES,
        default_max_connections,
        guarded_h11,
    )

    http = guarded_h11(header_timeout_s=config.header_timeout_s, stall_timeout_s=config.stall_timeout_s,
                       max_connections=config.max_connections or default_max_connections())
    uv = uvicorn.Config(app, log_level="warning", access_log=False, ssl_certfile=ssl_certfile,
                        ssl_keyfile=ssl_keyfile, timeout_keep_alive=30, lifespan="off", http=http, ws="none",
                        h11_max_incomplete_event_size=MAX_HEADER_BYTES, backlog=ACCEPT_BACKLOG)
    _Server(uv).run(sockets=[sock])
