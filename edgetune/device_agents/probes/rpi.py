"""Raspberry Pi throttling and under-voltage: the firmware's ``get_throttled`` bit field.

Where it is read, first found wins:

1. ``/sys/devices/platform/soc/soc:firmware/get_throttled`` (the firmware driver's sysfs file, added by
   raspberrypi/linux PR #2397; it holds the bit field in hex without ``0x``, e.g. ``50005``);
2. ``vcgencmd get_throttled``, which prints ``throttled=0x50005`` (Raspberry Pi OS; only on the live
   system, never under a recorded sensor root);
3. the ``rpi_volt`` hwmon device's ``in0_lcrit_alarm`` (the upstream raspberrypi-hwmon driver): under-voltage
   only.

Bit meanings as documented by Raspberry Pi (``vcgencmd`` page of the Raspberry Pi documentation):
0 under-voltage detected, 1 ARM frequency capped, 2 currently throttled, 3 soft temperature limit
active; 16-19 the same conditions "has occurred since boot". Bits 0-3 say what holds NOW: those are
what flags a measurement (:func:`active_conditions`); the "occurred" bits are kept in the fingerprint.

Not run on a Pi by us: the parsers are tested on the documented values and recorded outputs
(``tests/device_agents/fixtures/``), and the sysfs readers on trees laid out with those recorded values.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from edgetune.device_agents.probes.board import hwmon_devices, read_text

__all__ = ["THROTTLE_BITS", "ACTIVE_CONDITIONS", "SYSFS_THROTTLED", "parse_throttled", "read_throttled",
           "read_throttled_sysfs", "read_under_voltage_hwmon", "throttle_state", "active_conditions"]

THROTTLE_BITS = {
    0: "under_voltage", 1: "freq_capped", 2: "throttled", 3: "soft_temp_limit",
    16: "under_voltage_occurred", 17: "freq_capped_occurred", 18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}
ACTIVE_CONDITIONS = ("under_voltage", "freq_capped", "throttled", "soft_temp_limit")  # bits 0-3: holding now
SYSFS_THROTTLED = "sys/devices/platform/soc/soc:firmware/get_throttled"


def _bits(value: int) -> dict[str, bool]:
    return {name: bool(value >> bit & 1) for bit, name in THROTTLE_BITS.items()}


def parse_throttled(text: str | None) -> dict[str, bool] | None:
    """``throttled=0x50005`` -> {"under_voltage": True, "throttled": True, ...}; None if unparseable."""
    if not text:
        return None
    m = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    if not m:
        return None
    return _bits(int(m.group(1), 0))


def read_throttled(*, timeout: float = 2.0) -> dict[str, bool] | None:
    """Run ``vcgencmd get_throttled`` (Raspberry Pi OS only); None where it does not exist or fails."""
    exe = shutil.which("vcgencmd")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_throttled(out.stdout)


def read_throttled_sysfs(*, root: str | Path = "/") -> dict[str, bool] | None:
    """The firmware driver's ``get_throttled`` sysfs file under ``root`` (hex, ``50005`` or ``0x50005``);
    None where there is none or it does not parse."""
    raw = read_text(SYSFS_THROTTLED, root=root)
    if raw is None:
        return None
    try:
        return _bits(int(raw.strip(), 16))
    except ValueError:
        return None


def read_under_voltage_hwmon(*, root: str | Path = "/") -> bool | None:
    """Under-voltage from the ``rpi_volt`` hwmon device (``in0_lcrit_alarm``); None where there is none."""
    for dev in hwmon_devices("rpi_volt", root=root):
        raw = (read_text(str(dev / "in0_lcrit_alarm"), root="/") or "").strip()
        if raw in ("0", "1"):
            return raw == "1"
    return None


def throttle_state(*, root: str | Path = "/", vcgencmd: bool = False) -> dict[str, bool] | None:
    """The throttling / under-voltage flags this board exposes under ``root`` (see the module doc for the
    order), or None where it exposes none. ``vcgencmd``: also try the command (live system only: never
    under a recorded ``root`` other than ``/``)."""
    flags = read_throttled_sysfs(root=root)
    if flags is None and vcgencmd and str(root) == "/":
        flags = read_throttled()
    if flags is None:
        uv = read_under_voltage_hwmon(root=root)
        flags = None if uv is None else {"under_voltage": uv}
    return flags


def active_conditions(*states: dict[str, bool] | None) -> list[str] | None:
    """The conditions holding now (bits 0-3) in any of ``states``, in a fixed order; [] when none holds,
    None when no state was read at all (the board exposes no flags)."""
    read = [s for s in states if s is not None]
    if not read:
        return None
    return [c for c in ACTIVE_CONDITIONS if any(s.get(c) for s in read)]
