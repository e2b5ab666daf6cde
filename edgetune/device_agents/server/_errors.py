"""Error responses: every error is an :class:`~edgetune.device_agents.protocol.ErrorBody` with the
protocol version, a type the client maps back to an exception, and a message saying rule, value, fix."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgetune._logging import get_logger
from edgetune.device_agents.protocol import PROTOCOL_HEADER, PROTOCOL_VERSION, ErrorBody, ErrorInfo
from edgetune.errors import AuthError, EdgetuneError, MeasurementFailed, ProtocolMismatch

__all__ = ["ApiError", "install_error_handlers", "error_response"]

log = get_logger(__name__)

_STATUS = {AuthError: 401, ProtocolMismatch: 400, MeasurementFailed: 422}


class ApiError(Exception):
    """An HTTP error with a typed body; raise it from routes."""

    def __init__(self, status: int, type_: str, message: str, *, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type_, message, headers or {}


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
        return error_response(exc.status_code, "HTTPError", str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in the agent")
        return error_response(500, "AgentError", f"unexpected {type(exc).__name__} in the agent: {exc}")
