"""``POST /measure``: measure an uploaded artifact in a child process, one at a time per agent.
``POST /compare``: time several uploaded artifacts side by side, interleaved, in one child process."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request

from edgetune.device_agents.probes import active_conditions
from edgetune.device_agents.protocol import CompareRequest, Comparison, Measurement, MeasureRequest
from edgetune.device_agents.server._errors import ERROR_RESPONSES, ApiError

__all__ = ["router"]

router = APIRouter(responses=ERROR_RESPONSES)  # the token: checked by the gate middleware, before the body


def _check(state, runtimes, artifacts) -> None:
    cfg = state.config
    offered = cfg.offered_runtimes
    for runtime in runtimes:
        if runtime is not None and runtime not in offered:
            raise ApiError(400, "BadRequest", f"this agent offers the runtime(s) {', '.join(offered)}, the request asks "
                           f"for '{runtime}'; start the agent with --runtime {','.join((*offered, runtime))} or drop "
                           "`runtime`.")
    for sha in artifacts:
        if not state.artifacts.has(sha):
            raise ApiError(404, "ArtifactMissing", f"artifact {sha} is not on this agent; upload it first "
                           f"(PUT /artifacts/{sha}).")


def _job_base(cfg, runtime: str | None = None) -> dict:
    return {"runtime": runtime or cfg.runtime, "threads": cfg.threads, "cpus": list(cfg.cpus), "cache_dir": str(cfg.workdir / "cache"),
            "max_memory_bytes": cfg.max_memory_bytes, "agent_pid": os.getpid(),
            "sensor_root": str(cfg.sensor_root) if cfg.sensor_root is not None else None}


@router.post("/measure", response_model=Measurement)
async def measure(req: MeasureRequest, request: Request) -> Measurement:
    state = request.app.state.agent
    cfg = state.config
    _check(state, [req.runtime, req.reference_runtime], [req.artifact, *([req.reference] if req.reference else [])])
    if req.dataset is not None and not state.datasets.has(req.dataset):
        raise ApiError(404, "DatasetMissing", f"dataset {req.dataset} is not on this agent; upload it first "
                       f"(PUT /datasets/{req.dataset}).")
    job = {
        "request": req.model_dump(mode="json"), "artifact_path": str(state.artifacts.path(req.artifact)),
        "dataset_path": str(state.datasets.path(req.dataset)) if req.dataset else None, **_job_base(cfg, req.runtime),
        "reference_path": str(state.artifacts.path(req.reference)) if req.reference else None,
    }
    timeout = min(req.timeout_s or cfg.measure_timeout_s, cfg.measure_timeout_s)
    result, started, finished, device = await state.scheduler.run(job, timeout=timeout, before=state.fingerprint)
    # flagged when a condition held just before the measurement or right after its timed loop
    throttled = active_conditions(device.throttling, result.get("throttling_after"))
    return Measurement(artifact=req.artifact, dataset=req.dataset, device=device, started_at=started,
                       finished_at=finished, wall_s=finished - started, throttled=throttled, **result)


@router.post("/compare", response_model=Comparison)
async def compare(req: CompareRequest, request: Request) -> Comparison:
    state = request.app.state.agent
    cfg = state.config
    _check(state, [req.runtime, *(req.runtimes or ())], req.artifacts)
    job = {"task": "compare", "request": req.model_dump(mode="json"),
           "artifact_paths": {sha: str(state.artifacts.path(sha)) for sha in req.artifacts},
           **_job_base(cfg, req.runtime)}
    timeout = min(req.timeout_s or cfg.measure_timeout_s, cfg.measure_timeout_s)
    result, started, finished, device = await state.scheduler.run(job, timeout=timeout, before=state.fingerprint)
    return Comparison(device=device, started_at=started, finished_at=finished, wall_s=finished - started, **result)
