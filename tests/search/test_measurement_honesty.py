"""The controller's side of honest measurements: the throttling rule (a throttled measurement is taken
again once after a cool-down, then kept with a flag), the full fingerprint and the model's memory in the
record, MLflow and ``edgetune front``, and a recovery cut short by ``budget_s`` said loudly.

The measurements here are the agent's answers as JSON (``Measurement``), fed to the runner through
hooks that return them in turn; the whole path through a real agent and a real sweep is
``test_sweep_throttled.py``.
"""

from __future__ import annotations

import pytest

from edgetune.device_agents.protocol import Measurement
from edgetune.search.records import TrialRecord, fingerprint_tags
from edgetune.search.runner import (
    MeasureAttempts,
    SweepHooks,
    device_fingerprint,
    measure_unthrottled,
    recovery_cut,
)

FLAGS_50005 = {"under_voltage": True, "freq_capped": False, "throttled": True, "soft_temp_limit": False,
               "under_voltage_occurred": True, "freq_capped_occurred": False, "throttled_occurred": True,
               "soft_temp_limit_occurred": False}
CALM = dict.fromkeys(FLAGS_50005, False)


def measurement(throttled: list[str] | None, *, before=None, after=None, p50: float = 5.0) -> Measurement:
    """An agent's answer for a Pi 5 (fields as the agent fills them)."""
    stats = {"n": 20, "p50_ms": p50, "p90_ms": p50, "p99_ms": p50, "mean_ms": p50, "std_ms": 0.1, "min_ms": p50,
             "max_ms": p50, "ci95_low_ms": p50 - 0.1, "ci95_high_ms": p50 + 0.1, "ci_coverage": 0.95, "total_s": 0.1}
    device = {"name": "pi", "kind": "rpi5", "detected_kind": "rpi5", "edgetune_version": "0",
              "board": {"vendor": "raspberry-pi", "model": "Raspberry Pi 5 Model B Rev 1.0", "soc": "bcm2712"},
              "os": {"name": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.6.51+rpt-rpi-2712", "python": "3.11.2"},
              "cpu": {"model": "Cortex-A76", "arch": "aarch64", "logical_cores": 4, "features": ["asimddp"],
                      "governor": "performance"},
              "memory_bytes": 8 << 30, "runtime": {"name": "ort", "version": "1.31.1"},
              "agent": {"threads": 1, "queue_size": 4, "max_artifact_bytes": 1, "max_dataset_bytes": 1,
                        "measure_timeout_s": 900.0},
              "clocks_locked": False, "temperatures_c": {"cpu-thermal": 71.5},
              "throttling": before if before is not None else (FLAGS_50005 if throttled else CALM)}
    return Measurement.model_validate({
        "artifact": "a" * 64, "runtime": {"name": "ort", "version": "1.31.1", "providers_used": ["CPUExecutionProvider"]},
        "threads": 1, "cpus": [3], "latency": stats, "device": device, "started_at": 0.0, "finished_at": 1.0,
        "wall_s": 1.0, "peak_rss_bytes": 160_000_000, "model_rss_bytes": 12_000_000, "run_rss_bytes": 15_000_000,
        "temperatures_after_c": {"cpu-thermal": 80.1},
        "throttling_after": after if after is not None else (FLAGS_50005 if throttled else CALM), "throttled": throttled})


class ReplayHooks(SweepHooks):
    """Answers the recorded measurements in turn; the cool-down is recorded, never slept."""

    def __init__(self, answers, *, retry=True, cooldown=30.0):
        self.answers, self.retry, self.cooldown, self.calls = list(answers), retry, cooldown, 0

    def devices_for_objectives(self):
        return ["pi"]

    def compress(self, plan):
        raise NotImplementedError

    def measure(self, artifact, device, runtime=None):
        self.calls += 1
        return self.answers.pop(0)

    def throttle_policy(self):
        return self.retry, self.cooldown


@pytest.mark.parametrize(("answers", "retry", "calls", "slept", "flag", "kept_p50"), [
    ([["under_voltage", "throttled"], []], True, 2, [30.0], None, 6.0),  # cooled down: the retake is kept, clean
    ([["under_voltage", "throttled"], ["throttled"]], True, 2, [30.0], ["throttled"], 6.0),  # still: kept, flagged
    ([["soft_temp_limit"]], False, 1, [], ["soft_temp_limit"], 5.0),  # retake off: the first is kept, flagged
    ([None], True, 1, [], None, 5.0),  # the board exposes no flags: never retaken, never flagged
    ([[]], True, 1, [], None, 5.0),  # flags exposed, none held
])
def test_a_throttled_measurement_is_taken_again_once_then_kept_with_its_flag(answers, retry, calls, slept, flag,
                                                                             kept_p50):
    hooks = ReplayHooks([measurement(t, p50=5.0 + i) for i, t in enumerate(answers)], retry=retry)
    attempts, sleeps = MeasureAttempts(), []
    m = measure_unthrottled(hooks, None, "pi", None, attempts, sleep=sleeps.append)
    assert hooks.calls == calls and sleeps == slept and m.latency.p50_ms == kept_p50
    assert attempts.throttle_retries == len(slept)
    assert attempts.throttled == ({"pi": flag} if flag else {})
    rec = attempts.on(TrialRecord())
    assert rec.throttled == attempts.throttled and rec.throttle_retries == len(slept)
    assert any("throttled while measuring" in w for w in rec.warnings) == bool(flag or slept)


def test_the_full_fingerprint_and_the_model_memory_reach_the_record_and_mlflow():
    from edgetune.objectives import measurement_values

    m = measurement(["under_voltage", "throttled"])
    fp = device_fingerprint(m.model_dump(exclude={"latency": {"samples_ms"}}))
    assert fp["throttling"]["under_voltage"] and fp["throttling_after"]["throttled"]
    assert fp["throttled"] == ["under_voltage", "throttled"] and fp["clocks_locked"] is False
    assert fp["governor"] == "performance" and fp["soc"] == "bcm2712" and fp["kernel"].startswith("6.6")
    assert fp["temperatures_c"] == {"cpu-thermal": 71.5} and fp["temperatures_after_c"] == {"cpu-thermal": 80.1}
    values = measurement_values(m, "pi")
    assert values["model_mem_mb@pi"] == 12.0 and values["run_mem_mb@pi"] == 15.0 and values["peak_mem_mb@pi"] == 160.0
    rec = TrialRecord(values=values, fingerprints={"pi": fp}, throttled={"pi": ["under_voltage", "throttled"]},
                      throttle_retries=1)
    params, metrics, tags, files = rec.mlflow(number=4, state="COMPLETE", sampler="tpe")
    assert metrics["model_mem_mb.pi"] == 12.0 and metrics["run_mem_mb.pi"] == 15.0 and metrics["peak_mem_mb.pi"] == 160.0
    assert tags["throttled"] == "true" and tags["throttled.pi"] == "under_voltage,throttled"
    assert tags["throttle_retries"] == "1"
    assert tags["fingerprint.pi.clocks_locked"] == "false" and tags["fingerprint.pi.governor"] == "performance"
    assert tags["fingerprint.pi.throttling"] == "under_voltage,throttled,under_voltage_occurred,throttled_occurred"
    assert tags["fingerprint.pi.max_temp_c"] == "80.1"
    assert files["fingerprints.json"]["pi"]["throttling_after"]["under_voltage"] is True
    assert len(tags["device.pi"]) < 8000  # MLflow's tag limit: the whole fingerprint fits
    calm = TrialRecord(values=values, fingerprints={"pi": device_fingerprint(measurement([]).model_dump())})
    assert calm.mlflow(number=5, state="COMPLETE", sampler="tpe")[2]["throttled"] == "false"
    blind = TrialRecord(values=values, fingerprints={"x86": {"cpu": "AMD EPYC", "throttled": None}})
    assert blind.mlflow(number=6, state="COMPLETE", sampler="tpe")[2]["throttled"] == "unknown"  # no flags exposed
    assert fingerprint_tags("x86", {"throttled": None, "power_mode": None}) == {}  # not reported: left out


def test_a_recovery_cut_short_by_budget_s_is_named_in_the_record():
    per_config = {"recovery": {"budget_s": 60.0, "result": {"steps": 120, "steps_asked": 220, "stopped": "budget_s"}}}
    cut = recovery_cut(per_config)
    assert (cut["steps"], cut["steps_asked"], cut["budget_s"]) == (120, 220, 60.0)
    assert "120 of 220 steps" in cut["message"] and "budget_s" in cut["message"]
    elastic = {"recovery": {"budget_s": 300.0, "result": {"mode": "elastic", "steps": 0, "steps_asked": 0,
                                                          "stopped": "budget_s", "elastic_steps": 250,
                                                          "elastic_steps_asked": 400, "budget_s": 300.0}}}
    assert recovery_cut(elastic)["steps"] == 250 and "elastic fine-tune" in recovery_cut(elastic)["message"]
    assert recovery_cut({"recovery": {"result": {"steps": 220, "steps_asked": 220, "stopped": "steps"}}}) is None
    assert recovery_cut({"recovery": None}) is None
    rec = TrialRecord(values={"size_bytes": 1.0}, recovery_cut=cut)
    assert rec.mlflow(number=1, state="COMPLETE", sampler="tpe")[2]["recovery_cut"] == cut["message"]


def test_edgetune_front_shows_the_flags_and_the_model_memory():
    from types import SimpleNamespace

    from rich.console import Console

    from edgetune.search._cli import front_table
    from edgetune.search.records import trials_frame

    def trial(number, values, **extra):
        rec = TrialRecord(values=values, feasible=True, label=f"config {number}", **extra)
        return SimpleNamespace(number=number, state=SimpleNamespace(name="COMPLETE"),
                               user_attrs={"record": rec.attr()})

    keys = ["map50_95@pi", "latency_p50_ms@pi"]
    trials = [trial(0, {"map50_95@pi": 0.70, "latency_p50_ms@pi": 9.0, "model_mem_mb@pi": 12.5}),
              trial(1, {"map50_95@pi": 0.60, "latency_p50_ms@pi": 5.0, "model_mem_mb@pi": 7.25},
                    throttled={"pi": ["under_voltage"]},
                    recovery_cut={"steps": 120, "steps_asked": 400, "budget_s": 60, "message": "cut"})]
    df = trials_frame(trials, keys, ranks={0: 0, 1: 0})
    assert df.loc[1, "throttled"] == "pi: under_voltage" and df.loc[1, "recovery_cut"] == "120/400 steps"
    assert df["throttled"].isna()[0] and df.loc[1, "model_mem_mb@pi"] == 7.25  # the --csv / --json columns
    console = Console(width=160, record=True)
    console.print(front_table(df, keys, ["max", "min"], title="t", only_front=False))
    text = console.export_text()
    assert "THROTTLED pi: under_voltage" in text and "recovery cut by budget_s: 120/400" in text
    assert "model MB" in text and "7.25" in text and "12.50" in text


def test_the_search_settings_of_the_rule_are_validated():
    from pydantic import ValidationError

    from edgetune.search._spec import SearchSpec

    s = SearchSpec()
    assert s.throttle_retry is True and s.throttle_cooldown_s == 60 and s.energy_sample_ms is None
    for bad in ({"throttle_cooldown_s": -1}, {"energy_sample_ms": 0}, {"throttle_retry_s": 5}):
        with pytest.raises(ValidationError):
            SearchSpec(**bad)
