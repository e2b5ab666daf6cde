"""The hooks of a sweep on this machine: compression in this process (content-addressed cache in
``workdir/artifacts``), measurement through the fleet's agents (each device leased for one measurement
at a time). Remote workers build the same hooks from a :class:`~edgetune.search.runner.RemoteContext`."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from edgetune._logging import get_logger
from edgetune.objectives import objective_keys
from edgetune.search.runner import RemoteContext, SweepHooks, TrialPlan

if TYPE_CHECKING:
    from edgetune.compress import Artifact
    from edgetune.device_agents import Measurement

__all__ = ["LocalHooks", "measured_devices"]

log = get_logger(__name__)


def _is_local(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host in ("localhost", "127.0.0.1", "::1", "0.0.0.0") or host.startswith("127."):
        return True
    try:
        return host in (socket.gethostname(), socket.getfqdn())
    except OSError:
        return False


def measured_devices(cfg) -> list[str]:
    """The devices each trial is measured on: those the objectives and constraints name (a constraint
    without ``@device`` reads the first device)."""
    keys, _ = objective_keys(cfg)
    names = [d.name for d in cfg.devices]
    wanted = {k.split("@", 1)[1] for k in keys if "@" in k}
    for c in cfg.constraints:
        wanted.update(n for n in names if f"@{n}" in c)
    if cfg.constraints and names and any("@" not in c for c in cfg.constraints):
        wanted.add(names[0])
    return [n for n in names if n in wanted]


class LocalHooks(SweepHooks):
    """``parts``: the assembled sweep (``edgetune.assembly.SweepParts``); ``fleet``: the SweepFleet (None on
    a remote worker, which measures through its backend instead)."""

    def __init__(self, parts, *, fleet, workdir: Path):
        self.parts, self.cfg, self.fleet = parts, parts.cfg, fleet
        self.workdir = Path(workdir)
        self.artifacts = self.workdir / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self._devices = measured_devices(self.cfg)
        self._reference: tuple[Path, str | None, str] | None = None
        keys, _ = objective_keys(self.cfg)  # pairing pays only where a model-only latency is ranked or constrained
        self._ranks_latency = any(k.startswith(("latency_p50_ms@", "latency_p90_ms@")) for k in keys) or any(
            m in c for c in self.cfg.constraints for m in ("latency_p50_ms", "latency_p90_ms", "p50", "p90"))
        self._reference_lock = threading.Lock()
        self._compress_lock = threading.RLock()
        self._evidence: dict[str, dict] = {}  # artifact hash -> search.screen evidence (a reused model's too)

    def devices_for_objectives(self) -> list[str]:
        return self._devices

    def pool_size(self, device: str) -> int:
        return self.fleet.pool_size(device) if self.fleet is not None else 1

    def parallel_trials(self) -> int:
        if self.fleet is None:
            return 1
        n = min((self.fleet.pool_size(d) for d in self._devices), default=1)
        if n > 1 and not self.overlap_ok():
            log.warning("a pool member runs on this host: the trials' compression runs beside its measurements "
                        "(their paired timings take most of that out; boards of their own keep it out)")
        return n

    def overlap_ok(self) -> bool:
        """Overlap compression with measurement only when no measured device (or pool member) runs on this
        host."""
        return not any(_is_local(u) for d in self.cfg.devices if d.name in self._devices for u in (d.url, *d.pool))

    def compress(self, plan: TrialPlan) -> Artifact:
        from edgetune.compress import compress

        p = self.parts
        with self._compress_lock:  # one at a time in this process (the fp32 reference, overlap, a pool's trials)
            return compress(p.model, plan.config, calib=p.splits.calib, workdir=self.artifacts,
                            train=p.splits.train, recovery=plan.recovery or self.cfg.recovery, space=p.space)

    def evidence(self, artifact: Artifact) -> dict | None:
        """``search.screen``'s evidence: the graph's MACs by precision and input pixels
        (``screen.graph_features``), and the rung: the artifact's accuracy through onnxruntime (1 thread) on
        the first ``search.rung_images`` validation images, scored as the devices score it."""
        s = self.cfg.search
        if s.screen == "off":
            return None
        if (hit := self._evidence.get(artifact.hash)) is not None:
            return hit
        import numpy as np

        from edgetune.evaluation import ort_session
        from edgetune.models import evaluate
        from edgetune.models.heads import head_from_dict
        from edgetune.search.screen import graph_features

        features = graph_features(artifact.onnx_path)
        val = self.parts.splits.val
        sub = val.subset(range(min(s.rung_images, len(val))), name=f"{val.name}-rung")
        sess = ort_session(artifact.onnx_path, threads=1)
        name = sess.get_inputs()[0].name
        size = int(artifact.manifest["input"]["shape"][-1])
        rung = evaluate(lambda x: np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))]),
                        sub, head_from_dict(artifact.manifest["head"]), size=size)
        ev = {"features": {k: round(v, 6) for k, v in features.items()},
              "rung": {k: round(float(v), 6) for k, v in rung.items()}, "rung_images": len(sub)}
        self._evidence[artifact.hash] = ev
        return ev

    def _measure_kwargs(self) -> dict:
        s = self.cfg.search
        return {"latency_runs": s.latency_runs, "warmup": s.latency_warmup, "min_seconds": s.latency_min_seconds,
                "timeout_s": s.measure_timeout_s,
                "power_sample_ms": s.energy_sample_ms}

    def reference(self) -> tuple[Path, str | None, str] | None:
        """(ONNX path, runtime, artifact hash) of the model every trial is timed in turns with
        (``search.paired_timing``): the fp32 baseline on the baseline runtime, built once (a cache hit after
        the fp32 baseline trial); None when paired timing is off or no objective or constraint reads a
        model-only latency."""
        if not self.cfg.search.paired_timing or not self._ranks_latency:
            return None
        with self._reference_lock:
            if self._reference is None:
                space = self.parts.space
                runtime = space.baseline_runtime
                art = self.compress(TrialPlan(-1, None, space.baseline("fp32", runtime), "fp32", {}, runtime))
                self._reference = (art.onnx_path, runtime, art.hash)
        return self._reference

    def paired_with(self, artifact: Artifact, runtime: str | None) -> tuple[Path, str | None] | None:
        """The reference to time ``artifact`` against: None when off, or when it is the reference itself."""
        ref = self.reference()
        if ref is None or (ref[2] == artifact.hash and runtime == ref[1]):
            return None
        return ref[0], ref[1]

    def measure(self, artifact: Artifact, device: str, runtime: str | None = None) -> Measurement:
        return self.fleet.measure(device, artifact, runtime=runtime, reference=self.paired_with(artifact, runtime),
                                  **self._measure_kwargs())

    def paired_policy(self) -> tuple[int, float, float, float]:
        s = self.cfg.search
        return s.paired_retakes, s.paired_retake_wait_s, s.max_paired_spread, s.max_paired_slowdown

    def throttle_policy(self) -> tuple[bool, float]:
        s = self.cfg.search
        return s.throttle_retry, s.throttle_cooldown_s

    def recover_device(self, device: str, error: Exception) -> float:
        if self.fleet is None:
            raise error
        return self.fleet.recover(device, error, wait_s=self.cfg.search.outage_wait_s)

    def watch_devices(self, listener) -> None:
        if self.fleet is not None:
            self.fleet.watch(listener)

    def compare_latency(self, entries: list[tuple[str, str | None]], device: str) -> dict[tuple, dict]:
        s = self.cfg.search
        return self.fleet.compare(device, entries, runs=s.side_by_side_runs, warmup=s.latency_warmup,
                                  timeout_s=s.measure_timeout_s)

    def artifact_dir(self, artifact_hash: str) -> Path | None:
        d = self.artifacts / str(artifact_hash)
        return d if d.is_dir() else None

    def remote(self) -> RemoteContext:
        kinds = tuple(self.parts.kinds) if self.parts.kinds else None
        return RemoteContext(cfg=self.cfg, kinds=kinds, workdir=self.workdir.resolve(),
                             devices=tuple(self._devices), device_specs=tuple(d.model_dump() for d in self.cfg.devices),
                             tokens=self.fleet.tokens() if self.fleet is not None else {},
                             dataset_hashes=dict(self.fleet.dataset_hashes) if self.fleet is not None else {},
                             measure_kwargs=self._measure_kwargs())
