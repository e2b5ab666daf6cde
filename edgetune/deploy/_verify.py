"""Re-measure a deployed model on its device and compare with the sweep's measurement of the same trial.

The device measures the deployment's bytes (``POST /measure`` with their sha256) on the sweep's own
validation bundle (rebuilt from the sweep config: same data, same head, same bytes, same hash) with the
sweep's latency settings. On the same runtime (name, version, execution providers) the accuracy values
must match within ``tolerance`` (1e-4): the model and the data are the same bytes. Latency is reported
(difference and ratio), never enforced: it moves with temperature and load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from edgetune._logging import get_logger

log = get_logger(__name__)

__all__ = ["Verification", "sweep_bundle", "verify_on_device", "MAP_TOLERANCE"]

MAP_TOLERANCE = 1e-4
_ACCURACY = ("map", "top")


@dataclass
class Verification:
    device: str
    compared: bool  # the sweep measured this trial on this device
    same_runtime: bool
    runtime_sweep: str | None
    runtime_device: str
    tolerance: float
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # key -> {sweep, device, diff}
    latency: dict[str, dict[str, float]] = field(default_factory=dict)  # key -> {sweep, device, diff_ms, ratio}
    measured: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def max_accuracy_diff(self) -> float | None:
        return max((abs(v["diff"]) for v in self.accuracy.values()), default=None)

    @property
    def ok(self) -> bool:
        """False only when the same runtime gives different accuracy than in the sweep."""
        diff = self.max_accuracy_diff
        return not (self.compared and self.same_runtime and diff is not None and diff > self.tolerance)

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok, "max_accuracy_diff": self.max_accuracy_diff}


def sweep_bundle(cfg, manifest: dict):
    """The sweep's validation bundle, rebuilt from its data section and the artifact's head and input size."""
    from edgetune.data import load_data
    from edgetune.device_agents.bundle import make_bundle
    from edgetune.models.heads import head_from_dict

    splits = load_data(cfg.data)
    return make_bundle(splits.val, head_from_dict(manifest["head"]), size=int(manifest["input"]["shape"][-1])), splits.val


def verify_on_device(client, sha256: str, *, bundle, cfg, point, device: str, tolerance: float = MAP_TOLERANCE,
                     runtime: str | None = None):
    """(Verification, Measurement) of the bytes ``sha256`` already on the agent behind ``client``, run on
    ``runtime`` (None: the agent's default)."""
    from edgetune.objectives import SE_SUFFIX, measurement_values

    search = cfg.search
    m = client.measure(sha256, dataset=bundle, latency={"warmup": search.latency_warmup, "min_runs": search.latency_runs,
                                                "min_seconds": search.latency_min_seconds},
                       runtime=runtime, timeout_s=search.measure_timeout_s)
    d = m.model_dump(exclude={"latency": {"samples_ms"}, "end_to_end": {"samples_ms"}})
    measured = measurement_values(d, device)
    runtime_device = f"{m.runtime.name} {m.runtime.version}"
    fp = point.record.fingerprints.get(device) or {}
    runtime_sweep = fp.get("runtime")
    same = runtime_sweep == runtime_device and (fp.get("providers") or "") == ",".join(m.runtime.providers_used)
    sweep_values = point.values
    suffix = f"@{device}"
    compared = any(k.endswith(suffix) for k in sweep_values)
    v = Verification(device=device, compared=compared, same_runtime=same, runtime_sweep=runtime_sweep,
                     runtime_device=runtime_device, tolerance=tolerance, measured=measured)
    if not compared:
        v.warnings.append(f"the sweep did not measure trial {point.number} on '{device}': nothing to compare with; the "
                          "device's numbers are reported as measured")
        return v, m
    for key, got in measured.items():
        metric = key[: -len(suffix)]
        want = sweep_values.get(key)
        if want is None:
            continue
        if metric.startswith(_ACCURACY) and not metric.endswith(SE_SUFFIX):
            v.accuracy[key] = {"sweep": want, "device": got, "diff": got - want}
        elif "latency" in metric and "_ms" in metric:
            want = sweep_values.get(f"own_{key}", want)  # a paired trial: its own timing, as measured here
            v.latency[key] = {"sweep": want, "device": got, "diff_ms": got - want, "ratio": got / want if want else 0.0}
    if not v.accuracy:
        v.warnings.append("no accuracy value to compare (the sweep or the device measured none)")
    if not same:
        v.warnings.append(f"the runtime differs from the sweep's ({runtime_sweep} -> {runtime_device}, providers "
                          f"{fp.get('providers')} -> {','.join(m.runtime.providers_used)}): accuracy differences are "
                          f"reported, not enforced")
    return v, m
