"""Power monitors around a timed loop: Jetson INA3221 (hwmon sysfs, fine-grained), ``tegrastats``
(coarse, any Jetson), x86 RAPL energy counters (``/sys/class/powercap``, when readable).

``pick_power_monitor()`` returns the best one the device has, or None. Energy per inference is the
mean power over the loop times its duration divided by the runs: it needs long, steady loops (tegrastats
samples every 100 ms by default). The sampling interval is the request's ``latency.power_sample_ms`` (the
sweep's ``search.energy_sample_ms``); unset, the INA3221 hwmon is read every 50 ms and tegrastats asked
for a line every 100 ms. RAPL is read at the start and the end of the loop only (its counters integrate). Not run on a Jetson by us (no board here); RAPL is not readable on the
development machine either, so the monitors are exercised in tests on recorded sysfs trees.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from pathlib import Path

from edgetune.device_agents.probes.board import read_text
from edgetune.device_agents.probes.jetson import parse_tegrastats_line, read_ina3221, total_power_mw
from edgetune.device_agents.protocol import PowerStats

__all__ = ["PowerMonitor", "HwmonMonitor", "TegrastatsMonitor", "RaplMonitor", "pick_power_monitor",
           "available_power_sensors"]


class PowerMonitor(ABC):
    """Measures power between :meth:`start` and :meth:`stop`; one use per instance."""

    source = ""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self, *, runs: int) -> PowerStats | None:
        """Stop and summarise; ``runs`` inferences happened in between (for energy per inference)."""


def _summarise(source: str, rails: dict[str, list[float]], duration: float, runs: int, note: str = "") -> PowerStats | None:
    if not rails or duration <= 0:
        return None
    avg = {k: sum(v) / len(v) for k, v in rails.items() if v}
    total, how = total_power_mw(avg)
    energy = total * duration / runs if total is not None and runs > 0 else None
    return PowerStats(source=source, rails_mw={k: round(v, 3) for k, v in avg.items()}, total_mw=total,
                      total_rail=how, energy_per_inference_mj=energy,
                      samples=max(len(v) for v in rails.values()), duration_s=duration, note=note)


class _Sampler(PowerMonitor):
    """A background thread calling ``_sample()`` every ``interval`` seconds."""

    def __init__(self, interval: float):
        self.interval = interval
        self._rails: dict[str, list[float]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _sample(self) -> dict[str, float]:
        raise NotImplementedError

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            for k, v in self._sample().items():
                self._rails.setdefault(k, []).append(v)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._thread = threading.Thread(target=self._loop, name=f"power-{self.source}", daemon=True)
        self._thread.start()

    def stop(self, *, runs: int) -> PowerStats | None:
        duration = time.perf_counter() - self._t0
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        return _summarise(self.source, self._rails, duration, runs)


class HwmonMonitor(_Sampler):
    source = "ina3221-hwmon"

    def __init__(self, *, root: str | Path = "/", interval: float = 0.05):
        super().__init__(interval)
        self.root = root

    def _sample(self) -> dict[str, float]:
        return read_ina3221(root=self.root)


class TegrastatsMonitor(PowerMonitor):
    """Runs ``tegrastats --interval <ms>`` and parses its lines while the loop runs."""

    source = "tegrastats"

    def __init__(self, *, exe: str = "tegrastats", interval_ms: int = 100):
        self.exe, self.interval_ms = exe, interval_ms
        self._rails: dict[str, list[float]] = {}
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            sample = parse_tegrastats_line(line)
            if sample is not None:
                for k, v in sample.rails_mw.items():
                    self._rails.setdefault(k, []).append(v)

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._proc = subprocess.Popen([self.exe, "--interval", str(self.interval_ms)], stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
        self._thread = threading.Thread(target=self._read, name="power-tegrastats", daemon=True)
        self._thread.start()

    def stop(self, *, runs: int) -> PowerStats | None:
        duration = time.perf_counter() - self._t0
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread is not None:
            self._thread.join(timeout=2)
        return _summarise(self.source, self._rails, duration, runs,
                          note=f"tegrastats every {self.interval_ms} ms; module rails only, no carrier board")


class RaplMonitor(PowerMonitor):
    """Package energy from RAPL counters (``energy_uj``, wrapping at ``max_energy_range_uj``)."""

    source = "rapl"

    def __init__(self, zones: list[Path]):
        self.zones = zones
        self._start: dict[Path, int] = {}
        self._t0 = 0.0

    @staticmethod
    def find(*, root: str | Path = "/") -> list[Path]:
        base = Path(root) / "sys/class/powercap"
        zones = sorted(p for p in base.glob("intel-rapl:[0-9]*") if ":" not in p.name.split(":", 1)[1])
        return [z for z in zones if read_text(str(z / "energy_uj"), root="/") is not None]

    def _read(self, zone: Path) -> int:
        return int((read_text(str(zone / "energy_uj"), root="/") or "0").strip())

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._start = {z: self._read(z) for z in self.zones}

    def stop(self, *, runs: int) -> PowerStats | None:
        duration = time.perf_counter() - self._t0
        rails: dict[str, list[float]] = {}
        for z, e0 in self._start.items():
            e1 = self._read(z)
            if e1 < e0:
                e1 += int((read_text(str(z / "max_energy_range_uj"), root="/") or "0").strip() or 0)
            name = (read_text(str(z / "name"), root="/") or z.name).strip()
            rails[name] = [(e1 - e0) / 1e3 / duration] if duration > 0 else []
        return _summarise(self.source, rails, duration, runs, note="CPU package energy (RAPL); whole package, "
                          "other processes included")


def available_power_sensors(*, root: str | Path = "/") -> list[str]:
    found = []
    if read_ina3221(root=root):
        found.append("ina3221-hwmon")
    if str(root) == "/" and shutil.which("tegrastats"):
        found.append("tegrastats")
    if RaplMonitor.find(root=root):
        found.append("rapl")
    return found


def pick_power_monitor(*, root: str | Path = "/", interval_ms: int | None = None) -> PowerMonitor | None:
    """The finest power monitor available here, or None (no sensor); ``interval_ms``: how often a sampling
    monitor reads its sensor (None: its default)."""
    if read_ina3221(root=root):
        return HwmonMonitor(root=root) if interval_ms is None else HwmonMonitor(root=root, interval=interval_ms / 1e3)
    exe = shutil.which("tegrastats") if str(root) == "/" else None
    if exe:
        return TegrastatsMonitor(exe=exe) if interval_ms is None else TegrastatsMonitor(exe=exe, interval_ms=interval_ms)
    zones = RaplMonitor.find(root=root)
    return RaplMonitor(zones) if zones else None
