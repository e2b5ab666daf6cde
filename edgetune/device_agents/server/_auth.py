"""Bearer-token authentication: checked by the agent's gate middleware (``_app._GateMiddleware``) before
any route runs or any body is read; every path but ``/health`` needs it."""

from __future__ import annotations

__all__ = ["AUTH_MESSAGE"]

AUTH_MESSAGE = ("missing or wrong bearer token: send `Authorization: Bearer <token>` with the token the agent was "
                "started with (--token / --token-file / $EDGETUNE_AGENT_TOKEN).")
