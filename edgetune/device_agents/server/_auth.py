"""Bearer-token authentication (constant-time compare) for every route but ``/health``."""

from __future__ import annotations

import hmac

from fastapi import Request

from edgetune.device_agents.server._errors import ApiError

__all__ = ["require_token"]


def require_token(request: Request) -> None:
    """FastAPI dependency: 401 unless ``Authorization: Bearer <the agent's token>``."""
    expected = request.app.state.agent.config.token.encode()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    ok = scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), expected)
    if not ok:
        raise ApiError(401, "AuthError", "missing or wrong bearer token: send `Authorization: Bearer <token>` with "
                       "the token the agent was started with (--token / --token-file / $EDGETUNE_AGENT_TOKEN).",
                       headers={"WWW-Authenticate": "Bearer"})
