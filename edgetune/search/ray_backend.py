"""The Ray backend: the same sweep with compression on Ray workers and device access through one
fleet actor (so one device never runs two measurements at once, wherever the workers are).

The driver keeps Optuna and MLflow (a single writer); each trial is a Ray task that rebuilds the model,
data and space once per worker process (cached), compresses, and asks the fleet actor to measure.
Artifacts are written to ``workdir``, which must be on a filesystem the driver shares with the workers
(local Ray; NFS on a cluster).
"""

from __future__ import annotations

import os
from pathlib import Path

from edgetune._imports import require
from edgetune._logging import get_logger
from edgetune.search.runner import SweepHooks, TrialPlan, TrialResult, run_one

log = get_logger(__name__)

__all__ = ["execute_trials_ray", "init_ray"]

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
    """Inside a Ray worker: compress here, measure through the fleet actor."""

    def __init__(self, state, fleet_actor, devices: list[str], cfg):
        self.state, self.fleet_actor, self.devices, self.cfg = state, fleet_actor, devices, cfg

    def devices_for_objectives(self) -> list[str]:
        return self.devices

    def compress(self, plan: TrialPlan):
        return self.state.compress(plan)

    def measure(self, artifact, device: str):
        import ray

        return ray.get(self.fleet_actor.measure.remote(device, str(artifact.onnx_path.parent)))


def _worker_state(config_path: str, workdir: str):
    """Model, data, space and local hooks of this sweep, built once per worker process."""
    key = f"{config_path}|{workdir}"
    if key not in _WORKER_CACHE:
        from edgetune.config import load_sweep_config
        from edgetune.data import load_data
        from edgetune.models import load_model
        from edgetune.search.wiring import LocalHooks
        from edgetune.spaces import build_space

        cfg = load_sweep_config(config_path)
        splits = load_data(cfg.data, need_train=cfg.recovery.steps > 0)
        loaded = load_model(cfg.model, class_names=splits.val.class_names, category_ids=splits.val.category_ids)
        kinds = [d.kind for d in cfg.devices if d.kind] or None
        space = build_space(loaded, cfg.space, targets=kinds)
        _WORKER_CACHE[key] = (cfg, LocalHooks(cfg=cfg, loaded=loaded, splits=splits, space=space, fleet=None,
                                              workdir=Path(workdir)))
    return _WORKER_CACHE[key]


def _trial_task(config_path: str, workdir: str, number: int, config_json: dict, baseline, params: dict,
                devices: list[str], fleet_actor) -> dict:
    from edgetune.spaces import CompressionConfig

    cfg, local = _worker_state(config_path, workdir)
    plan = TrialPlan(number, None, CompressionConfig.model_validate(config_json), baseline, params)
    result = run_one(plan, _WorkerHooks(local, fleet_actor, devices, cfg))
    art = result.artifact
    return {"number": result.number, "ok": result.ok, "values": result.values, "record": result.record,
            "error": result.error, "wall_s": result.wall_s, "artifact_dir": str(art.onnx_path.parent) if art else None}


class _FleetActor:
    """Owns the fleet's HTTP clients and leases; ``measure`` calls are serialised per actor."""

    def __init__(self, device_specs: list[dict], dataset_hash: str | None, measure_kwargs: dict,
                 tokens: dict[str, str] | None = None):
        from edgetune.device_agents.fleet import DeviceSpec
        from edgetune.search._fleet import SweepFleet

        self.fleet = SweepFleet([DeviceSpec.model_validate(d) for d in device_specs], tokens=tokens)
        self.fleet.dataset_hash = dataset_hash
        self.kwargs = measure_kwargs

    def measure(self, device: str, artifact_dir: str) -> dict:
        from edgetune.compress import Artifact

        m = self.fleet.measure(device, Artifact.load(artifact_dir), **self.kwargs)
        return m.model_dump(exclude={"latency": {"samples_ms"}, "end_to_end": {"samples_ms"}})


def execute_trials_ray(plans, hooks, *, cfg, config_path: Path, workdir: Path, on_result) -> None:
    """Run plans on Ray with up to ``search.concurrency`` trials in flight."""
    import ray

    from edgetune.compress import Artifact

    init_ray(cfg.search.address)
    actor_cls = ray.remote(num_cpus=0)(_FleetActor)
    fleet_actor = actor_cls.remote([d.model_dump() for d in cfg.devices], getattr(hooks.fleet, "dataset_hash", None),
                                   {"latency_runs": cfg.search.latency_runs, "warmup": cfg.search.latency_warmup,
                                    "timeout_s": cfg.search.measure_timeout_s},
                                   {d.name: hooks.fleet.fleet[d.name]._token for d in cfg.devices
                                    if hooks.fleet.fleet[d.name]._token})
    task = ray.remote(num_cpus=1, max_retries=0)(_trial_task)
    devices = hooks.devices_for_objectives()
    inflight: dict = {}
    exhausted = False
    while True:
        while not exhausted and len(inflight) < cfg.search.concurrency:
            plan = plans()
            if plan is None:
                exhausted = True
                break
            ref = task.remote(str(Path(config_path).resolve()), str(Path(workdir).resolve()), plan.number,
                              plan.config.model_dump(mode="json"), plan.baseline, plan.params, devices, fleet_actor)
            inflight[ref] = plan
        if not inflight:
            break
        done, _ = ray.wait(list(inflight), num_returns=1)
        plan = inflight.pop(done[0])
        try:
            d = ray.get(done[0])
            art = Artifact.load(d["artifact_dir"]) if d["artifact_dir"] else None
            result = TrialResult(d["number"], d["ok"], d["values"], d["record"], art, d["error"], d["wall_s"])
        except Exception as exc:  # a worker that died: the trial fails, the sweep goes on
            result = TrialResult(plan.number, False, {}, {"error": f"Ray task failed: {exc}"}, None,
                                 f"Ray task failed: {exc}", 0.0)
        on_result(plan, result)
