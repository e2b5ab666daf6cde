"""``GET /health`` (no auth), ``GET /info`` (the device fingerprint), ``GET /queue``."""

from __future__ import annotations

from fastapi import APIRouter, Request

from edgetune import __version__
from edgetune.device_agents.protocol import DeviceInfo, Health, QueueStatus
from edgetune.device_agents.server._errors import ERROR_RESPONSES

__all__ = ["public", "router"]

public = APIRouter()
router = APIRouter(responses=ERROR_RESPONSES)  # the token: checked by the gate middleware, before the body


@public.get("/health", response_model=Health)
def health(request: Request) -> Health:
    state = request.app.state.agent
    return Health(name=state.config.name, kind=state.kind, edgetune_version=__version__)


@router.get("/info", response_model=DeviceInfo)
def info(request: Request) -> DeviceInfo:
    return request.app.state.agent.fingerprint()


@router.get("/queue", response_model=QueueStatus)
def queue(request: Request) -> QueueStatus:
    return request.app.state.agent.scheduler.status()
