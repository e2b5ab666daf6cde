"""Platform probes: the device fingerprint (board, OS, CPU, memory, runtime, power mode, thermals).

Board-specific readers live in :mod:`.board`, :mod:`.jetson`, :mod:`.rpi` and :mod:`.power`; each
takes a ``root`` so it is tested on recorded files. :func:`fingerprint` assembles the ``/info`` answer.

The volatile sensors (throttling / under-voltage flags, temperatures, cpufreq limits, power sensors) are
read under a *sensor root*, ``/`` unless the agent was started with ``--sensor-root DIR`` (or
``EDGETUNE_AGENT_SENSOR_ROOT``): a directory laid out like ``/`` that holds recorded sensor files
(``sys/class/thermal/...``, ``sys/devices/platform/soc/soc:firmware/get_throttled``, ...). It replays a
board's state on a machine that has no such sensors (the tests do, with values recorded on real boards),
through the same parsing code; it never changes the board, CPU or OS the agent reports. Commands
(``vcgencmd``, ``nvpmodel``, ``tegrastats``) are only run on the live system, never under a sensor root.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from pathlib import Path

from edgetune import __version__
from edgetune.device_agents.probes.board import (
    board_from_root,
    cpu_info,
    infer_kind,
    memory_bytes,
    os_info,
    read_text,
)
from edgetune.device_agents.probes.jetson import clocks_locked, parse_nvpmodel
from edgetune.device_agents.probes.power import available_power_sensors
from edgetune.device_agents.probes.rpi import active_conditions, throttle_state
from edgetune.device_agents.protocol import AgentSettings, Board, CPUInfo, DeviceInfo, OSInfo, RuntimeInfo

__all__ = ["fingerprint", "detected_kind", "temperatures", "power_mode", "throttle_state", "active_conditions"]


@functools.lru_cache(maxsize=4)
def _static(root: str) -> tuple[Board, OSInfo, CPUInfo, int]:
    return board_from_root(root=root), os_info(root=root), cpu_info(root=root), memory_bytes(root=root)


def detected_kind(*, root: str | Path = "/") -> str:
    board, _, cpu, _ = _static(str(root))
    import platform

    return infer_kind(board, arch=cpu.arch or platform.machine())


def temperatures(*, root: str | Path = "/") -> dict[str, float]:
    """Thermal zones (degC) by type, e.g. ``{"cpu-thermal": 48.3}``; empty where there are none."""
    out: dict[str, float] = {}
    for zone in sorted((Path(root) / "sys/class/thermal").glob("thermal_zone*")):
        kind = (read_text(str(zone / "type"), root="/") or zone.name).strip()
        raw = read_text(str(zone / "temp"), root="/")
        try:
            value = int(raw.strip()) / 1000.0 if raw else None
        except ValueError:
            value = None
        if value is not None and value > -200:
            out[kind if kind not in out else f"{kind}.{zone.name}"] = value
    return out


def power_mode(*, timeout: float = 3.0) -> str | None:
    """The Jetson power mode from ``nvpmodel -q`` (None elsewhere)."""
    exe = shutil.which("nvpmodel")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_nvpmodel(out.stdout + out.stderr)


def fingerprint(*, name: str, kind: str | None, runtime: RuntimeInfo, agent: AgentSettings,
                root: str | Path = "/", runtimes: list[RuntimeInfo] | None = None,
                sensors: str | Path | None = None) -> DeviceInfo:
    """The ``/info`` answer; static facts (under ``root``) are cached, volatile ones (thermals, modes,
    throttling; under ``sensors``, default ``root``) read each call."""
    board, os_, cpu, mem = _static(str(root))
    detected = detected_kind(root=root)
    sensors = root if sensors is None else sensors
    live = str(sensors) == "/"
    return DeviceInfo(
        name=name, kind=kind or detected, detected_kind=detected, edgetune_version=__version__, board=board,
        os=os_, cpu=cpu, memory_bytes=mem, runtime=runtime, runtimes=list(runtimes or [runtime]), agent=agent,
        power_mode=power_mode() if board.vendor == "jetson" and live else None,
        clocks_locked=clocks_locked(root=sensors), power_sensors=available_power_sensors(root=sensors),
        temperatures_c=temperatures(root=sensors),
        throttling=throttle_state(root=sensors, vcgencmd=board.vendor == "raspberry-pi"),
    )
