"""Config sections owned by the search: ``objectives``, ``constraints`` (list of str), ``search``,
``tracking``. torch-free; cross-section checks run in :func:`check_sweep`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from edgetune._strict import Strict
from edgetune.errors import ConfigError

__all__ = ["ObjectiveSpec", "SearchSpec", "TrackingSpec", "check_sweep", "require_objectives"]


class ObjectiveSpec(Strict):
    """One objective: a metric (see ``edgetune.objectives.METRICS``), the device it is measured on (for
    on-device metrics; default: the first device), and the goal (default: the metric's own)."""

    metric: str
    device: str | None = None
    goal: Literal["min", "max"] | None = None

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        from edgetune.objectives.metrics import canonical_metric, get_metric

        v = canonical_metric(v)  # the display names (mAP50-95, p50) are accepted
        try:
            get_metric(v)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return v

    def resolved_goal(self) -> str:
        from edgetune.objectives.metrics import get_metric

        return self.goal or get_metric(self.metric).goal


class SearchSpec(Strict):
    sampler: str = Field(default="tpe", description="a registered sampler (``search.samplers.SAMPLERS``)")
    trials: int = Field(default=40, ge=1, le=100000)
    seed: int = 0
    n_startup: int = Field(default=10, ge=1, description="random trials before the model-based sampler")
    backend: str = Field(default="local", description="a registered backend (``search.backends``): local | ray")
    address: str | None = Field(default=None, description="Ray cluster address (backend: ray); None starts a local Ray")
    storage: str = "sqlite:///edgetune.db"
    concurrency: int = Field(default=1, ge=1, le=256, description="trials compressed at once (Ray workers)")
    overlap: Literal["auto", "on", "off"] = Field(
        default="auto", description="compress the next trial while the current one is measured; 'auto' turns it "
        "off when a device runs on this host (compression would disturb its timings); 'on' with --local pins the "
        "controller to the cores the local agents do not measure on")
    keep_artifacts: Literal["front", "all"] = "front"
    start_points: Literal["none", "uniform"] = Field(
        default="none", description="'uniform': before the sampler's own, measure the uniform corners of the space: "
        "every offered channel ratio (0 included) on every group at once, all layers int8, on each runtime, at the model's "
        "input size (counted in `trials`); they show the sampler where the fast, small region is")
    latency_runs: int = Field(default=100, ge=5)
    latency_warmup: int = Field(default=10, ge=0)
    latency_min_seconds: float = Field(
        default=1.0, ge=0, le=3600, description="each timed loop (model-only, end-to-end) also runs until this many "
        "seconds have passed, after its `latency_runs`")
    measure_timeout_s: float = Field(default=600, gt=0)
    outage_wait_s: float = Field(
        default=600, ge=0, description="how long trials wait for a device that stopped answering (polled with "
        "exponential backoff, counted from when it went down) before they fail; a measurement cut by an agent restart "
        "is measured again once")
    throttle_retry: bool = Field(
        default=True, description="a measurement during which the device reported throttling or under-voltage "
        "(Raspberry Pi firmware flags) is taken again once after `throttle_cooldown_s`; if the device is still "
        "throttled, the second one is kept with the flag (`throttled` in the trial record, MLflow and `edgetune "
        "front`). false: the first one is kept with the flag")
    throttle_cooldown_s: float = Field(
        default=60.0, ge=0, le=3600, description="seconds to let a throttled device cool down (and its supply "
        "recover) before the measurement is taken again")
    energy_sample_ms: int | None = Field(
        default=None, ge=1, le=60_000, description="how often the device's power sensor is read while the model-only "
        "loop runs (energy_mj, power_w); null: the sensor's own default (50 ms INA3221 hwmon, 100 ms tegrastats; "
        "RAPL integrates, read at start and end)")
    retry_failed: bool = Field(
        default=True, description="on resume, measure each failed trial's point again, once (as a new trial, not "
        "counted in `trials`)")
    paired_timing: bool = Field(
        default=True, description="time every trial in turns with the fp32 baseline (on the baseline runtime) in the "
        "same request, `latency_runs` runs each: its latency objectives become its paired ratio times the fp32 "
        "reference's time in the first paired measurement (the anchor), so a device's drift and load between "
        "trials leave the front's order alone; the trial's own timing is kept as own_latency_p50_ms. false: each "
        "trial's own timing")
    max_paired_spread: float = Field(
        default=0.10, gt=0, le=10, description="a trial's paired timing whose ratio 95% CI is wider than this "
        "(relative: 0.10 = +-5%) is taken again (`paired_retakes`); a device whose trials' median width stays above it "
        "gets a too-noisy-to-rank warning")
    paired_retakes: int = Field(
        default=2, ge=0, le=10, description="a paired timing that cannot rank its trial (ratio CI wider than "
        "`max_paired_spread`, or fp32 beside it slower than `max_paired_slowdown` x its quietest on the device: "
        "another process shared the core) is taken again after `paired_retake_wait_s`, up to this many times; "
        "the quietest is kept")
    paired_retake_wait_s: float = Field(default=5.0, ge=0, le=600)
    max_paired_slowdown: float = Field(default=1.3, gt=1, le=100)
    side_by_side_runs: int = Field(
        default=300, ge=0, le=100000, description="when the sweep ends, time fp32 and every front member again, "
        "side by side and interleaved, this many runs each per latency device; speed-ups are reported from those "
        "timings (0: off)")
    screen: Literal["off", "shadow", "on"] = Field(
        default="shadow", description="screen each sampled candidate once compressed, before the device measures it "
        "(search.screen): a latency predictor fitted on the trials each device measured and the accuracy on the "
        "first `rung_images` validation images (onnxruntime, on this machine) give its optimistic point. on: a "
        "candidate that even so is dominated by a measured trial, or misses a constraint, is not measured "
        "(Optuna: PRUNED; MLflow: status skipped, skip_reason). shadow: every candidate is measured and the sweep "
        "reports what the rule would have skipped and the predictor's held-out error. off: neither")
    rung_images: int = Field(default=100, ge=10, le=100000, description="validation images of the screen's "
                             "accuracy rung (the first ones)")
    screen_min_trials: int = Field(default=8, ge=3, le=10000, description="measured trials (per device and runtime) "
                                   "before the screen may skip a candidate: they calibrate its margins")

    @field_validator("overlap", "screen", mode="before")
    @classmethod
    def _on_off(cls, v):
        """YAML reads a bare ``on`` / ``off`` as true / false: take them as the words they were."""
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, v: str) -> str:
        from edgetune.search.samplers import SAMPLERS

        if v not in SAMPLERS:
            raise ValueError(f"sampler {v!r} is not registered; samplers: {', '.join(SAMPLERS)}")
        return v

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        from edgetune.search.backends import available_backends

        if v not in available_backends():
            raise ValueError(f"backend {v!r} is not registered; backends: {', '.join(available_backends())}")
        return v


    @field_validator("storage")
    @classmethod
    def _storage(cls, v: str) -> str:
        if "://" not in v:
            raise ValueError(f"{v!r} is not a database URL (Optuna's RDB storage); write sqlite:///{v or 'edgetune.db'}")
        return v


class TrackingSpec(Strict):
    uri: str = "sqlite:///mlflow.db"
    experiment: str | None = None  # default: the sweep name

    @field_validator("uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        if "://" not in v and not v.startswith("file:") and v.endswith((".db", ".sqlite", ".sqlite3")):
            raise ValueError(f"{v!r} looks like a database file but is not a URL (MLflow would take it for a folder "
                             f"store); write sqlite:///{v}")
        return v


def require_objectives(cfg) -> None:
    if not cfg.objectives:
        raise ConfigError("`objectives`: a sweep needs at least one, e.g. [{metric: map50_95}, "
                          "{metric: latency_p50_ms}, {metric: size_bytes}].")
    if any(get_metric_on_device(o.metric) for o in cfg.objectives) and not cfg.devices:
        raise ConfigError("`devices`: the objectives are measured on devices, but none is listed.")


def get_metric_on_device(name: str) -> bool:
    from edgetune.objectives.metrics import get_metric

    return get_metric(name).on_device


def check_sweep(cfg) -> None:
    """Cross-section checks, before any work: objectives and constraints name known devices and metrics."""
    from edgetune.objectives.constraints import parse_constraint
    from edgetune.objectives.metrics import get_metric

    names = [d.name for d in cfg.devices]
    if len(set(names)) != len(names):
        raise ConfigError(f"`devices`: names must be unique, got {names}.")
    seen = set()
    for i, obj in enumerate(cfg.objectives):
        metric = get_metric(obj.metric)
        if metric.on_device:
            if not names:
                raise ConfigError(f"`objectives.{i}` ({obj.metric}) is measured on a device, but `devices:` is empty.")
            if obj.device is not None and obj.device not in names:
                raise ConfigError(f"`objectives.{i}.device` {obj.device!r} is not in `devices:` "
                                  f"({', '.join(names)}). Add the device or fix the name.")
        elif obj.device is not None:
            raise ConfigError(f"`objectives.{i}.device`: {obj.metric} does not depend on the device; remove `device`.")
        key = (obj.metric, obj.device or (names[0] if metric.on_device else None))
        if key in seen:
            raise ConfigError(f"`objectives.{i}` repeats {obj.metric}" + (f"@{key[1]}" if key[1] else "") + ".")
        seen.add(key)
    for i, text in enumerate(cfg.constraints):
        parse_constraint(text, devices=names, where=f"`constraints.{i}`")
