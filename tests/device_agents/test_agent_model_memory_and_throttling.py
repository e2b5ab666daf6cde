"""Measurements that mean what they say, on the agent side: the model's own memory apart from the process
peak, and the Raspberry Pi throttling / under-voltage flags read around the measurement.

No Pi is attached here: the flags are the contents of the firmware's ``get_throttled`` sysfs file as
people recorded them on real boards (``fixtures/rpi_sysfs_get_throttled.json``), laid out in a directory
that a real agent reads through ``--sensor-root``; the parsing code is the one a Pi runs. Not run on a
real board.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from agent_helpers import FAST, FIXTURES, one_conv_onnx, start_agent

from edgetune.device_agents.probes import active_conditions, fingerprint, temperatures, throttle_state
from edgetune.device_agents.probes.rpi import SYSFS_THROTTLED, parse_throttled, read_under_voltage_hwmon
from edgetune.device_agents.protocol import AgentSettings, RuntimeInfo

RECORDED = json.loads((FIXTURES / "rpi_sysfs_get_throttled.json").read_text())
BIG_WEIGHTS = 32768 * 256 * 4  # bytes of the big model's MatMul initializer (33.5 MB)


def sensor_tree(root: Path, *, get_throttled: str, temp_milli_c: int | None = None) -> Path:
    """A directory laid out like / with a recorded ``get_throttled`` (and a thermal zone)."""
    f = root / SYSFS_THROTTLED
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text(get_throttled)
    if temp_milli_c is not None:
        zone = root / "sys/class/thermal/thermal_zone0"
        zone.mkdir(parents=True, exist_ok=True)
        (zone / "type").write_text("cpu-thermal\n")
        (zone / "temp").write_text(f"{temp_milli_c}\n")
    return root


@pytest.mark.parametrize("entry", RECORDED, ids=[e["content"].strip() for e in RECORDED])
def test_recorded_sysfs_throttle_values_parse_to_the_documented_bits(tmp_path, entry):
    flags = throttle_state(root=sensor_tree(tmp_path, get_throttled=entry["content"]))
    assert sorted(k for k, on in flags.items() if on) == sorted(entry["set"])
    assert active_conditions(flags) == entry["active"]  # bits 0-3 only: "occurred since boot" does not flag
    # the same bit field as vcgencmd's `throttled=0x...`
    assert flags == parse_throttled(f"throttled=0x{entry['content'].strip()}")


def test_rpi_volt_hwmon_gives_under_voltage_where_no_get_throttled_file_exists(tmp_path):
    dev = tmp_path / "sys/class/hwmon/hwmon1"  # the upstream raspberrypi-hwmon driver's device
    dev.mkdir(parents=True)
    (dev / "name").write_text("rpi_volt\n")
    (dev / "in0_lcrit_alarm").write_text("1\n")
    assert read_under_voltage_hwmon(root=tmp_path) is True
    assert throttle_state(root=tmp_path) == {"under_voltage": True}
    assert active_conditions(throttle_state(root=tmp_path)) == ["under_voltage"]
    (dev / "in0_lcrit_alarm").write_text("0\n")
    assert active_conditions(throttle_state(root=tmp_path)) == []
    assert throttle_state(root=tmp_path / "nothing") is None  # no flags exposed: None, never "not throttled"
    assert active_conditions(None, None) is None
    assert active_conditions(None, {"throttled": True}) == ["throttled"]  # before unknown, after throttled


def test_fingerprint_reads_the_volatile_sensors_under_the_sensor_root(tmp_path):
    settings = AgentSettings(threads=1, cpus=[], queue_size=1, max_artifact_bytes=1, max_dataset_bytes=1,
                             measure_timeout_s=1.0)
    live = fingerprint(name="here", kind="local-cpu", runtime=RuntimeInfo(name="ort"), agent=settings)
    root = sensor_tree(tmp_path, get_throttled="80008\n", temp_milli_c=81234)
    replayed = fingerprint(name="here", kind="local-cpu", runtime=RuntimeInfo(name="ort"), agent=settings,
                           sensors=root)
    assert replayed.throttling["soft_temp_limit"] is True and replayed.throttling["under_voltage"] is False
    assert replayed.temperatures_c == {"cpu-thermal": 81.234} == temperatures(root=root)
    assert replayed.board == live.board and replayed.cpu == live.cpu  # what the machine is stays this one's


def _big_onnx(path: Path) -> Path:
    """det-s's input, one conv, then a MatMul with a 33.5 MB initializer."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    g = numpy_helper.from_array((np.random.default_rng(1).standard_normal((32768, 256)) * 0.01).astype(np.float32), "g")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["c"], strides=[4, 4]), helper.make_node("Flatten", ["c"], ["f"]),
         helper.make_node("MatMul", ["f", "g"], ["out"])], "big",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 256, 256])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 256])], initializer=[w, g])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_model_memory_apart_from_the_process_peak_and_throttling_read_around_the_measurement(tmp_path):
    """A real agent reading a recorded under-voltage state: every measurement says it was throttled, and
    the model's own memory grows with its weights (33.5 MB more for the big model) while a one-conv model's
    stays small; the process peak is reported beside them."""
    sensors = sensor_tree(tmp_path / "sensors", get_throttled=RECORDED[2]["content"])  # 50005: under-voltage now
    agent = start_agent(tmp_path / "agent", args=("--sensor-root", str(sensors), "--max-artifact-mb", "64"))
    try:
        with agent.client(measure_timeout=120) as c:
            small = c.measure(one_conv_onnx(tmp_path / "small.onnx"), latency=FAST)
            big = c.measure(_big_onnx(tmp_path / "big.onnx"), latency={**FAST, "power_sample_ms": 20})
            (sensors / SYSFS_THROTTLED).write_text(RECORDED[3]["content"])  # the supply recovered: 0
            calm = c.measure(tmp_path / "small.onnx", latency=FAST)
    finally:
        agent.stop()
    for m in (small, big):
        assert m.throttled == ["under_voltage", "throttled"]
        assert m.device.throttling["under_voltage_occurred"] is True and m.throttling_after["throttled"] is True
    assert calm.throttled == [] and calm.throttling_after["under_voltage"] is False
    assert 0 < small.model_rss_bytes <= small.run_rss_bytes
    assert big.model_rss_bytes - small.model_rss_bytes == pytest.approx(BIG_WEIGHTS, rel=0.3)
    assert big.run_rss_bytes >= big.model_rss_bytes
    for m in (small, big):  # the process peak holds the interpreter and the runtime besides the model
        assert m.peak_rss_bytes > m.model_rss_bytes + 20e6


def test_the_energy_sampling_interval_reaches_the_power_monitor(tmp_path):
    """``latency.power_sample_ms`` (a sweep's ``search.energy_sample_ms``) sets how often a sampling monitor
    reads its sensor; unset, each keeps its own default. INA3221 tree as L4T documents it (not a real board)."""
    from edgetune.device_agents.probes.power import HwmonMonitor, pick_power_monitor
    from edgetune.device_agents.protocol import LatencySpec

    dev = tmp_path / "sys/class/hwmon/hwmon1"
    dev.mkdir(parents=True)
    (dev / "name").write_text("ina3221\n")
    for f, v in {"in1_label": "VDD_IN", "in1_input": "5016", "curr1_input": "1000"}.items():
        (dev / f).write_text(v + "\n")
    every_20 = pick_power_monitor(root=tmp_path, interval_ms=20)
    assert isinstance(every_20, HwmonMonitor) and every_20.interval == pytest.approx(0.02)
    assert pick_power_monitor(root=tmp_path).interval == pytest.approx(0.05)
    assert LatencySpec().power_sample_ms is None
    with pytest.raises(ValueError):
        LatencySpec(power_sample_ms=0)
