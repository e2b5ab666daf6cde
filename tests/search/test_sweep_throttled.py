"""A sweep that meets a throttled measurement records the flag.

No Raspberry Pi is attached here, so the agent is a real local agent started with ``--sensor-root``: it
reads its throttling flags from a directory holding the Pi firmware's ``get_throttled`` sysfs file with
values recorded on real boards (``tests/device_agents/fixtures/rpi_sysfs_get_throttled.json``), through
the same parsing code a Pi runs. Not run on a real board.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from edgetune.device_agents.probes.rpi import SYSFS_THROTTLED
from edgetune.search.tracking import Tracker
from edgetune.search.wiring import load_front, prepare_sweep

RECORDED = {e["content"].strip(): e["content"] for e in json.loads(
    (Path(__file__).parents[1] / "device_agents" / "fixtures" / "rpi_sysfs_get_throttled.json").read_text())}


def test_a_sweep_that_meets_a_throttled_measurement_retakes_it_then_records_the_flag(tmp_path, make_sweep,
                                                                                      sweep_workdir):
    """The fp32 trial meets an under-voltage that lasts: measured again after the cool-down, still throttled,
    kept with the flag (a throttling that clears during the cool-down, whose retake is kept unflagged:
    ``test_measurement_honesty.py``)."""
    from rich.console import Console

    from edgetune.device_agents.local import start_local_agents
    from edgetune.search._cli import front_table

    sensors = tmp_path / "sensors"  # laid out like /
    flags = sensors / SYSFS_THROTTLED
    flags.parent.mkdir(parents=True)
    flags.write_text(RECORDED["50005"])  # under-voltage, currently throttled
    path = make_sweep(tmp_path, name="throttled", trials=1, ratios=(0.0,),
                      search={"throttle_retry": True, "throttle_cooldown_s": 0, "energy_sample_ms": 20})
    with start_local_agents(1, threads=1, extra_args=("--sensor-root", str(sensors))) as agents:
        sweep, space, cfg = prepare_sweep(path, workdir=sweep_workdir, local_agents=agents)
        assert sweep.hooks._measure_kwargs()["power_sample_ms"] == 20  # search.energy_sample_ms, sent to the agent
        real_measure, seen = sweep.hooks.measure, []

        def measure(artifact, device, runtime=None):  # the agent's answers, as the runner gets them
            seen.append(real_measure(artifact, device, runtime))
            return seen[-1]

        sweep.hooks.measure = measure
        sweep.run(space)
        flags.write_text(RECORDED["0"])  # the supply recovered: the next measurement is clean
        with agents.fleet() as fleet:
            assert fleet.client("local-0").info().throttling["under_voltage"] is False

    assert [m.throttled for m in seen] == [["under_voltage", "throttled"]] * 2  # measured, cooled down, again
    trials = [t for t in sweep.study.get_trials() if t.state.is_finished()]  # the other baselines wait
    assert [t.state.name for t in trials] == ["COMPLETE"]
    kept = trials[0].user_attrs["record"]  # the Optuna user attrs
    assert kept["throttled"] == {"local": ["under_voltage", "throttled"]} and kept["throttle_retries"] == 1
    assert any("still throttled: kept with the flag" in w for w in kept["warnings"])
    fp = kept["fingerprints"]["local"]
    assert fp["throttling"]["under_voltage"] and fp["throttling_after"]["throttled"]
    assert fp["throttled"] == ["under_voltage", "throttled"] and "clocks_locked" in fp and "temperatures_after_c" in fp
    assert kept["values"]["model_mem_mb@local"] > 0 and kept["values"]["run_mem_mb@local"] > 0
    assert kept["values"]["peak_mem_mb@local"] > kept["values"]["model_mem_mb@local"]

    tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.name, sweep=cfg.name, readonly=True)
    runs = tracker.child_runs()
    tags0 = runs[0].data.tags
    assert tags0["throttled"] == "true" and tags0["throttled.local"] == "under_voltage,throttled"
    assert tags0["fingerprint.local.throttled"] == "under_voltage,throttled" and tags0["throttle_retries"] == "1"
    assert json.loads(tags0["device.local"])["throttling_after"]["under_voltage"] is True
    assert runs[0].data.metrics["model_mem_mb.local"] == kept["values"]["model_mem_mb@local"]
    assert "fingerprints.json" in {f.path for f in tracker.client.list_artifacts(runs[0].info.run_id)}

    df, keys, goals, _ = load_front(path)  # what `edgetune front --all / --csv / --json` print
    assert df.set_index("trial").loc[0, "throttled"] == "local: under_voltage,throttled"
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(front_table(df, keys, goals, title="t", only_front=False))
    text = console.export_text()
    assert "[THROTTLED local: under_voltage,throttled]" in text and "model MB" in text
