"""Content-addressed uploads: ``PUT``/``HEAD /artifacts/{sha256}`` (ONNX) and ``/datasets/{sha256}``
(dataset bundles). ``HEAD`` answers 200 when the agent has the content, 404 otherwise."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from edgetune.device_agents.protocol import PROTOCOL_HEADER, PROTOCOL_VERSION, UploadResult
from edgetune.device_agents.server._errors import ERROR_RESPONSES, ApiError, ShaPath
from edgetune.device_agents.server._store import ContentStore, check_sha

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)  # the token: checked by the gate middleware, before the body


def _declared(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, "BadRequest", f"Content-Length {raw!r} is not an integer.") from None


async def _put(store: ContentStore, sha: str, request: Request) -> UploadResult:
    check_sha(sha)
    size, created = await store.put(sha, request.stream(), declared=_declared(request))
    return UploadResult(sha256=sha, bytes=size, created=created)


def _head(store: ContentStore, sha: str) -> Response:
    status = 200 if store.has(check_sha(sha)) else 404
    return Response(status_code=status, headers={PROTOCOL_HEADER: PROTOCOL_VERSION})


@router.put("/artifacts/{sha}", response_model=UploadResult)
async def put_artifact(sha: ShaPath, request: Request) -> UploadResult:
    return await _put(request.app.state.agent.artifacts, sha, request)


@router.head("/artifacts/{sha}")
def head_artifact(sha: ShaPath, request: Request) -> Response:
    return _head(request.app.state.agent.artifacts, sha)


@router.put("/datasets/{sha}", response_model=UploadResult)
async def put_dataset(sha: ShaPath, request: Request) -> UploadResult:
    return await _put(request.app.state.agent.datasets, sha, request)


@router.head("/datasets/{sha}")
def head_dataset(sha: ShaPath, request: Request) -> Response:
    return _head(request.app.state.agent.datasets, sha)
