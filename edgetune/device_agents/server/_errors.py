"""Error responses: every error is an :class:`~edgetune.device_agents.protocol.ErrorBody` with the
protocol version, a type the client maps back to an exception, and a message saying rule, value, fix."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from edgetune._logging import get_logger
from edgetune.device_agents.deploy_protocol import DEPLOYMENT_NAME_PATTERN
from edgetune.device_agents.protocol import (
    PROTOCOL_HEADER,
    PROTOCOL_VERSION,
    SHA256_PATTERN,
    ErrorBody,
    ErrorInfo,
)
from edgetune.errors import AuthError, EdgetuneError, MeasurementFailed, ProtocolMismatch

__all__ = ["ApiError", "BodyError", "install_error_handlers", "error_response", "ERROR_RESPONSES", "ShaPath",
           "NamePath"]

log = get_logger(__name__)

_STATUS = {AuthError: 401, ProtocolMismatch: 400, MeasurementFailed: 422}

# path parameters as the routes check them (declared in the OpenAPI contract)
ShaPath = Annotated[str, Path(pattern=SHA256_PATTERN, description="sha256 of the content, 64 lowercase hex digits")]
NamePath = Annotated[str, Path(pattern=DEPLOYMENT_NAME_PATTERN, description="deployment slot name")]

# every error the agent answers has the ErrorBody shape; the codes its routes use, for the contract
ERROR_RESPONSES: dict[int | str, dict] = {
    400: {"model": ErrorBody, "description": "bad request: invalid body or parameter (ValidationError), a hash that "
                                             "does not match (HashMismatch), another protocol major (ProtocolMismatch)"},
    401: {"model": ErrorBody, "description": "missing or wrong bearer token (AuthError); the body is never read"},
    404: {"model": ErrorBody, "description": "no such artifact, dataset or deployment"},
    408: {"model": ErrorBody, "description": "the request body stopped arriving (RequestTimeout); connection closed"},
    413: {"model": ErrorBody, "description": "body over this agent's limit (counted while it streams)"},
    415: {"model": ErrorBody, "description": "upload refused: not a self-contained ONNX model (nothing stored)"},
    422: {"model": ErrorBody, "description": "the runtime could not load or run the model (MeasurementFailed)"},
    429: {"model": ErrorBody, "description": "the measurement queue is full; retry later"},
}


class ApiError(Exception):
    """An HTTP error with a typed body; raise it from routes."""

    def __init__(self, status: int, type_: str, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type_, message, headers or {}


class BodyError(StarletteHTTPException):
    """A request body the agent stops reading: over its limit (413 PayloadTooLarge) or stalled (408
    RequestTimeout, which closes the connection). An HTTPException, so FastAPI's body parsing passes it
    on instead of answering 400."""

    def __init__(self, status: int, type_: str, message: str):
        super().__init__(status, detail=message, headers={"Connection": "close"} if status == 408 else None)
        self.type = type_


def error_response(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = ErrorBody(error=ErrorInfo(type=type_, message=message)).model_dump()
    return JSONResponse(body, status_code=status, headers={PROTOCOL_HEADER: PROTOCOL_VERSION, **(headers or {})})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.type, exc.message, exc.headers)

    @app.exception_handler(EdgetuneError)
    async def _edgetune(_: Request, exc: EdgetuneError) -> JSONResponse:
        status = next((s for cls, s in _STATUS.items() if isinstance(exc, cls)), 400)
        return error_response(status, type(exc).__name__, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"`{loc or '(body)'}`: {err.get('msg')}")
        return error_response(400, "ValidationError", "invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, getattr(exc, "type", "HTTPError"), str(exc.detail),
                              dict(exc.headers or {}))

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect) -> JSONResponse:  # nobody reads the answer
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.warning("%s closed the connection during %s %s before its body was complete; nothing was stored",
                    client, request.method, request.url.path)
        return error_response(400, "ClientDisconnect", "the client closed the connection mid-request.")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in the agent")
        return error_response(500, "AgentError", f"unexpected {type(exc).__name__} in the agent: {exc}")
