"""The device agent server (FastAPI + uvicorn). Importing it imports fastapi; the controller does not."""

from edgetune.device_agents.server._app import AgentState, create_app
from edgetune.device_agents.server._config import AgentConfig, default_host_lock
from edgetune.device_agents.server._serve import serve

__all__ = ["AgentConfig", "AgentState", "create_app", "default_host_lock", "serve"]
