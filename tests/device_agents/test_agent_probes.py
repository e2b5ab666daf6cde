"""Board fingerprint, power and throttling parsers on recorded real outputs (see fixtures/README.md)."""

from __future__ import annotations

import json
import time

import pytest
from agent_helpers import FIXTURES

from edgetune.device_agents.probes import fingerprint, temperatures
from edgetune.device_agents.probes.board import (
    detect_board,
    infer_kind,
    parse_cpuinfo,
    parse_dt_list,
    parse_dt_string,
    parse_nv_tegra_release,
)
from edgetune.device_agents.probes.jetson import (
    clocks_locked,
    parse_nvpmodel,
    parse_tegrastats_line,
    read_ina3221,
    total_power_mw,
)
from edgetune.device_agents.probes.power import HwmonMonitor, RaplMonitor, pick_power_monitor
from edgetune.device_agents.probes.rpi import parse_throttled
from edgetune.device_agents.protocol import AgentSettings, RuntimeInfo


def _lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


def test_tegrastats_orin_rails_and_temperatures():
    samples = [parse_tegrastats_line(line) for line in _lines("tegrastats_agx_orin_l4t36.4.4.txt")]
    first = samples[0]
    assert first.rails_mw == {"VDD_GPU_SOC": 2412.0, "VDD_CPU_CV": 1607.0, "VIN_SYS_5V0": 4707.0}
    assert samples[1].rails_avg_mw["VIN_SYS_5V0"] == 4657.0
    assert first.temps_c == {"cpu": 52.562, "soc2": 48.437, "soc0": 49.093, "tj": 52.562, "soc1": 49.656}
    assert (first.ram_used_mb, first.ram_total_mb, first.gpu_load_pct) == (18207, 62841, 0)
    total, how = total_power_mw(first.rails_mw)  # AGX Orin: no input rail in tegrastats -> sum
    assert total == 2412 + 1607 + 4707 and how.startswith("sum(")


def test_tegrastats_thor_and_nano_formats():
    thor = parse_tegrastats_line(_lines("tegrastats_thor_l4t38.4.0.txt")[1])
    assert thor.rails_mw == {"VDD_GPU": 0.0, "VDD_CPU_SOC_MSS": 4923.0, "VIN_SYS_5V0": 4327.0}
    assert thor.temps_c["soc012"] == 36.062
    nano = [parse_tegrastats_line(line) for line in _lines("tegrastats_nano_jp4.txt")]
    assert nano[0].rails_mw == {"POM_5V_IN": 4122.0, "POM_5V_GPU": 109.0, "POM_5V_CPU": 1167.0}
    assert "IRAM" not in nano[0].rails_mw and "RAM" not in nano[0].rails_mw
    assert nano[0].temps_c["PMIC"] == 100.0 and nano[2].gpu_load_pct == 99
    assert total_power_mw(nano[1].rails_mw) == (4531.0, "POM_5V_IN")  # the module input rail
    assert parse_tegrastats_line("some unrelated log line") is None


def test_tegrastats_disabled_sensors_and_not_connected_rails_are_dropped():
    line = ("RAM 4321/62801MB (lfb 1759x4MB) SWAP 19/31400MB (cached 0MB) CPU [0%@729,0%@729] EMC_FREQ 0%@2133 "
            "GR3D_FREQ 0%@[0,0] VIC_FREQ 729 APE 174 CV0@-256C CPU@44.562C tj@44.343C GPU@-256C "
            "VDD_GPU_SOC 2340mW/2340mW VDD_CPU_CV 390mW/390mW VIN_SYS_5V0 4025mW/4025mW NC 0mW/0mW "
            "VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW")
    s = parse_tegrastats_line(line)
    assert "CV0" not in s.temps_c and "GPU" not in s.temps_c and s.temps_c["CPU"] == 44.562
    assert set(s.rails_mw) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}


@pytest.mark.parametrize("case", json.loads((FIXTURES / "device_tree.json").read_text()), ids=lambda c: c["kind"])
def test_device_tree_board_and_kind(case):
    model = parse_dt_string(case["model"])
    compatible = parse_dt_list(case["compatible"])
    board = detect_board(model, compatible, machine=case.get("machine", "aarch64"))
    assert board.vendor == case["vendor"]
    assert board.soc == case["soc"]
    assert infer_kind(board, arch=case.get("machine", "aarch64")) == case["kind"]
    if model:
        assert board.model == model and "\x00" not in board.model
    if "nv_tegra_release" in case:
        assert parse_nv_tegra_release(case["nv_tegra_release"]) == case["l4t"]


def test_kind_rules_for_other_boards():
    from edgetune.device_agents.protocol import Board

    assert infer_kind(Board(vendor="raspberry-pi", model="Raspberry Pi 400 Rev 1.0"), arch="aarch64") == "rpi4"
    assert infer_kind(Board(vendor="raspberry-pi", model="Compute Module 5 Rev 1.0"), arch="aarch64") == "rpi5"
    assert infer_kind(Board(vendor="jetson", model="x", soc="tegra194"), arch="aarch64") == "jetson-xavier"
    assert infer_kind(Board(vendor="generic", model="y"), arch="aarch64") == "arm64-cpu"


@pytest.mark.parametrize("case", json.loads((FIXTURES / "vcgencmd_get_throttled.json").read_text()),
                         ids=lambda c: c["output"].strip())
def test_vcgencmd_get_throttled(case):
    flags = parse_throttled(case["output"])
    assert sorted(k for k, v in flags.items() if v) == sorted(case["set"])
    assert parse_throttled("error=1 error_msg=\"Command not registered\"") is None


def test_nvpmodel_query():
    assert parse_nvpmodel((FIXTURES / "nvpmodel_q.txt").read_text()) == "MODE_30W (id 2)"
    assert parse_nvpmodel("NV Power Mode: 15W\n0\n") == "15W (id 0)"
    assert parse_nvpmodel("") is None


def test_cpuinfo_features_arm_and_x86():
    """/proc/cpuinfo in its documented layout (Pi 5: Cortex-A76 part 0xd0b with asimddp; Pi 4: A72 0xd08)."""
    pi5 = ("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
           "asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
           "CPU variant\t: 0x4\nCPU part\t: 0xd0b\nCPU revision\t: 1\n")
    model, flags = parse_cpuinfo(pi5)
    assert model == "Cortex-A76" and "asimddp" in flags
    pi4 = "processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n"
    model, flags = parse_cpuinfo(pi4)
    assert model == "Cortex-A72" and "asimddp" not in flags
    model, flags = parse_cpuinfo("processor : 0\nmodel name : AMD EPYC\nflags : fpu avx2 avx512f avx512_vnni\n")
    assert model == "AMD EPYC" and "avx512_vnni" in flags


def _ina3221_tree(root, rails: dict[str, tuple[int, int]]):
    dev = root / "sys/class/hwmon/hwmon1"
    dev.mkdir(parents=True)
    (dev / "name").write_text("ina3221\n")
    for i, (label, (mv, ma)) in enumerate(rails.items(), start=1):
        (dev / f"in{i}_label").write_text(label + "\n")
        (dev / f"in{i}_input").write_text(f"{mv}\n")
        (dev / f"curr{i}_input").write_text(f"{ma}\n")
    other = root / "sys/class/hwmon/hwmon0"
    other.mkdir()
    (other / "name").write_text("cpu_thermal\n")
    return dev


def test_ina3221_hwmon_power_and_monitor(tmp_path):
    _ina3221_tree(tmp_path, {"VDD_IN": (5016, 1000), "VDD_CPU_GPU_CV": (5000, 200), "VDD_SOC": (5000, 300), "NC": (0, 0)})
    rails = read_ina3221(root=tmp_path)
    assert rails == {"VDD_IN": pytest.approx(5016.0), "VDD_CPU_GPU_CV": 1000.0, "VDD_SOC": 1500.0}
    mon = pick_power_monitor(root=tmp_path)
    assert isinstance(mon, HwmonMonitor)
    mon.start()
    time.sleep(0.3)
    stats = mon.stop(runs=100)
    assert stats.source == "ina3221-hwmon" and stats.total_rail == "VDD_IN" and stats.samples >= 2
    assert stats.total_mw == pytest.approx(5016.0)
    assert stats.energy_per_inference_mj == pytest.approx(5016.0 * stats.duration_s / 100)
    assert read_ina3221(root=tmp_path / "nothing") == {}


def test_rapl_energy_counter_with_wraparound(tmp_path):
    zone = tmp_path / "sys/class/powercap/intel-rapl:0"
    zone.mkdir(parents=True)
    (tmp_path / "sys/class/powercap/intel-rapl:0:0").mkdir()  # a sub-zone: not counted twice
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("1000000\n")
    (zone / "energy_uj").write_text("900000\n")
    zones = RaplMonitor.find(root=tmp_path)
    assert zones == [zone]
    mon = RaplMonitor(zones)
    mon.start()
    (zone / "energy_uj").write_text("100000\n")  # wrapped: 200000 uJ = 200 mJ consumed
    stats = mon.stop(runs=10)
    assert stats.rails_mw["package-0"] == pytest.approx(200.0 / stats.duration_s, rel=1e-6)
    assert stats.energy_per_inference_mj == pytest.approx(20.0, rel=1e-6)


def test_thermal_zones_and_clocks(tmp_path):
    for i, (kind, milli) in enumerate([("cpu-thermal", "48312"), ("gpu-thermal", "-256000")]):
        z = tmp_path / f"sys/class/thermal/thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "type").write_text(kind)
        (z / "temp").write_text(milli)
    assert temperatures(root=tmp_path) == {"cpu-thermal": 48.312}
    for cpu, (lo, hi) in enumerate([("1510400", "1510400"), ("1510400", "1510400")]):
        f = tmp_path / f"sys/devices/system/cpu/cpu{cpu}/cpufreq"
        f.mkdir(parents=True)
        (f / "scaling_min_freq").write_text(lo)
        (f / "scaling_max_freq").write_text(hi)
    assert clocks_locked(root=tmp_path) is True
    (tmp_path / "sys/devices/system/cpu/cpu1/cpufreq/scaling_min_freq").write_text("729600")
    assert clocks_locked(root=tmp_path) is False
    assert clocks_locked(root=tmp_path / "none") is None


def test_fingerprint_of_this_machine_is_labelled_for_what_it_is():
    settings = AgentSettings(threads=1, cpus=[1], queue_size=4, max_artifact_bytes=1, max_dataset_bytes=1,
                             measure_timeout_s=1.0)
    info = fingerprint(name="here", kind=None, runtime=RuntimeInfo(name="ort"), agent=settings)
    import platform
    from pathlib import Path

    if Path("/proc/device-tree/model").exists() or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("checks the x86 development / CI machine")
    assert info.board.vendor == "generic" and info.kind == info.detected_kind == "x86-cpu"
    assert info.cpu.vnni == bool({"avx512_vnni", "avx_vnni"} & set(info.cpu.features))
    assert info.cpu.logical_cores >= 1 and info.memory_bytes > 0 and info.cpu.model != "unknown"
    assert info.power_mode is None and info.throttling is None
    local = fingerprint(name="here", kind="local-cpu", runtime=RuntimeInfo(name="ort"), agent=settings)
    assert local.kind == "local-cpu" and local.detected_kind == "x86-cpu"
