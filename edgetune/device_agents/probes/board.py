"""Which board is this: device-tree model and compatible strings, CPU model and features, OS, device kind.

Every reader takes ``root`` (default ``/``) so the parsers run in tests on recorded files from real
boards. Board detection follows the documented device-tree strings: Jetson modules report e.g.
``NVIDIA Orin Nano Developer Kit`` / ``NVIDIA Jetson Nano Developer Kit`` with an ``nvidia,tegra234``
(Orin), ``tegra194`` (Xavier), ``tegra210`` (Nano/TX1) or ``tegra264`` (Thor) compatible entry;
Raspberry Pis report ``Raspberry Pi 5 Model B Rev 1.0`` with ``brcm,bcm2712`` (Pi 5) or ``bcm2711`` (Pi 4).
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import sys
from pathlib import Path

from edgetune.device_agents.protocol import Board, CPUInfo, OSInfo

__all__ = ["read_text", "parse_dt_string", "parse_dt_list", "detect_board", "parse_cpuinfo", "cpu_info",
           "os_info", "parse_nv_tegra_release", "infer_kind", "memory_bytes", "board_from_root"]

_TEGRA = {"tegra234": "orin", "tegra194": "xavier", "tegra210": "nano", "tegra186": "tx2", "tegra264": "thor"}
_BCM = {"bcm2712": "5", "bcm2711": "4", "bcm2837": "3", "bcm2836": "2", "bcm2835": "1"}
# ARM "CPU part" ids (implementer 0x41) of the cores found on edge boards
_ARM_PARTS = {0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57",
              0xD08: "Cortex-A72", 0xD09: "Cortex-A73", 0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76",
              0xD0C: "Neoverse-N1", 0xD0D: "Cortex-A77", 0xD40: "Neoverse-V1", 0xD41: "Cortex-A78",
              0xD42: "Cortex-A78AE", 0xD44: "Cortex-X1", 0xD46: "Cortex-A510", 0xD47: "Cortex-A710",
              0xD4B: "Cortex-A78C", 0xD4F: "Neoverse-V2", 0xD84: "Neoverse-V3"}
# CPU flags worth recording for int8 speed: ARM dot product / int8 matmul, x86 VNNI / AVX-512 / AMX
_INTERESTING = ("asimddp", "i8mm", "bf16", "sve", "sve2", "asimdhp", "fphp", "avx2", "avx512f", "avx512_vnni",
                "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16", "fma", "neon", "vfpv4")


def read_text(path: str, *, root: str | Path = "/") -> str | None:
    """Contents of ``root/path`` (bytes decoded leniently), or None if unreadable."""
    try:
        return (Path(root) / path.lstrip("/")).read_bytes().decode("utf-8", "replace")
    except OSError:
        return None


def hwmon_devices(name: str, *, root: str | Path = "/") -> list[Path]:
    """The ``sys/class/hwmon`` device folders under ``root`` whose ``name`` file says ``name`` (sorted)."""
    base = Path(root) / "sys/class/hwmon"
    if not base.is_dir():
        return []
    return [dev for dev in sorted(base.iterdir()) if (read_text(str(dev / "name"), root="/") or "").strip() == name]


def parse_dt_string(raw: str | None) -> str | None:
    """A device-tree string property: NUL-terminated, sometimes with trailing whitespace."""
    if raw is None:
        return None
    value = raw.split("\x00", 1)[0].strip()
    return value or None


def parse_dt_list(raw: str | None) -> list[str]:
    """A device-tree string-list property (``compatible``): NUL-separated."""
    return [s.strip() for s in (raw or "").split("\x00") if s.strip()]


def detect_board(model: str | None, compatible: list[str], *, machine: str, dmi_product: str | None = None) -> Board:
    """Board vendor (jetson | raspberry-pi | generic), model string and SoC."""
    compat = " ".join(compatible).lower()
    low = (model or "").lower()
    soc = next((c.split(",", 1)[1] for c in compatible if c.lower().startswith(("nvidia,tegra", "brcm,bcm"))), None)
    if "nvidia,tegra" in compat or "jetson" in low or (low.startswith("nvidia") and "developer kit" in low):
        return Board(vendor="jetson", model=model or "NVIDIA Jetson (unknown model)", soc=soc, compatible=compatible)
    if low.startswith(("raspberry pi", "compute module")) or "raspberrypi," in compat:
        return Board(vendor="raspberry-pi", model=model or "Raspberry Pi (unknown model)", soc=soc, compatible=compatible)
    return Board(vendor="generic", model=model or dmi_product or f"generic {machine}", soc=soc, compatible=compatible)


def infer_kind(board: Board, *, arch: str) -> str:
    """The device kind the search space is built for: jetson-orin, rpi5, rpi4, x86-cpu, arm64-cpu, ..."""
    if board.vendor == "jetson":
        family = _TEGRA.get((board.soc or "").lower())
        low = board.model.lower()
        if family is None:
            family = next((f for f in ("orin", "xavier", "thor", "tx2", "nano") if f in low), None)
        return f"jetson-{family}" if family else "jetson"
    if board.vendor == "raspberry-pi":
        m = re.search(r"(?:raspberry pi|compute module)\s+(\d)", board.model.lower())
        gen = m.group(1) if m else _BCM.get((board.soc or "").lower())
        if gen is None and "zero 2" in board.model.lower():
            gen = "3"
        return f"rpi{gen}" if gen else "rpi"
    a = arch.lower()
    if a in ("x86_64", "amd64", "i686", "x86"):
        return "x86-cpu"
    if a in ("aarch64", "arm64"):
        return "arm64-cpu"
    return f"{a}-cpu"


def parse_cpuinfo(text: str) -> tuple[str | None, list[str]]:
    """(CPU model name, feature flags) from ``/proc/cpuinfo`` (x86 ``model name``/``flags``; ARM
    ``CPU part``/``Features``)."""
    model = None
    flags: list[str] = []
    parts: list[int] = []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if key == "model name" and model is None:
            model = value
        elif key in ("flags", "features") and not flags:
            flags = value.split()
        elif key == "cpu part":
            with contextlib.suppress(ValueError):
                parts.append(int(value, 16))
    if model is None and parts:
        names = sorted({_ARM_PARTS.get(p, f"ARM part 0x{p:x}") for p in parts})
        model = " + ".join(names)
    return model, flags


def cpu_info(*, root: str | Path = "/") -> CPUInfo:
    text = read_text("proc/cpuinfo", root=root) or ""
    model, flags = parse_cpuinfo(text)
    fl = set(flags)
    local = str(root) == "/"
    try:
        allowed = sorted(os.sched_getaffinity(0)) if local else []
    except (AttributeError, OSError):
        allowed = []
    logical = (os.cpu_count() or 1) if local else max(1, len(re.findall(r"^processor\s*:", text, re.M)))
    governor = read_text("sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", root=root)
    return CPUInfo(
        model=model or platform.processor() or "unknown", arch=platform.machine() if local else "",
        logical_cores=logical,
        allowed_cpus=allowed, features=sorted(fl & set(_INTERESTING)),
        dotprod="asimddp" in fl, i8mm="i8mm" in fl, vnni=bool(fl & {"avx512_vnni", "avx_vnni"}),
        avx512="avx512f" in fl, governor=governor.strip() if governor else None,
    )


def parse_nv_tegra_release(text: str | None) -> str | None:
    """``# R36 (release), REVISION: 4.4, ...`` -> ``R36.4.4`` (the L4T release; JetPack 6.2.1 = L4T 36.4.4)."""
    if not text:
        return None
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    return f"R{m.group(1)}.{m.group(2)}" if m else None


def os_info(*, root: str | Path = "/") -> OSInfo:
    name = "unknown"
    release = read_text("etc/os-release", root=root)
    if release:
        m = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', release, re.M)
        name = m.group(1) if m else name
    return OSInfo(name=name, kernel=platform.release(), python=sys.version.split()[0],
                  l4t=parse_nv_tegra_release(read_text("etc/nv_tegra_release", root=root)))


def memory_bytes(*, root: str | Path = "/") -> int:
    text = read_text("proc/meminfo", root=root) or ""
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.M)
    return int(m.group(1)) * 1024 if m else 0


def board_from_root(*, root: str | Path = "/") -> Board:
    model = parse_dt_string(read_text("proc/device-tree/model", root=root))
    compatible = parse_dt_list(read_text("proc/device-tree/compatible", root=root))
    dmi = parse_dt_string(read_text("sys/class/dmi/id/product_name", root=root))
    return detect_board(model, compatible, machine=platform.machine(), dmi_product=dmi)
