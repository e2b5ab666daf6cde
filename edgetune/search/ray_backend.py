"""The Ray backend: the same sweep with compression on Ray workers and device access through one fleet
actor per device (so one device never runs two measurements at once, wherever the workers are, and
different devices measure at once: a trial on a Jetson does not wait for one on a Pi).

The driver keeps Optuna and MLflow (a single writer). It ships each worker a
:class:`~edgetune.search.runner.RemoteContext`: the validated config and the target kinds it resolved
from the agents, so a worker assembles exactly the driver's space (:func:`edgetune.assembly.assemble`,
once per worker process), compresses, and asks the fleet actor to measure. Artifacts are written to the
workdir, which must be on a filesystem the driver shares with the workers (local Ray; NFS on a cluster).
Importing this module does not import ray.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from edgetune._imports import require
from edgetune._logging import get_logger
from edgetune.search._fleet import bundle_dir
from edgetune.search.backends import Backend, OnResult, Plans, register_backend
from edgetune.search.records import TrialRecord
from edgetune.search.runner import RemoteContext, SweepHooks, TrialPlan, TrialResult, run_one

if TYPE_CHECKING:
    from edgetune.compress import Artifact
    from edgetune.device_agents import Measurement

log = get_logger(__name__)

__all__ = ["RayBackend", "init_ray"]

_WORKER_CACHE: dict[str, object] = {}


def init_ray(address: str | None, *, temp_dir: str | None = None) -> None:
    ray = require("ray", extra="ray", purpose="search.backend: ray")
    if ray.is_initialized():
        return
    kwargs = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": False}
    if address:
        kwargs["address"] = address
    if temp_dir or os.environ.get("EDGETUNE_RAY_TMP"):
        kwargs["_temp_dir"] = temp_dir or os.environ["EDGETUNE_RAY_TMP"]
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(**kwargs)


class _WorkerHooks(SweepHooks):
    """Inside a Ray worker: the driver's compression (local hooks over the same assembled parts), with
    measurements through each device's fleet actor (``fleet_actors``: device name -> actor)."""

    def __init__(self, local, fleet_actors: dict, ctx: RemoteContext):
        self.local, self.fleet_actors, self.ctx = local, fleet_actors, ctx

    def devices_for_objectives(self) -> list[str]:
        return list(self.ctx.devices)

    def compress(self, plan: TrialPlan) -> Artifact:
        return self.local.compress(plan)

    def measure(self, artifact: Artifact, device: str, runtime: str | None = None) -> Measurement:
        from edgetune.device_agents import Measurement

        pair = self.local.paired_with(artifact, runtime)
        ref = (str(pair[0]), pair[1]) if pair is not None else None
        actor = self.fleet_actors[device]
        return Measurement.model_validate(_get(actor.measure.remote(device, str(artifact.onnx_path.parent), runtime,
                                                                    ref)))

    def paired_policy(self) -> tuple[int, float, float, float]:
        return self.local.paired_policy()

    def throttle_policy(self) -> tuple[bool, float]:
        s = self.ctx.cfg.search
        return s.throttle_retry, s.throttle_cooldown_s

    def recover_device(self, device: str, error: Exception) -> float:
        """Through the device's fleet actor, which keeps when it went down for every worker."""
        return _get(self.fleet_actors[device].recover.remote(device, error))

    def artifact_dir(self, artifact_hash: str) -> Path | None:
        return self.local.artifact_dir(artifact_hash)

    def remote(self) -> RemoteContext:
        return self.ctx


def _get(ref):
    """``ray.get``, raising an edgetune error of the actor as itself (its attributes, such as
    ``AgentUnavailable.reached``, decide whether the runner waits or measures again)."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise


def _worker_hooks(ctx: RemoteContext):
    """The local hooks of this sweep, assembled once per worker process for the driver's target kinds."""
    key = f"{ctx.cfg.model_dump_json()}|{ctx.kinds}|{ctx.workdir}"
    if key not in _WORKER_CACHE:
        from edgetune.assembly import assemble
        from edgetune.search.hooks import LocalHooks

        parts = assemble(ctx.cfg, kinds=list(ctx.kinds) if ctx.kinds else None, workdir=ctx.workdir)
        _WORKER_CACHE[key] = LocalHooks(parts, fleet=None, workdir=ctx.workdir)
    return _WORKER_CACHE[key]


def _trial_task(ctx: RemoteContext, number: int, config_json: dict, baseline, params: dict, runtime, fleet_actors,
                recovery_json: dict | None = None, refined_from: int | None = None) -> dict:
    from edgetune.compress import RecoverySpec
    from edgetune.spaces import CompressionConfig

    plan = TrialPlan(number, None, CompressionConfig.model_validate(config_json), baseline, params, runtime,
                     None if recovery_json is None else RecoverySpec.model_validate(recovery_json), refined_from)
    result = run_one(plan, _WorkerHooks(_worker_hooks(ctx), fleet_actors, ctx))
    art = result.artifact
    return {"number": result.number, "ok": result.ok, "values": result.values, "record": result.record.attr(),
            "error": result.error, "wall_s": result.wall_s, "artifact_dir": str(art.onnx_path.parent) if art else None}


class _FleetActor:
    """Owns one device's HTTP clients and leases (one actor per device): its ``measure`` calls run one at a
    time, or as many at once as the device's ``pool`` has agents (a threaded actor; each call leases a free
    member)."""

    def __init__(self, ctx: RemoteContext, device: str):
        from edgetune.device_agents import DeviceSpec
        from edgetune.search._fleet import SweepFleet

        specs = [DeviceSpec.model_validate(d) for d in ctx.device_specs if d["name"] == device]
        self.fleet = SweepFleet(specs, tokens={k: v for k, v in ctx.tokens.items() if k.split("~")[0] == device},
                                bundle_dir=bundle_dir(ctx.workdir))
        self.fleet.dataset_hashes = dict(ctx.dataset_hashes)
        self.kwargs = ctx.measure_kwargs
        self.outage_wait_s = ctx.cfg.search.outage_wait_s

    def measure(self, device: str, artifact_dir: str, runtime: str | None = None,
                reference: tuple[str, str | None] | None = None) -> dict:
        from edgetune.compress import Artifact

        ref = (Path(reference[0]), reference[1]) if reference is not None else None
        m = self.fleet.measure(device, Artifact.load(artifact_dir), runtime=runtime, reference=ref, **self.kwargs)
        return m.model_dump(exclude={"latency": {"samples_ms"}, "end_to_end": {"samples_ms"}})

    def recover(self, device: str, error: Exception) -> float:
        """Wait for ``device`` (see ``SweepFleet.recover``; for a pool, the member that failed)."""
        return self.fleet.recover(device, error, wait_s=self.outage_wait_s)


@register_backend("ray")
class RayBackend(Backend):
    """Up to ``search.concurrency`` trials in flight on Ray (``search.address``; None starts a local Ray)."""

    def run(self, plans: Plans, hooks: SweepHooks, on_result: OnResult) -> None:
        init_ray(self.cfg.search.address)
        import ray

        from edgetune.compress import Artifact

        ctx = hooks.remote()
        actor = ray.remote(num_cpus=0)(_FleetActor)
        pools = {d["name"]: 1 + len(d.get("pool") or ()) for d in ctx.device_specs}
        fleet_actors = {device: actor.options(max_concurrency=pools.get(device, 1)).remote(ctx, device)
                        for device in ctx.devices}
        task = ray.remote(num_cpus=1, max_retries=0)(_trial_task)
        ctx_ref = ray.put(ctx)
        inflight: dict = {}
        exhausted = False
        while True:
            while not exhausted and len(inflight) < self.cfg.search.concurrency:
                plan = plans()
                if plan is None:
                    exhausted = True
                    break
                recovery = None if plan.recovery is None else plan.recovery.model_dump(mode="json")
                inflight[task.remote(ctx_ref, plan.number, plan.config.model_dump(mode="json"), plan.baseline,
                                     plan.params, plan.runtime, fleet_actors, recovery, plan.refined_from)] = plan
            if not inflight:
                break
            done, _ = ray.wait(list(inflight), num_returns=1)
            plan = inflight.pop(done[0])
            try:
                d = ray.get(done[0])
                art = Artifact.load(d["artifact_dir"]) if d["artifact_dir"] else None
                result = TrialResult(d["number"], d["ok"], d["values"], TrialRecord.model_validate(d["record"]), art,
                                     d["error"], d["wall_s"])
            except Exception as exc:  # a worker that died: the trial fails, the sweep goes on
                result = TrialResult(plan.number, False, {}, TrialRecord(baseline=plan.baseline, params=plan.params,
                                                                         error=f"Ray task failed: {exc}"),
                                     None, f"Ray task failed: {exc}", 0.0)
            on_result(plan, result)
