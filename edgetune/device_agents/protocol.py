"""The versioned wire protocol between the controller and a device agent.

Request and response bodies are pydantic models shared by the server and :class:`AgentClient`.
Every response carries ``protocol`` (also sent as the ``X-Edgetune-Protocol`` header). Minor versions
only add optional fields: responses ignore fields they do not know, so an older controller can read a
newer agent; a different **major** version is refused with :class:`~edgetune.errors.ProtocolMismatch`.
Requests forbid unknown fields, so a typo in a latency spec is an error, never silently dropped.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from edgetune.errors import ProtocolMismatch

__all__ = [
    "PROTOCOL_VERSION", "PROTOCOL_HEADER", "SHA256_PATTERN", "WEIGHTED_OPS", "check_protocol",
    "LatencySpec", "MeasureRequest", "LatencyStats", "PowerStats", "RuntimeUsed", "Board", "CPUInfo",
    "OSInfo", "RuntimeInfo", "AgentSettings", "DeviceInfo", "Measurement", "Health", "UploadResult",
    "QueueStatus", "ErrorInfo", "ErrorBody", "CompareRequest", "Comparison", "compare_key", "PairedLatency",
]

PROTOCOL_VERSION = "1.5"  # 1.1: POST /compare; 1.2: several runtimes per agent (DeviceInfo.runtimes,
#                            CompareRequest.runtimes); 1.3: the model's own memory (Measurement.model_rss_bytes,
#                            run_rss_bytes), throttling around the timed loop (throttling_after, throttled),
#                            LatencySpec.power_sample_ms; 1.4: paired timing with a reference in the same
#                            request (MeasureRequest.reference, Measurement.paired); 1.5: /compare gives each
#                            artifact's paired ratio to the first (Comparison.ratios), the precision each
#                            weighted layer ran in (Measurement.realised_precision)
PROTOCOL_HEADER = "X-Edgetune-Protocol"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # the layers ``Measurement.realised_precision`` reports


def _major(version: str) -> int | None:
    try:
        return int(str(version).split(".", 1)[0])
    except ValueError:
        return None


def check_protocol(remote: str | None, *, where: str) -> None:
    """Raise ProtocolMismatch when ``remote`` has a different major version than this edgetune."""
    if remote is None:
        raise ProtocolMismatch(
            f"{where} did not say which edgetune protocol it speaks (no '{PROTOCOL_HEADER}' header): it is "
            f"not an edgetune agent, or a very old one. This controller speaks protocol {PROTOCOL_VERSION}; "
            'install the same edgetune version on the device: pip install -U "edgetune[agent]".'
        )
    if _major(remote) != _major(PROTOCOL_VERSION):
        raise ProtocolMismatch(
            f"{where} speaks edgetune protocol {remote}, but this side speaks {PROTOCOL_VERSION}; the major "
            "versions must match. Install the same edgetune major version on the controller and the device "
            '(pip install -U "edgetune[agent]" on the device).'
        )


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# ---------------------------------------------------------------- requests


class LatencySpec(_Request):
    """How to time a model. Runs until both ``min_runs`` and ``min_seconds`` are reached (or ``max_runs``).

    ``threads`` is the runtime's intra-op thread count (default: the agent's ``--threads``). ``batch`` is
    the batch size timed (the model must accept it). ``end_to_end`` also times letterbox + run + decode/NMS
    on real images. ``power_sample_ms``: how often the power sensor is read while the model-only loop runs
    (None: the sensor's own default, 50 ms for the INA3221 hwmon, 100 ms for tegrastats; RAPL energy
    counters are read at the start and the end only). A client sends it only when set, so agents before
    protocol 1.3 still accept its requests.
    """

    warmup: int = Field(default=20, ge=0, le=100_000)
    min_runs: int = Field(default=100, ge=1, le=1_000_000)
    min_seconds: float = Field(default=1.0, ge=0.0, le=3600.0)
    max_runs: int = Field(default=10_000, ge=1, le=1_000_000)
    threads: int | None = Field(default=None, ge=1, le=256)
    batch: int = Field(default=1, ge=1, le=1024)
    end_to_end: bool = True
    keep_samples: bool = True
    power_sample_ms: int | None = Field(default=None, ge=1, le=60_000)

    @model_validator(mode="after")
    def _bounds(self) -> LatencySpec:
        if self.max_runs < self.min_runs:
            raise ValueError(f"max_runs ({self.max_runs}) must be >= min_runs ({self.min_runs})")
        return self


class MeasureRequest(_Request):
    """``POST /measure``: measure an uploaded artifact, optionally its accuracy on an uploaded dataset.

    ``runtime`` is one of the agent's runtimes (``DeviceInfo.runtimes``; default: the agent's first).
    ``providers`` names the runtime's execution providers (onnxruntime) or devices (OpenVINO) in order of
    preference (default: the runtime's default); a provider that is requested but not used is an error,
    never a silent fallback. ``head`` is the task-head spec used for end-to-end timing when no dataset is given.

    ``reference`` (protocol 1.4): the sha256 of another uploaded artifact (a sweep's fp32 model) timed
    against this one in the same process right after the model-only loop, interleaved in bursts as
    ``POST /compare`` does (``paired_runs`` runs each), on ``reference_runtime`` (default: ``runtime``); the
    answer's ``paired`` carries both timings and their ratio with a CI, which drift and load between
    requests do not move. A client sends these fields only when set, so older agents accept the request.
    """

    artifact: str = Field(pattern=SHA256_PATTERN)
    dataset: str | None = Field(default=None, pattern=SHA256_PATTERN)
    latency: LatencySpec = Field(default_factory=LatencySpec)
    runtime: str | None = None
    providers: tuple[str, ...] | None = None
    head: dict[str, Any] | None = None
    accuracy: bool = True
    timeout_s: float | None = Field(default=None, gt=0, le=24 * 3600)
    reference: str | None = Field(default=None, pattern=SHA256_PATTERN)
    reference_runtime: str | None = None
    paired_runs: int = Field(default=100, ge=5, le=1_000_000)


class CompareRequest(_Request):
    """``POST /compare``: time several uploaded artifacts side by side, in ONE process, interleaved.

    The models take turns in bursts (one untimed run, then ``burst`` timed runs each; the order rotates
    every turn) until each has ``runs`` timed runs, so every model sees the same device state (clocks,
    temperature, other load). Ratios between them are then free of the drift that separates two
    measurements taken minutes apart. Model-only latency on a random input of the model's shape.

    ``runtimes`` (one per artifact, parallel to ``artifacts``) times each artifact on its own runtime, so
    the same file may appear twice, once per runtime; the answer's ``latency`` is then keyed
    ``"<sha256>@<runtime>"`` (see :func:`compare_key`) instead of by sha256 alone.
    """

    artifacts: tuple[Annotated[str, StringConstraints(pattern=SHA256_PATTERN)], ...] = Field(min_length=2, max_length=64)
    runs: int = Field(default=300, ge=1, le=1_000_000)
    burst: int = Field(default=5, ge=1, le=10_000)
    warmup: int = Field(default=10, ge=0, le=100_000)
    threads: int | None = Field(default=None, ge=1, le=256)
    runtime: str | None = None
    runtimes: tuple[str, ...] | None = None
    providers: tuple[str, ...] | None = None
    keep_samples: bool = False
    timeout_s: float | None = Field(default=None, gt=0, le=24 * 3600)

    @model_validator(mode="after")
    def _distinct(self) -> CompareRequest:
        if self.runtimes is not None and len(self.runtimes) != len(self.artifacts):
            raise ValueError(f"runtimes has {len(self.runtimes)} entries for {len(self.artifacts)} artifacts; give one "
                             "runtime per artifact (or none)")
        keys = self.keys()
        if len(set(keys)) != len(keys):
            raise ValueError("artifacts must be distinct (each is timed once per turn); with `runtimes`, each "
                             "(artifact, runtime) pair must be")
        return self

    def keys(self) -> list[str]:
        """The ``latency`` keys of the answer, in the order of ``artifacts``."""
        if self.runtimes is None:
            return list(self.artifacts)
        return [compare_key(a, r) for a, r in zip(self.artifacts, self.runtimes, strict=True)]


def compare_key(sha: str, runtime: str | None) -> str:
    """A /compare latency key: the sha256, or ``sha256@runtime`` when the request named runtimes."""
    return sha if runtime is None else f"{sha}@{runtime}"


# ---------------------------------------------------------------- results


class LatencyStats(_Response):
    """Latency statistics in milliseconds; ``ci95_*`` is the order-statistic (binomial) 95% CI of the
    median, ``ci_coverage`` its exact coverage (below 0.95 only when ``n`` < 6)."""

    n: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    ci95_low_ms: float
    ci95_high_ms: float
    ci_coverage: float
    total_s: float
    samples_ms: list[float] | None = None


class PairedLatency(_Response):
    """The model and a reference timed in turns in one process (``MeasureRequest.reference``): each turn
    gives each one untimed call and ``burst`` timed ones, the order rotating. ``ratio_p50``: the median over
    turns of each turn's ratio model / reference of its bursts' fastest runs (``_stats.paired_ratio``: a
    turn's two bursts ran back to back, so what changes between turns cancels, and the fastest run of a
    burst is the one no other process preempted); ``ratio_ci95_*``: the order-statistic 95% CI of that
    median; ``ratio_p90``: the model's pooled p90 over the reference's."""

    reference: str
    reference_runtime: str
    runs: int
    burst: int
    model: LatencyStats
    reference_latency: LatencyStats
    ratio_p50: float
    ratio_p90: float
    ratio_ci95_low: float
    ratio_ci95_high: float


class PowerStats(_Response):
    """Power while the model-only loop ran. ``source``: tegrastats | ina3221-hwmon | rapl."""

    source: str
    rails_mw: dict[str, float] = Field(default_factory=dict)
    total_mw: float | None = None
    total_rail: str | None = None
    energy_per_inference_mj: float | None = None
    samples: int = 0
    duration_s: float = 0.0
    note: str = ""


class RuntimeUsed(_Response):
    name: str
    version: str
    providers_requested: list[str] = Field(default_factory=list)
    providers_used: list[str] = Field(default_factory=list)
    detail: dict[str, Any] = Field(default_factory=dict)


class Board(_Response):
    """``vendor``: jetson | raspberry-pi | generic; ``model`` from the device tree (or DMI)."""

    vendor: str
    model: str
    soc: str | None = None
    compatible: list[str] = Field(default_factory=list)


class CPUInfo(_Response):
    model: str
    arch: str
    logical_cores: int
    allowed_cpus: list[int] = Field(default_factory=list)
    features: list[str] = Field(default_factory=list)
    dotprod: bool = False
    i8mm: bool = False
    vnni: bool = False
    avx512: bool = False
    governor: str | None = None


class OSInfo(_Response):
    name: str
    kernel: str
    python: str
    l4t: str | None = None


class RuntimeInfo(_Response):
    name: str
    version: str | None = None
    available_providers: list[str] = Field(default_factory=list)
    error: str | None = None


class AgentSettings(_Response):
    threads: int
    cpus: list[int] = Field(default_factory=list)
    queue_size: int
    max_artifact_bytes: int
    max_dataset_bytes: int
    measure_timeout_s: float


class DeviceInfo(_Response):
    """``GET /info``: the device fingerprint. ``kind`` is what the operator declared (``--kind``) or,
    if none, ``detected_kind``. Volatile parts (temperatures, throttling, power mode) are read per call."""

    protocol: str = PROTOCOL_VERSION
    name: str
    kind: str
    detected_kind: str
    edgetune_version: str
    board: Board
    os: OSInfo
    cpu: CPUInfo
    memory_bytes: int
    runtime: RuntimeInfo
    runtimes: list[RuntimeInfo] = Field(default_factory=list)  # every runtime offered, the default (runtime) first
    agent: AgentSettings
    power_mode: str | None = None
    clocks_locked: bool | None = None
    power_sensors: list[str] = Field(default_factory=list)
    temperatures_c: dict[str, float] = Field(default_factory=dict)
    throttling: dict[str, bool] | None = None

    @property
    def offered_runtimes(self) -> list[str]:
        """Names of the runtimes a request may ask for (an agent before protocol 1.2 offers only ``runtime``)."""
        return [r.name for r in self.runtimes] or [self.runtime.name]


class Measurement(_Response):
    """One artifact measured on one device: latency (model-only and end-to-end), memory, power,
    accuracy from this runtime's outputs, and the provenance of every number.

    Memory: ``peak_rss_bytes`` is the measuring process's peak resident memory (Python, the runtime, the
    model AND the validation bundle, so it moves with the input size and the dataset); the model's own
    footprint is apart: ``model_rss_bytes`` is the resident memory the runtime session added from just
    before it was created to just after it loaded (weights, graph, whatever the runtime loads for its first
    session), ``run_rss_bytes`` the same growth measured after the model-only timed loop (plus the
    activation arena and buffers of inference). Both are None where the current RSS cannot be read
    (``/proc/self/statm``: Linux only).

    Throttling: ``device.throttling`` is read just before the measurement, ``throttling_after`` just after
    the model-only timed loop (both None where the board exposes no flags); ``throttled`` lists the
    conditions active in either reading (``under_voltage``, ``freq_capped``, ``throttled``,
    ``soft_temp_limit``): empty when none was, None when the board exposes no flags.

    ``realised_precision``: weighted ONNX node -> the precision the runtime executed it in (``int8``,
    ``fp16``, ``bf16``, ``fp32``, or ``float`` where the runtime does not say which), read after the
    timed loops from what the runtime exposes (onnxruntime CPU: its optimized graph; OpenVINO: the compiled
    model's runtime graph); None where it exposes nothing (NCNN, TensorRT)."""

    protocol: str = PROTOCOL_VERSION
    artifact: str
    dataset: str | None = None
    runtime: RuntimeUsed
    threads: int
    cpus: list[int] = Field(default_factory=list)
    batch: int = 1
    input_shape: list[int] = Field(default_factory=list)
    output_shape: list[int] = Field(default_factory=list)
    latency: LatencyStats
    end_to_end: LatencyStats | None = None
    paired: PairedLatency | None = None
    peak_rss_bytes: int | None = None
    baseline_rss_bytes: int | None = None
    model_rss_bytes: int | None = None
    run_rss_bytes: int | None = None
    power: PowerStats | None = None
    accuracy: dict[str, float] | None = None
    accuracy_images: int = 0
    session_load_s: float = 0.0
    device: DeviceInfo
    temperatures_after_c: dict[str, float] = Field(default_factory=dict)
    throttling_after: dict[str, bool] | None = None
    throttled: list[str] | None = None
    realised_precision: dict[str, str] | None = None
    started_at: float
    finished_at: float
    wall_s: float
    warnings: list[str] = Field(default_factory=list)


class Comparison(_Response):
    """``POST /compare``: model-only latency of each artifact (by sha256, or ``sha256@runtime`` when the
    request named runtimes), all timed in one interleaved loop. ``runtime`` is the first entry's runtime,
    ``runtimes`` each key's. ``ratios``: each key's (ratio, 95% CI low, high) to the first key, the estimator
    of ``Measurement.paired`` (``_stats.paired_ratio``: median over turns of the ratio of the bursts' fastest
    runs), so a check at the end of a sweep orders the models as their paired trials did."""

    protocol: str = PROTOCOL_VERSION
    artifacts: list[str]
    latency: dict[str, LatencyStats]
    runs: int
    burst: int
    runtime: RuntimeUsed
    runtimes: dict[str, RuntimeUsed] = Field(default_factory=dict)
    ratios: dict[str, tuple[float, float, float]] = Field(default_factory=dict)
    threads: int
    cpus: list[int] = Field(default_factory=list)
    device: DeviceInfo
    started_at: float
    finished_at: float
    wall_s: float
    warnings: list[str] = Field(default_factory=list)


class Health(_Response):
    protocol: str = PROTOCOL_VERSION
    status: str = "ok"
    name: str
    kind: str
    edgetune_version: str


class UploadResult(_Response):
    protocol: str = PROTOCOL_VERSION
    sha256: str
    bytes: int
    created: bool


class QueueStatus(_Response):
    protocol: str = PROTOCOL_VERSION
    running: bool
    running_since: float | None = None
    waiting: int
    capacity: int
    completed: int


class ErrorInfo(_Response):
    type: str
    message: str


class ErrorBody(_Response):
    protocol: str = PROTOCOL_VERSION
    error: ErrorInfo
