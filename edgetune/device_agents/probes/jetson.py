"""Jetson power, thermals and power mode: ``tegrastats`` lines, ``nvpmodel -q``, the INA3221 hwmon sysfs.

Formats handled (from recorded real outputs, see ``tests/device_agents/fixtures/``):

- tegrastats on JetPack 5/6/7 prints rails as ``NAME cur_mW/avg_mW`` (``VDD_IN 5251mW/8535mW`` on Orin
  Nano/NX, ``VDD_GPU_SOC``/``VDD_CPU_CV``/``VIN_SYS_5V0`` on AGX Orin); JetPack 4 (Nano, TX2) prints
  ``POM_5V_IN 4122/3107`` with no unit. Temperatures are ``name@47.75C``; ``-256C`` marks a disabled
  sensor. Rail names differ per module, so rails are parsed generically by their shape.
- ``nvpmodel -q`` prints ``NV Power Mode: <name>`` then the mode id (possibly after NVPM WARN lines).
- The on-module INA3221 is a hwmon device named ``ina3221`` with ``inN_label`` (rail), ``inN_input``
  (bus mV) and ``currN_input`` (mA); power = mV * mA / 1000. It misses carrier-board power.

Nothing here was run on a Jetson by us: the parsers are tested on recorded outputs and a sysfs tree
laid out as the L4T documentation describes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from edgetune.device_agents.probes.board import hwmon_devices, read_text

__all__ = ["TegrastatsSample", "parse_tegrastats_line", "input_rail", "total_power_mw", "parse_nvpmodel",
           "read_ina3221", "clocks_locked"]

_RAIL = re.compile(r"\b([A-Z][A-Z0-9_]*[A-Z0-9])\s+(\d+)(?:mW)?/(\d+)(?:mW)?(?![\w%@.])")
_TEMP = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
_RAM = re.compile(r"\bRAM\s+(\d+)/(\d+)MB")
_GPU = re.compile(r"\bGR3D_FREQ\s+(\d+)%")
_NOT_RAILS = {"RAM", "SWAP", "IRAM", "EMC_FREQ", "GR3D_FREQ", "CPU", "APE", "MTS", "NC"}  # NC: not connected
_INPUT_RAILS = ("VDD_IN", "POM_5V_IN", "VIN")  # whole-module input rail, by module family


@dataclass(frozen=True)
class TegrastatsSample:
    """One tegrastats line: rail power (current and running average, mW), temperatures (degC)."""

    rails_mw: dict[str, float] = field(default_factory=dict)
    rails_avg_mw: dict[str, float] = field(default_factory=dict)
    temps_c: dict[str, float] = field(default_factory=dict)
    ram_used_mb: int | None = None
    ram_total_mb: int | None = None
    gpu_load_pct: int | None = None


def parse_tegrastats_line(line: str) -> TegrastatsSample | None:
    """Parse one tegrastats line; None for a line that is not a tegrastats sample."""
    rails, avgs = {}, {}
    for name, cur, avg in _RAIL.findall(line):
        if name in _NOT_RAILS:
            continue
        rails[name], avgs[name] = float(cur), float(avg)
    temps = {n: float(v) for n, v in _TEMP.findall(line) if float(v) > -200}  # -256C: sensor off
    ram = _RAM.search(line)
    gpu = _GPU.search(line)
    if not rails and not temps and ram is None:
        return None
    return TegrastatsSample(rails, avgs, temps, int(ram.group(1)) if ram else None,
                            int(ram.group(2)) if ram else None, int(gpu.group(1)) if gpu else None)


def input_rail(rails: dict[str, float]) -> str | None:
    """The rail that measures the whole module's input power, if the module has one."""
    for name in _INPUT_RAILS:
        if name in rails:
            return name
    return None


def total_power_mw(rails: dict[str, float]) -> tuple[float | None, str | None]:
    """(module power in mW, how it was obtained): the input rail if present, else the sum of all rails
    (AGX Orin has no single input rail in tegrastats). Carrier-board power is never included."""
    if not rails:
        return None, None
    name = input_rail(rails)
    if name is not None:
        return rails[name], name
    return float(sum(rails.values())), "sum(" + "+".join(sorted(rails)) + ")"


def parse_nvpmodel(text: str | None) -> str | None:
    """``nvpmodel -q`` output -> ``"<name> (id <n>)"``, or None."""
    if not text:
        return None
    m = re.search(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)", text)
    if m:
        return f"{m.group(1)} (id {m.group(2)})"
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    return m.group(1) if m else None


def read_ina3221(*, root: str | Path = "/") -> dict[str, float]:
    """Rail power (mW) from every ``ina3221`` hwmon device under ``root``; empty when there is none."""
    rails: dict[str, float] = {}
    for dev in hwmon_devices("ina3221", root=root):
        for label_file in sorted(dev.glob("in*_label")):
            idx = label_file.name[2:].split("_", 1)[0]
            label = (read_text(str(label_file), root="/") or "").strip()
            mv = read_text(str(dev / f"in{idx}_input"), root="/")
            ma = read_text(str(dev / f"curr{idx}_input"), root="/")
            if not label or label.upper() == "NC" or mv is None or ma is None:
                continue
            try:
                rails[label] = float(mv) * float(ma) / 1000.0
            except ValueError:
                continue
    return rails


def clocks_locked(*, root: str | Path = "/") -> bool | None:
    """True when every CPU's min frequency equals its max (what ``jetson_clocks`` does), else False;
    None when cpufreq is not readable."""
    base = Path(root) / "sys/devices/system/cpu"
    seen = False
    for cpu in sorted(base.glob("cpu[0-9]*")):
        lo = read_text(str(cpu / "cpufreq/scaling_min_freq"), root="/")
        hi = read_text(str(cpu / "cpufreq/scaling_max_freq"), root="/")
        if lo is None or hi is None:
            continue
        seen = True
        if lo.strip() != hi.strip():
            return False
    return True if seen else None
