"""Raspberry Pi throttling: ``vcgencmd get_throttled`` prints ``throttled=0x50005``.

Bit meanings as documented by Raspberry Pi (``vcgencmd`` page of the Raspberry Pi documentation):
0 under-voltage detected, 1 ARM frequency capped, 2 currently throttled, 3 soft temperature limit
active; 16-19 the same conditions "has occurred since boot". Not run on a Pi by us: the parser is
tested on the documented values and recorded outputs.
"""

from __future__ import annotations

import re
import shutil
import subprocess

__all__ = ["THROTTLE_BITS", "parse_throttled", "read_throttled"]

THROTTLE_BITS = {
    0: "under_voltage", 1: "freq_capped", 2: "throttled", 3: "soft_temp_limit",
    16: "under_voltage_occurred", 17: "freq_capped_occurred", 18: "throttled_occurred",
    19: "soft_temp_limit_occurred",
}


def parse_throttled(text: str | None) -> dict[str, bool] | None:
    """``throttled=0x50005`` -> {"under_voltage": True, "throttled": True, ...}; None if unparseable."""
    if not text:
        return None
    m = re.search(r"throttled=(0x[0-9a-fA-F]+|\d+)", text)
    if not m:
        return None
    value = int(m.group(1), 0)
    return {name: bool(value >> bit & 1) for bit, name in THROTTLE_BITS.items()}


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
