"""The FastAPI application of a device agent: state, middleware, one router module per concern.

Routers: ``routes_info`` (health, fingerprint, queue), ``routes_store`` (content-addressed uploads),
``routes_measure`` (measurements), ``routes_deploy`` (versioned deployments over the same artifact store:
``PUT /deployments/{name}``, rollback, ``POST /deployments/{name}/predict``).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from edgetune import __version__
from edgetune.device_agents._onnx_check import not_onnx_reason, scan_onnx
from edgetune.device_agents.probes import detected_kind, fingerprint
from edgetune.device_agents.protocol import (
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    AgentSettings,
    DeviceInfo,
    check_protocol,
)
from edgetune.device_agents.runtimes import get_runtime
from edgetune.device_agents.server import routes_deploy, routes_info, routes_measure, routes_store
from edgetune.device_agents.server._config import AgentConfig
from edgetune.device_agents.server._deployments import DeploymentStore
from edgetune.device_agents.server._errors import error_response, install_error_handlers
from edgetune.device_agents.server._jobs import MeasureScheduler
from edgetune.device_agents.server._store import ContentStore
from edgetune.errors import ProtocolMismatch

__all__ = ["AgentState", "create_app", "check_artifact", "check_dataset"]


def check_artifact(path: Path) -> str | None:
    """Why an uploaded file may not be stored as an artifact (None: accept). A file that does not parse as
    protobuf is accepted: the runtime then reports its own error text at measurement time."""
    data = path.read_bytes()
    reason = not_onnx_reason(data[:8])
    if reason:
        return reason + " (agents accept ONNX only; never pickles)"
    summary = scan_onnx(data)
    if summary.parsed and summary.external_tensors:
        return (f"the ONNX references external data for {len(summary.external_tensors)} tensor(s) "
                f"({', '.join(summary.external_tensors[:3])}); only self-contained ONNX files are accepted "
                "(export with external_data=False)")
    return None


def check_dataset(path: Path) -> str | None:
    """A dataset bundle must be a zip of ``.npy`` arrays with ``spec.npy`` and ``images.npy``."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except zipfile.BadZipFile:
        return "it is not a dataset bundle (.npz); build one with edgetune.device_agents.make_bundle"
    bad = sorted(n for n in names if not n.endswith(".npy"))
    if bad:
        return f"a dataset bundle holds only .npy arrays, this one also has {bad[:3]}"
    missing = {"spec.npy", "images.npy"} - names
    if missing:
        return f"the dataset bundle lacks {sorted(missing)}"
    return None


class _ProtocolMiddleware:
    """Pure ASGI middleware: refuses a controller of another major protocol version, caps non-upload
    bodies (an image sent to ``/deployments/{name}/predict`` has its own cap), and stamps every response
    with the protocol header."""

    def __init__(self, app, *, max_request_bytes: int, max_image_bytes: int | None = None):
        self.app, self.max_request_bytes = app, max_request_bytes
        self.max_image_bytes = max_image_bytes or max_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        remote = headers.get(PROTOCOL_HEADER.lower())
        if remote is not None:
            try:
                check_protocol(remote, where="the controller")
            except ProtocolMismatch as exc:
                return await error_response(400, "ProtocolMismatch", str(exc))(scope, receive, send)
        length = headers.get("content-length", "")
        limit = self.max_image_bytes if scope["path"].endswith("/predict") else self.max_request_bytes
        if scope["method"] not in ("PUT", "HEAD", "GET") and length.isdigit() and int(length) > limit:
            return await error_response(413, "PayloadTooLarge", f"request body of {length} bytes exceeds the "
                                        f"{limit}-byte limit for {scope['path']}.")(scope, receive, send)
        stamp = (PROTOCOL_HEADER.lower().encode(), PROTOCOL_VERSION.encode())

        async def send_stamped(message):
            if message["type"] == "http.response.start":
                hdrs = list(message.get("headers", []))
                if not any(k.lower() == stamp[0] for k, _ in hdrs):
                    message = {**message, "headers": [*hdrs, stamp]}
            await send(message)

        await self.app(scope, receive, send_stamped)


@dataclass
class AgentState:
    config: AgentConfig
    artifacts: ContentStore
    datasets: ContentStore
    scheduler: MeasureScheduler
    kind: str
    deployments: DeploymentStore

    def fingerprint(self) -> DeviceInfo:
        cfg = self.config
        settings = AgentSettings(threads=cfg.threads, cpus=list(cfg.cpus), queue_size=cfg.queue_size,
                                 max_artifact_bytes=cfg.max_artifact_bytes, max_dataset_bytes=cfg.max_dataset_bytes,
                                 measure_timeout_s=cfg.measure_timeout_s)
        return fingerprint(name=cfg.name, kind=cfg.kind, runtime=get_runtime(cfg.runtime).info(), agent=settings)


def create_app(config: AgentConfig) -> FastAPI:
    """The agent's ASGI app (serve it with :func:`edgetune.device_agents.server.serve`)."""
    get_runtime(config.runtime)  # unknown runtime: ConfigError now, not at the first measurement
    workdir = Path(config.workdir)
    app = FastAPI(title="edgetune device agent", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None)
    artifacts = ContentStore(workdir / "artifacts", kind="artifact", suffix=".onnx",
                             max_bytes=config.max_artifact_bytes, check=check_artifact)
    app.state.agent = AgentState(
        config=config,
        artifacts=artifacts,
        datasets=ContentStore(workdir / "datasets", kind="dataset", suffix=".npz",
                              max_bytes=config.max_dataset_bytes, check=check_dataset),
        scheduler=MeasureScheduler(config),
        kind=config.kind or detected_kind(),
        deployments=DeploymentStore(workdir / "deployments", artifacts=artifacts, keep=config.keep_deployments),
    )
    install_error_handlers(app)

    app.add_middleware(_ProtocolMiddleware, max_request_bytes=config.max_request_bytes,
                       max_image_bytes=config.max_image_bytes)
    app.include_router(routes_info.public)
    app.include_router(routes_info.router)
    app.include_router(routes_store.router)
    app.include_router(routes_measure.router)
    app.include_router(routes_deploy.router)
    return app
