"""One sweep, end to end: ask -> compress (cached) -> measure on every device the objectives name ->
objectives + constraints -> tell -> MLflow -> front.

Failures are results: a trial whose compression raises or whose device fails is told FAIL with the
reason, logged as a FAILED MLflow run with an ``error`` tag, and the sweep goes on.

Outages are waited out (:func:`measure_through_outages`): a device that does not answer pauses the trial
until it answers again (``SweepHooks.recover_device``, bounded by ``search.outage_wait_s``), and a
measurement cut by an agent restart (the connection dropped mid-request, or the agent no longer has what
was uploaded to it) is measured again, once. The record keeps the wait (``outage_wait_s``) and the retry.

Throttling (:func:`measure_unthrottled`): a measurement during which the device reported throttling or
under-voltage (``Measurement.throttled``) is taken again once, after ``search.throttle_cooldown_s``, when
``search.throttle_retry`` is on; a device still throttled then has its second measurement kept, flagged
(``TrialRecord.throttled``: device -> the conditions). The record counts the retakes (``throttle_retries``).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from edgetune._logging import get_logger
from edgetune.errors import AgentError, AgentUnavailable, EdgetuneError
from edgetune.objectives import artifact_values, measurement_values
from edgetune.search.records import RECORD_ATTR, TrialRecord, config_summary, short_label

if TYPE_CHECKING:
    from edgetune.compress import Artifact, RecoverySpec
    from edgetune.device_agents import Measurement
    from edgetune.spaces import CompressionConfig

log = get_logger(__name__)

__all__ = ["TrialPlan", "TrialResult", "SweepHooks", "RemoteContext", "run_one",
           "measure_through_outages", "measure_unthrottled", "measure_quiet", "measure_devices", "paired_noise", "MeasureAttempts", "recovery_cut", "device_fingerprint"]

# agent errors that mean "restarted without what was uploaded to it": measured again once, after re-uploading
LOST_CONTENT = ("ArtifactMissing", "DatasetMissing")
_MAX_RECOVERIES = 20  # a device that keeps dropping between its health check and the request: give up


@dataclass
class TrialPlan:
    """What to run for one Optuna trial: its number, the Optuna trial (None on a remote worker), the
    config and the baseline name."""

    number: int
    trial: object | None  # optuna.trial.Trial
    config: CompressionConfig
    baseline: str | None
    params: dict
    runtime: str | None = None  # the device runtime to measure on (None: each device's default)
    recovery: RecoverySpec | None = None  # this trial's own recovery (a refined trial), else the sweep's
    refined_from: int | None = None  # the trial whose config this one fine-tunes alone (``recovery.refine``)
    screen: bool = False  # a sampled candidate ``search.screen`` may skip (never a baseline, start point or refine)


@dataclass
class TrialResult:
    number: int
    ok: bool
    values: dict[str, float] = field(default_factory=dict)
    record: TrialRecord = field(default_factory=TrialRecord)
    artifact: Artifact | None = None
    error: str | None = None
    wall_s: float = 0.0


@dataclass(frozen=True)
class RemoteContext:
    """What a remote worker needs to compress and measure trials of this sweep exactly as the driver
    would: the config, the target kinds the driver resolved (never re-derived), the shared workdir, the
    devices to measure on, and the fleet's connection state (device specs as dicts, tokens by device
    name, the sha256 of each validation bundle already on the agents, by input size)."""

    cfg: object  # SweepConfig
    kinds: tuple[str, ...] | None
    workdir: Path
    devices: tuple[str, ...]
    device_specs: tuple[dict, ...]
    tokens: dict[str, str]
    dataset_hashes: dict[int, str]
    measure_kwargs: dict


class SweepHooks(ABC):
    """What the trial runner and the backends need from the outside world: compression, devices, files.
    Three methods are required; the others have the answers of hooks that cannot do more."""

    @abstractmethod
    def devices_for_objectives(self) -> list[str]:
        """The devices each trial is measured on (those the objectives and constraints name)."""

    @abstractmethod
    def compress(self, plan: TrialPlan) -> Artifact:
        """The artifact of the plan's config (from the cache when built before)."""

    @abstractmethod
    def measure(self, artifact: Artifact, device: str, runtime: str | None = None) -> Measurement:
        """The artifact measured on one device, on ``runtime`` (None: the device's default)."""

    def compare_latency(self, entries: list[tuple[str, str | None]], device: str) -> dict[tuple, dict]:
        """(ONNX path, runtime) -> model-only latency stats, all timed side by side on ``device``."""
        raise NotImplementedError(f"{type(self).__name__} cannot time models side by side")

    def artifact_dir(self, artifact_hash: str) -> Path | None:
        """The directory of a built artifact, or None when it is not (or no longer) there."""
        return None

    def recover_device(self, device: str, error: Exception) -> float:
        """After ``error`` (``device`` did not answer, or lost what was uploaded to it): wait until it answers
        again, bounded, and put back what a restarted agent lost; return the seconds waited, or raise
        (AgentUnavailable) when the outage lasts too long. Hooks that cannot wait raise ``error``."""
        raise error

    def throttle_policy(self) -> tuple[bool, float]:
        """(retake a throttled measurement once?, seconds to wait before it): ``search.throttle_retry`` and
        ``search.throttle_cooldown_s``; hooks without a config keep the first measurement, flagged."""
        return False, 0.0

    def paired_policy(self) -> tuple[int, float, float, float]:
        """(retakes, wait_s, max_spread, max_slowdown) of :func:`measure_quiet`: ``search.paired_retakes``,
        ``search.paired_retake_wait_s``, ``search.max_paired_spread``, ``search.max_paired_slowdown``."""
        return 0, 0.0, float("inf"), float("inf")

    def quiet_reference(self, device: str) -> float | None:
        """The quietest (lowest) p50 of the paired reference seen on ``device`` so far, or None."""
        return vars(self).get("_quiet", {}).get(device)

    def note_quiet(self, device: str, m: Measurement) -> None:
        """Learn ``device``'s quietest reference p50 from a measurement's paired timing."""
        if m.paired is not None:
            quiet = vars(self).setdefault("_quiet", {})
            quiet[device] = min(quiet.get(device, float("inf")), m.paired.reference_latency.p50_ms)

    def watch_devices(self, listener: Callable[[str, float | None], None]) -> None:
        """Have ``listener(device, since)`` called when a device is found down (``since``: epoch seconds)
        and ``listener(device, None)`` when it is back (for progress displays; hooks may ignore it)."""
        return None

    def overlap_ok(self) -> bool:
        """Whether compressing one trial while another is measured leaves the timings undisturbed."""
        return False

    def pool_size(self, device: str) -> int:
        """How many agents measure ``device``'s trials (``devices[].pool``; 1 without one)."""
        return 1

    def parallel_trials(self) -> int:
        """How many trials can be measured at once: the smallest pool among the measured devices (a
        device without a ``pool`` is a pool of one)."""
        return 1

    #: set by the Sweep that owns the study: (artifact hash, runtime) -> (trial number, its record) of a
    #: completed trial that measured that model on that runtime on this sweep's devices, or None
    lookup_measured: Callable[[str, str | None], tuple[int, TrialRecord] | None] | None = None

    #: set by the Sweep that owns the study: (plan, evidence, the artifact's exact values) -> the record's
    #: ``screen`` entry (``search.screen.Screen.judge``)
    screener: Callable[[TrialPlan, dict, dict], dict] | None = None

    def evidence(self, artifact: Artifact) -> dict | None:
        """``search.screen``'s evidence on a compressed candidate: {features, rung}; None where not screened."""
        return None

    def screen(self, plan: TrialPlan, artifact: Artifact) -> dict | None:
        """The trial's ``screen`` entry (evidence, predictions, the skip decision), None when off or where
        the hooks cannot see the study (remote workers)."""
        if self.screener is None:
            return None
        ev = self.evidence(artifact)
        return None if ev is None else self.screener(plan, ev, artifact_values(artifact.manifest.get("sizes") or {}))

    def measured_before(self, artifact_hash: str, runtime: str | None) -> tuple[int, TrialRecord] | None:
        """A completed trial of this sweep that measured the same model on the same runtime and devices
        (its values are reused, not measured again); None where the hooks cannot see the study (a remote
        worker measures every trial it is given)."""
        return self.lookup_measured(artifact_hash, runtime) if self.lookup_measured is not None else None

    def remote(self) -> RemoteContext:
        """What a remote backend ships to its workers."""
        raise NotImplementedError(f"{type(self).__name__} cannot be shipped to remote workers")


def run_one(plan: TrialPlan, hooks: SweepHooks, artifact_future: Future | None = None) -> TrialResult:
    """Compress (or take the overlapped result) and measure one trial; never raises for trial failures."""
    t0 = time.time()
    record = TrialRecord(baseline=plan.baseline, params=plan.params, runtime=plan.runtime,
                         refined_from=plan.refined_from)
    try:
        artifact = artifact_future.result() if artifact_future is not None else hooks.compress(plan)
    except EdgetuneError as exc:
        return _failed(plan, record, f"compression failed: {exc}", t0)
    except Exception as exc:  # a bug or a library error in compression must not kill the sweep
        log.exception("trial %d: compression raised", plan.number)
        return _failed(plan, record, f"compression failed: {type(exc).__name__}: {exc}", t0)
    compress_s = time.time() - t0
    manifest = artifact.manifest
    summary = config_summary(manifest, runtime=plan.runtime)
    cut = recovery_cut(manifest)
    record = record.model_copy(update={"artifact_hash": artifact.hash, "summary": summary,
                                       "label": short_label(summary, plan.baseline, refined_from=plan.refined_from),
                                       "config": manifest.get("config"),
                                       "sizes": manifest.get("sizes"), "recovery_cut": cut})
    if cut is not None:
        log.warning("trial %d: %s", plan.number, cut["message"])
        record = record.model_copy(update={"warnings": [*record.warnings, cut["message"]]})
    before = hooks.measured_before(artifact.hash, plan.runtime) if plan.baseline != "fp32" else None
    if before is not None:  # the fp32 baseline is always measured: it anchors the paired latencies
        number, old = before
        log.info("trial %d: the same model on the same runtime and devices as trial %d: its values reused, not "
                 "measured again", plan.number, number)
        record = record.model_copy(update={"values": dict(old.values), "fingerprints": old.fingerprints,
                                           "realised": old.realised, "throttled": old.throttled, "reused_from": number,
                                           "timing": {"compress_s": round(compress_s, 3), "measure_s": 0.0,
                                                      "device_s": 0.0}})
        return TrialResult(plan.number, True, dict(old.values), record, artifact, None, time.time() - t0)
    t_screen = time.time()
    try:
        screen = hooks.screen(plan, artifact)
    except Exception as exc:  # screening only steers: a candidate it cannot judge is measured
        log.warning("trial %d: screening failed (%s: %s); measuring it", plan.number, type(exc).__name__, exc)
        screen = {"skip": None, "applied": False, "error": f"{type(exc).__name__}: {exc}"}
    screen_s = round(time.time() - t_screen, 3)
    if screen is not None:
        record = record.model_copy(update={"screen": screen})
        if screen.get("skip") and screen.get("applied"):
            log.info("trial %d skipped, not measured: %s", plan.number, screen["skip"])
            record = record.model_copy(update={"timing": {"compress_s": round(compress_s, 3), "screen_s": screen_s,
                                                          "measure_s": 0.0, "device_s": 0.0}})
            return TrialResult(plan.number, False, {}, record, artifact, f"skipped: {screen['skip']}",
                               time.time() - t0)
    values = artifact_values(manifest.get("sizes") or {})
    fingerprints: dict[str, dict] = {}
    realised: dict[str, dict] = {}
    asked: dict[str, bool] | None = None
    devices = hooks.devices_for_objectives()
    t_measure = time.time()
    measured, attempts = measure_devices(hooks, artifact, devices, plan.runtime)
    timing = {"compress_s": round(compress_s, 3), "screen_s": screen_s, "retake_s": round(attempts.retake_s, 3),
              "measure_s": round(time.time() - t_measure, 3),
              "device_s": round(max((m.wall_s for m in measured.values() if not isinstance(m, BaseException)),
                                    default=0.0), 3)}
    for device in devices:
        m = measured[device]
        if isinstance(m, BaseException):
            if not isinstance(m, EdgetuneError):
                log.error("trial %d: measuring on %s raised", plan.number, device, exc_info=m)
            why = str(m) if isinstance(m, EdgetuneError) else f"{type(m).__name__}: {m}"
            return _failed(plan, attempts.on(record), f"measurement on '{device}' failed: {why}", t0, artifact)
        d = m.model_dump(exclude={"latency": {"samples_ms"}, "end_to_end": {"samples_ms"}})
        values.update(measurement_values(m, device))
        fingerprints[device] = device_fingerprint(d)
        if m.realised_precision:
            asked = asked if asked is not None else asked_int8(artifact)
            realised[device] = realised_report(asked, m.realised_precision)
            values[f"int8_layers_run@{device}"] = float(realised[device]["int8_run"])
            values["int8_layers"] = float(realised[device]["int8_asked"])
    record = attempts.on(record).model_copy(update={"values": values, "fingerprints": fingerprints,
                                                    "realised": realised, "timing": timing})
    return TrialResult(plan.number, True, values, record, artifact, None, time.time() - t0)


def measure_devices(hooks: SweepHooks, artifact: Artifact, devices: list[str], runtime: str | None
                    ) -> tuple[dict[str, Measurement | BaseException], MeasureAttempts]:
    """Measure ``artifact`` on every device at once (one thread per device: a Jetson and a Pi in one sweep
    take the time of the slower, not the sum; agents on one host still take turns, by their host lock);
    device -> its Measurement or what it raised, and the attempts of all of them merged."""
    def one(device: str) -> tuple[Measurement | BaseException, MeasureAttempts]:
        attempts = MeasureAttempts()
        try:
            return measure_quiet(hooks, artifact, device, runtime, attempts), attempts
        except Exception as exc:  # the trial's failure, reported by the caller
            return exc, attempts

    if len(devices) == 1:
        results = [one(devices[0])]
    else:
        with ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="edgetune-measure") as pool:
            results = list(pool.map(one, devices))
    merged = MeasureAttempts()
    for _, attempts in results:
        merged.add(attempts)
    return {d: r for d, (r, _) in zip(devices, results, strict=True)}, merged


def asked_int8(artifact: Artifact) -> dict[str, bool]:
    """Weighted ONNX node -> whether the config asked for it in int8 (its weight comes through a
    DequantizeLinear in the artifact's QDQ graph)."""
    import onnx

    from edgetune.compress import quantized_nodes

    return quantized_nodes(onnx.load(str(artifact.onnx_path), load_external_data=False))


def realised_report(asked: dict[str, bool], realised: dict[str, str]) -> dict:
    """What the device ran against what the config asked (``Measurement.realised_precision``):
    ``int8_asked`` / ``int8_run`` layer counts, ``asked_not_run`` (int8 asked, ran in float: the runtime
    found no int8 kernel for it, or the Q/DQ around it did not fuse), ``run_not_asked`` (kept float, ran
    int8: e.g. onnxruntime >= 1.20 quantizes a float Conv between Q/DQ), ``counts`` by precision."""
    from collections import Counter

    layers = [n for n in asked if n in realised]
    counts = Counter(realised[n] for n in layers)
    return {"int8_asked": sum(asked[n] for n in layers), "int8_run": sum(realised[n] == "int8" for n in layers),
            "asked_not_run": [n for n in layers if asked[n] and realised[n] != "int8"],
            "run_not_asked": [n for n in layers if not asked[n] and realised[n] == "int8"],
            "counts": dict(sorted(counts.items()))}


def recovery_cut(manifest: dict) -> dict | None:
    """When ``recovery.budget_s`` ended the fine-tuning this artifact's weights come from before its steps
    (per config, or the sweep's one elastic fine-tune): {steps, steps_asked, budget_s, message}; else None."""
    rec = manifest.get("recovery") or {}
    result = rec.get("result") or {}
    if result.get("stopped") != "budget_s":
        return None
    elastic = result.get("mode") == "elastic"
    steps = result.get("elastic_steps" if elastic else "steps")
    asked = result.get("elastic_steps_asked" if elastic else "steps_asked")
    budget = result.get("budget_s", rec.get("budget_s"))
    what = "the elastic fine-tune these weights are cut from" if elastic else "recovery"
    return {"steps": steps, "steps_asked": asked, "budget_s": budget,
            "message": f"{what} was cut short by `recovery.budget_s` = {budget} s after {steps} of {asked} steps: "
                       "this trial's accuracy depends on how busy the machine was; raise or remove `recovery.budget_s`"}


@dataclass
class MeasureAttempts:
    """What riding out outages and throttling cost one trial: seconds waited for devices, measurements made
    again (why), throttled measurements taken again, the devices still throttled in the kept ones."""

    waited_s: float = 0.0
    recoveries: int = 0
    retried: list[str] = field(default_factory=list)
    throttle_retries: int = 0
    throttled: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    paired_retakes: int = 0  # paired timings taken again because the device was busy (``measure_quiet``)
    retake_s: float = 0.0  # what those retakes cost: the waits and the measurements not kept

    def add(self, other: MeasureAttempts) -> None:
        """Count ``other`` (another device's attempts in the same trial) in these; waits are summed."""
        self.waited_s += other.waited_s
        self.recoveries += other.recoveries
        self.retried += other.retried
        self.throttle_retries += other.throttle_retries
        self.throttled.update(other.throttled)
        self.notes += other.notes
        self.paired_retakes += other.paired_retakes
        self.retake_s += other.retake_s

    def on(self, record: TrialRecord) -> TrialRecord:
        """``record`` with the wait, the retries and the throttling (unchanged when there were none)."""
        update: dict = {}
        if self.recoveries:
            update.update(outage_wait_s=round(self.waited_s, 1), measure_retries=len(self.retried))
        if self.throttle_retries or self.throttled:
            update.update(throttle_retries=self.throttle_retries, throttled=dict(self.throttled))
        if self.paired_retakes:
            update.update(paired_retakes=self.paired_retakes)
        if not update:
            return record
        return record.model_copy(update={**update, "warnings": [*record.warnings, *self.retried, *self.notes]})


def measure_unthrottled(hooks: SweepHooks, artifact: Artifact, device: str, runtime: str | None,
                        attempts: MeasureAttempts | None = None, *, sleep: Callable[[float], None] = time.sleep
                        ) -> Measurement:
    """:func:`measure_through_outages`, and the throttling rule: a measurement the device flags as taken
    while throttled or under-voltage (``Measurement.throttled`` non-empty) is taken again once after the
    hooks' cool-down (``throttle_policy``); the measurement kept is the last, and when it is still flagged,
    ``attempts.throttled[device]`` says with which conditions. A device that exposes no flags
    (``throttled`` None) is never retaken."""
    attempts = attempts if attempts is not None else MeasureAttempts()
    m = measure_through_outages(hooks, artifact, device, runtime, attempts)
    retry, cooldown = hooks.throttle_policy()
    if m.throttled and retry:
        log.warning("device %s was throttled while measuring (%s): measuring again after a %.0f s cool-down",
                    device, ", ".join(m.throttled), cooldown)
        first = ", ".join(m.throttled)
        sleep(cooldown)
        attempts.throttle_retries += 1
        m = measure_through_outages(hooks, artifact, device, runtime, attempts)
        attempts.notes.append(f"device '{device}' was throttled while measuring ({first}); measured again after "
                              f"{cooldown:g} s" + (", still throttled: kept with the flag" if m.throttled else ""))
    if m.throttled:
        attempts.throttled[device] = list(m.throttled)
        if not retry:
            attempts.notes.append(f"device '{device}' was throttled while measuring ({', '.join(m.throttled)}); "
                                  "kept with the flag (`search.throttle_retry` is off)")
        log.warning("device %s measured while throttled (%s): the trial keeps the flag", device, ", ".join(m.throttled))
    return m


def paired_noise(m: Measurement, *, quiet_ms: float | None, max_spread: float, max_slowdown: float) -> str | None:
    """Why ``m``'s paired timing (``Measurement.paired``) cannot rank it, or None: its ratio's 95% CI wider
    than ``max_spread`` of the ratio, or the reference ran more than ``max_slowdown`` x slower than the
    quietest it ran on this device (``quiet_ms``): another process shared the core, and time-slice
    preemption does not scale both models alike."""
    p = m.paired
    if p is None:
        return None
    spread = (p.ratio_ci95_high - p.ratio_ci95_low) / p.ratio_p50 if p.ratio_p50 > 0 else float("inf")
    if spread > max_spread:
        return f"its paired-ratio 95% CI spans {spread:.0%} of the ratio (> {max_spread:.0%})"
    ref = p.reference_latency.p50_ms
    if quiet_ms and ref > max_slowdown * quiet_ms:
        return f"fp32 beside it ran {ref / quiet_ms:.2f}x slower than its quietest on this device ({quiet_ms:.3g} ms)"
    return None


def measure_quiet(hooks: SweepHooks, artifact: Artifact, device: str, runtime: str | None,
                  attempts: MeasureAttempts | None = None, *, sleep: Callable[[float], None] = time.sleep
                  ) -> Measurement:
    """:func:`measure_unthrottled`, and the busy-device rule of paired timings: a measurement whose paired
    timing cannot rank it (:func:`paired_noise`) is taken again after ``wait_s``, up to ``retakes`` times
    (``hooks.paired_policy``); the one kept is the quietest (not noisy, then the fastest reference). One
    still noisy keeps a warning in the record. ``hooks.note_quiet`` learns each device's quietest reference.
    A device whose first takes were busy more than half the time (of 4 or more) is not retaken: it has no
    quiet phase to wait for."""
    attempts = attempts if attempts is not None else MeasureAttempts()
    retakes, wait_s, max_spread, max_slowdown = hooks.paired_policy()

    def qkey(x: Measurement) -> str:  # a pool's members each have their own quietest reference
        return f"{device}/{x.device.name}" if hooks.pool_size(device) > 1 else device

    def noise(x: Measurement) -> str | None:
        return paired_noise(x, quiet_ms=hooks.quiet_reference(qkey(x)), max_spread=max_spread,
                            max_slowdown=max_slowdown)

    def key(x: Measurement) -> tuple:
        return (noise(x) is not None, x.paired.reference_latency.p50_ms if x.paired else 0.0)

    best = measure_unthrottled(hooks, artifact, device, runtime, attempts, sleep=sleep)
    hooks.note_quiet(qkey(best), best)
    busy = vars(hooks).setdefault("_busy", {}).setdefault(device, [0, 0])  # first takes: [busy, all]
    busy[0], busy[1] = busy[0] + (noise(best) is not None), busy[1] + 1
    if busy[1] >= 4 and busy[0] > busy[1] / 2:
        retakes = 0  # busy most of the time: no quiet phase to wait for (the noise warning says so)
    t_retakes, first_s = time.time(), getattr(best, "wall_s", 0.0) or 0.0
    for _ in range(retakes):
        why = noise(best)
        if why is None:
            break
        log.info("device %s was busy while measuring (%s): measuring again in %.0f s", device, why, wait_s)
        sleep(wait_s)
        attempts.paired_retakes += 1
        m = measure_unthrottled(hooks, artifact, device, runtime, attempts, sleep=sleep)
        hooks.note_quiet(qkey(m), m)
        best = min((best, m), key=key)
    if attempts.paired_retakes:  # the waits and the takes not kept (the kept one's job counts as the device's)
        attempts.retake_s += max(0.0, time.time() - t_retakes + first_s - (getattr(best, "wall_s", 0.0) or 0.0))
    if (why := noise(best)) is not None:
        attempts.notes.append(f"device '{device}' was busy: {why}; kept after {attempts.paired_retakes} retake(s)")
    return best


def measure_through_outages(hooks: SweepHooks, artifact: Artifact, device: str, runtime: str | None,
                            attempts: MeasureAttempts | None = None) -> Measurement:
    """``hooks.measure``, riding out outages: when the device does not answer, wait for it
    (``hooks.recover_device``) and measure; when a measurement was cut (the connection dropped mid-request)
    or the agent no longer has the uploaded artifact or dataset (it restarted), recover and measure again,
    once. A measurement that ran past its timeout is not repeated."""
    attempts = attempts if attempts is not None else MeasureAttempts()
    retried = False
    for _ in range(_MAX_RECOVERIES):
        try:
            return hooks.measure(artifact, device, runtime)
        except AgentUnavailable as exc:
            if getattr(exc, "timed_out", False) or (getattr(exc, "reached", False) and retried):
                raise
            if getattr(exc, "reached", False):  # cut mid-request: the agent died or restarted while measuring
                retried = True
                attempts.retried.append(f"measurement on '{device}' was cut ({exc}); measured again")
            error: Exception = exc
        except AgentError as exc:
            if getattr(exc, "error_type", None) not in LOST_CONTENT or retried:
                raise
            retried = True
            attempts.retried.append(f"agent '{device}' lost an upload ({exc}); uploaded and measured again")
            error = exc
        log.warning("measuring on %s: %s", device, error)
        attempts.recoveries += 1
        attempts.waited_s += hooks.recover_device(device, error)
    raise AgentUnavailable(f"device '{device}' answered its health check but dropped the measurement "
                           f"{_MAX_RECOVERIES} times in a row; check its agent's log.")


def _failed(plan, record: TrialRecord, error: str, t0: float, artifact=None) -> TrialResult:
    log.warning("trial %d failed: %s", plan.number, error)
    record = record.model_copy(update={"error": error})
    return TrialResult(plan.number, False, {}, record, artifact, error, time.time() - t0)


def device_fingerprint(d: dict) -> dict:
    """What a measurement ran on, in full (a Measurement's dict): the board, SoC, CPU (model, arch,
    governor, the int8-relevant features), OS / kernel / L4T, memory, the runtime and its settings, threads
    and CPUs, and the volatile state around the measurement: power mode, clocks locked, power sensors,
    temperatures before and after, the throttling / under-voltage flags before (``throttling``) and after
    (``throttling_after``) and the conditions that held (``throttled``; None: the board exposes no flags);
    with a paired timing, the reference (``paired_reference``, its runtime, the runs) and the 95% CI of the
    paired ratio (``paired_ratio_ci95``); ``measured_at``: when the agent started and finished it (its clock)."""
    dev = d.get("device") or {}
    rt = d.get("runtime") or {}
    board, cpu, os_ = dev.get("board") or {}, dev.get("cpu") or {}, dev.get("os") or {}
    lat = d.get("latency") or {}
    paired = d.get("paired") or {}
    return {
        "name": dev.get("name"), "kind": dev.get("kind"), "detected_kind": dev.get("detected_kind"),
        "board": board.get("model"), "vendor": board.get("vendor"), "soc": board.get("soc"),
        "cpu": cpu.get("model"), "arch": cpu.get("arch"), "governor": cpu.get("governor"),
        "cpu_features": ",".join(cpu.get("features") or []),
        "os": os_.get("name"), "kernel": os_.get("kernel"), "l4t": os_.get("l4t"), "python": os_.get("python"),
        "memory_bytes": dev.get("memory_bytes"), "edgetune_version": dev.get("edgetune_version"),
        "runtime": f"{rt.get('name')} {rt.get('version')}", "providers": ",".join(rt.get("providers_used") or []),
        "runtime_detail": rt.get("detail") or {},
        "threads": d.get("threads"), "cpus": ",".join(str(c) for c in d.get("cpus") or []),
        "power_mode": dev.get("power_mode"), "clocks_locked": dev.get("clocks_locked"),
        "power_sensors": ",".join(dev.get("power_sensors") or []),
        "power_source": (d.get("power") or {}).get("source"),
        "temperatures_c": dev.get("temperatures_c"), "temperatures_after_c": d.get("temperatures_after_c") or {},
        "throttling": dev.get("throttling"), "throttling_after": d.get("throttling_after"),
        "throttled": d.get("throttled"),
        "measured_at": [round(d["started_at"], 3), round(d["finished_at"], 3)] if "started_at" in d else None,
        "latency_n": lat.get("n"),
        "latency_ci95_ms": [lat.get("ci95_low_ms"), lat.get("ci95_high_ms")],
        **({"paired_reference": str(paired.get("reference", ""))[:12], "paired_runtime": paired.get("reference_runtime"),
            "paired_runs": paired.get("runs"),
            "paired_ratio_ci95": [paired.get("ratio_ci95_low"), paired.get("ratio_ci95_high")]} if paired else {}),
    }


def tell(study, plan: TrialPlan, result: TrialResult, *, keys: list[str], constraints: list,
         baseline_values: dict[str, float] | None) -> TrialRecord:
    """Tell Optuna the outcome (values + constraints, or FAIL) with the full record in user attrs."""
    from optuna.trial import TrialState

    update: dict = {"wall_s": round(result.wall_s, 3)}
    if result.ok:
        missing = [k for k in keys if k not in result.values]
        if missing:
            result.ok, result.error = False, f"the devices did not report {', '.join(missing)}"
            update["error"] = result.error
    if result.ok:
        viol, warnings = {}, list(result.record.warnings)
        for c in constraints:
            try:
                viol[c.text] = float(c.violation(result.values, baseline_values or result.values))
            except KeyError as exc:  # the metric was not measured: treat as violated, say why
                viol[c.text] = float("inf")
                warnings.append(f"constraint '{c.text}': {exc}")
        viol = {k: (v if v != float("inf") else 1e30) for k, v in viol.items()}
        update.update(constraints=viol, feasible=all(v <= 0 for v in viol.values()), warnings=warnings)
        for i, v in enumerate(viol.values()):
            plan.trial.set_constraint(f"c{i}", v)
    record = result.record.model_copy(update=update)
    result.record = record
    plan.trial.set_user_attr(RECORD_ATTR, record.attr())
    if result.ok:
        study.tell(plan.number, [result.values[k] for k in keys])
    elif record.skipped:  # search.screen: predicted dominated (or out of the constraints), never measured
        for i in range(len(constraints)):  # infeasible to the sampler: TPE never counts a skip among its good
            plan.trial.set_constraint(f"c{i}", 1e30)  # trials (its record keeps no constraint values)
        study.tell(plan.number, state=TrialState.PRUNED)
    else:
        study.tell(plan.number, state=TrialState.FAIL)
    return record
