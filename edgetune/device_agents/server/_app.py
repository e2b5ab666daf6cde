"""The FastAPI application of a device agent: state, middleware, one router module per concern.

Routers: ``routes_info`` (health, fingerprint, queue), ``routes_store`` (content-addressed uploads),
``routes_measure`` (measurements), ``routes_deploy`` (versioned deployments over the same artifact store:
``PUT /deployments/{name}``, rollback, ``POST /deployments/{name}/predict``).
"""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from edgetune import __version__
from edgetune.device_agents._onnx_check import check_upload
from edgetune.device_agents.bundle import bundle_problem
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
from edgetune.device_agents.server._auth import AUTH_MESSAGE
from edgetune.device_agents.server._config import AgentConfig
from edgetune.device_agents.server._deployments import DeploymentStore
from edgetune.device_agents.server._errors import BodyError, error_response, install_error_handlers
from edgetune.device_agents.server._jobs import MeasureScheduler
from edgetune.device_agents.server._store import ContentStore
from edgetune.errors import ProtocolMismatch

__all__ = ["AgentState", "create_app", "check_artifact", "check_dataset"]


def check_artifact(path: Path) -> str | None:
    """Why an uploaded file may not be stored as an artifact (None: accept): anything but a
    self-contained ONNX model of known operator domains (see ``_onnx_check``; checked in a child process,
    so a hostile file cannot stall the agent)."""
    return check_upload(path)


def check_dataset(path: Path) -> str | None:
    """A dataset bundle must be a zip of ``.npy`` arrays with ``spec.npy`` and ``images.npy`` that expands
    to at most half this machine's memory (read from its zip directory and array headers only)."""
    return bundle_problem(path)


PUBLIC_PATHS = frozenset({"/health"})  # everything else, unknown paths included, needs the token


class _GateMiddleware:
    """Pure ASGI middleware, the first thing every request meets, before any byte of its body is read:

    1. the protocol version a controller declares (another major version: 400);
    2. the bearer token (constant-time compare) on every path but ``/health``: a request without it gets
       401 and its body is never read, chunked or not, so an unauthenticated client cannot make the agent
       buffer anything;
    3. the body size, counted while it streams (``Content-Length`` is not trusted): JSON requests are capped
       at ``max_request_bytes``, an image sent to ``/deployments/{name}/predict`` at ``max_image_bytes``, a
       deployment push at ``max_deploy_bytes`` (413, chunked or not, however a route reads its body);
       uploads (``PUT /artifacts``, ``/datasets``) by their store while they are written (``--max-artifact-mb``);
    4. the body's pace: a body of which no byte arrives for ``stall_timeout_s`` gets 408.
    Every response is stamped with the protocol header. The rest of a body answered early (401, 413) is
    read and dropped by uvicorn, as HTTP/1.1 wants, until the connection's header deadline (``_http``)."""

    def __init__(self, app, *, token: str, max_request_bytes: int, max_image_bytes: int | None = None,
                 max_deploy_bytes: int | None = None, stall_timeout_s: float = 60.0):
        self.app, self.token, self.max_request_bytes = app, token.encode(), max_request_bytes
        self.max_image_bytes = max_image_bytes or max_request_bytes
        self.max_deploy_bytes = max_deploy_bytes or max_request_bytes
        self.stall_timeout_s = stall_timeout_s

    def _limit(self, method: str, path: str) -> int | None:
        if method == "PUT" and path.startswith(("/artifacts/", "/datasets/")):
            return None  # the store counts the upload against --max-artifact-mb / --max-dataset-mb
        if method == "PUT" and path.startswith("/deployments/"):
            return self.max_deploy_bytes
        return self.max_image_bytes if path.endswith("/predict") else self.max_request_bytes

    def _authorized(self, headers: dict[str, str]) -> bool:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.token)

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
        if scope["path"] not in PUBLIC_PATHS and not self._authorized(headers):
            return await error_response(401, "AuthError", AUTH_MESSAGE, {"WWW-Authenticate": "Bearer"})(
                scope, receive, send)
        limit = self._limit(scope["method"], scope["path"])
        length = headers.get("content-length", "")
        if limit is not None and length.isdigit() and int(length) > limit:
            return await error_response(413, "PayloadTooLarge", f"request body of {length} bytes exceeds the "
                                        f"{limit}-byte limit for {scope['path']}.")(scope, receive, send)
        stamp = (PROTOCOL_HEADER.lower().encode(), PROTOCOL_VERSION.encode())
        started = False
        seen = 0
        body_done = False

        async def capped_receive():
            nonlocal seen, body_done
            if body_done:  # later calls wait for a disconnect, as long as they like
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.stall_timeout_s)
            except asyncio.TimeoutError:
                raise BodyError(408, "RequestTimeout", f"no byte of the request body arrived for "
                                f"{self.stall_timeout_s:.0f} s (after {seen} bytes); send it again.") from None
            if message["type"] != "http.request":
                body_done = True
                return message
            seen += len(message.get("body", b""))
            body_done = not message.get("more_body", False)
            if limit is not None and seen > limit:
                raise BodyError(413, "PayloadTooLarge", f"request body exceeds the {limit}-byte limit for "
                                f"{scope['path']} (counted as it streamed).")
            return message

        async def send_stamped(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                hdrs = list(message.get("headers", []))
                if not any(k.lower() == stamp[0] for k, _ in hdrs):
                    message = {**message, "headers": [*hdrs, stamp]}
            await send(message)

        try:
            await self.app(scope, capped_receive, send_stamped)
        except BodyError as exc:  # raised where no exception handler saw it
            if started:
                raise
            await error_response(exc.status_code, exc.type, exc.detail, dict(exc.headers or {}))(
                scope, receive, send_stamped)


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
        infos = [get_runtime(r).info() for r in cfg.offered_runtimes]
        return fingerprint(name=cfg.name, kind=cfg.kind, runtime=infos[0], runtimes=infos, agent=settings,
                           sensors=cfg.sensor_root)


def create_app(config: AgentConfig) -> FastAPI:
    """The agent's ASGI app (serve it with :func:`edgetune.device_agents.server.serve`)."""
    for runtime in config.offered_runtimes:  # an unknown runtime: ConfigError now, not at the first measurement
        get_runtime(runtime)
    workdir = Path(config.workdir)
    app = FastAPI(title="edgetune device agent", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")  # behind the token, as every path but /health
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

    app.add_middleware(_GateMiddleware, token=config.token, max_request_bytes=config.max_request_bytes,
                       max_image_bytes=config.max_image_bytes, stall_timeout_s=config.stall_timeout_s,
                       max_deploy_bytes=config.max_artifact_bytes + 2 * routes_deploy.MAX_MANIFEST_BYTES)
    app.include_router(routes_info.public)
    app.include_router(routes_info.router)
    app.include_router(routes_store.router)
    app.include_router(routes_measure.router)
    app.include_router(routes_deploy.router)
    app.openapi = lambda: _contract(app)
    return app


def _contract(app: FastAPI) -> dict:
    """The OpenAPI document the agent enforces: bearer auth on every operation but ``GET /health``,
    the ErrorBody of every error code (validation errors are 400 here, not FastAPI's default 422 shape),
    the sha256 / name patterns of the path parameters."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    schema = get_openapi(title=app.title, version=app.version, routes=app.routes,
                         description="edgetune device agent, protocol " + PROTOCOL_VERSION)
    schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http", "scheme": "bearer", "description": "the token the agent was started with"}
    schema["security"] = [{"bearerAuth": []}]
    error_ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for path, ops in schema.get("paths", {}).items():
        for op in ops.values():
            if path in PUBLIC_PATHS:
                op["security"] = []
                op["responses"] = {k: v for k, v in op["responses"].items() if k.startswith("2")}
                continue
            for code in ("400", "422"):
                if code in op["responses"]:
                    op["responses"][code] = {**op["responses"][code], **error_ref}
    binary = {"required": True, "content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                   "format": "binary"}}}}
    for path in ("/artifacts/{sha}", "/datasets/{sha}"):  # streamed raw bodies: declared by hand
        schema["paths"][path]["put"]["requestBody"] = binary
    forms = {"/deployments/{name}": ("put", {"model": "binary", "sha256": "string", "manifest": "string"}),
             "/deployments/{name}/predict": ("post", {"image": "binary"})}
    for path, (method, fields) in forms.items():
        props = {k: ({"type": "string", "format": "binary"} if t == "binary" else {"type": "string"})
                 for k, t in fields.items()}
        schema["paths"][path][method]["requestBody"] = {"required": True, "content": {"multipart/form-data": {
            "schema": {"type": "object", "properties": props, "required": list(fields)}}}}
    schema["components"].get("schemas", {}).pop("HTTPValidationError", None)
    schema["components"].get("schemas", {}).pop("ValidationError", None)
    app.openapi_schema = schema
    return schema
