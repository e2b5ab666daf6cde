"""Device agents: the server that runs on a Jetson / Raspberry Pi, its client, and the fleet.

Importing this package is light and torch-free (pydantic, httpx, numpy): the server (fastapi) lives in
:mod:`edgetune.device_agents.server`, the runtimes import onnxruntime / tensorrt only when they load a
model.
"""

from edgetune.device_agents.bundle import BundleData, DatasetBundle, evaluate_bundle, make_bundle, read_bundle
from edgetune.device_agents.client import AgentClient
from edgetune.device_agents.fleet import DEFAULT_TOKEN_ENV, Device, DeviceSpec, Fleet, FleetSpec, load_fleet
from edgetune.device_agents.local import LOCAL_KIND, LocalAgent, LocalAgents, start_local_agents
from edgetune.device_agents.protocol import (
    PROTOCOL_VERSION,
    DeviceInfo,
    Health,
    LatencySpec,
    LatencyStats,
    Measurement,
    MeasureRequest,
    PowerStats,
    QueueStatus,
    RuntimeUsed,
    check_protocol,
)
from edgetune.device_agents.runtimes import (
    ModelSession,
    Runtime,
    available_runtimes,
    get_runtime,
    register_runtime,
)

__all__ = [
    "AgentClient", "Fleet", "FleetSpec", "Device", "DeviceSpec", "DEFAULT_TOKEN_ENV", "load_fleet",
    "LocalAgent", "LocalAgents", "start_local_agents", "LOCAL_KIND",
    "DatasetBundle", "BundleData", "make_bundle", "read_bundle", "evaluate_bundle",
    "PROTOCOL_VERSION", "check_protocol", "LatencySpec", "MeasureRequest", "Measurement", "LatencyStats",
    "PowerStats", "RuntimeUsed", "DeviceInfo", "Health", "QueueStatus",
    "Runtime", "ModelSession", "get_runtime", "available_runtimes", "register_runtime",
]
