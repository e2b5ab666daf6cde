"""``POST /measure``: measure an uploaded artifact in a child process, one at a time per agent."""

from __future__ import annotations

import os

from fastapi import APIRouter, Depends, Request

from edgetune.device_agents.protocol import Measurement, MeasureRequest
from edgetune.device_agents.server._auth import require_token
from edgetune.device_agents.server._errors import ApiError

__all__ = ["router"]

router = APIRouter(dependencies=[Depends(require_token)])


@router.post("/measure", response_model=Measurement)
async def measure(req: MeasureRequest, request: Request) -> Measurement:
    state = request.app.state.agent
    cfg = state.config
    if req.runtime is not None and req.runtime != cfg.runtime:
        raise ApiError(400, "BadRequest", f"this agent runs the '{cfg.runtime}' runtime, the request asks for "
                       f"'{req.runtime}'; start an agent with --runtime {req.runtime} or drop `runtime`.")
    if not state.artifacts.has(req.artifact):
        raise ApiError(404, "ArtifactMissing", f"artifact {req.artifact} is not on this agent; upload it first "
                       f"(PUT /artifacts/{req.artifact}).")
    if req.dataset is not None and not state.datasets.has(req.dataset):
        raise ApiError(404, "DatasetMissing", f"dataset {req.dataset} is not on this agent; upload it first "
                       f"(PUT /datasets/{req.dataset}).")
    job = {
        "request": req.model_dump(mode="json"), "artifact_path": str(state.artifacts.path(req.artifact)),
        "dataset_path": str(state.datasets.path(req.dataset)) if req.dataset else None,
        "runtime": cfg.runtime, "threads": cfg.threads, "cpus": list(cfg.cpus),
        "cache_dir": str(cfg.workdir / "cache"), "max_memory_bytes": cfg.max_memory_bytes, "agent_pid": os.getpid(),
    }
    timeout = min(req.timeout_s or cfg.measure_timeout_s, cfg.measure_timeout_s)
    result, started, finished, device = await state.scheduler.run(job, timeout=timeout, before=state.fingerprint)
    return Measurement(artifact=req.artifact, dataset=req.dataset, device=device, started_at=started,
                       finished_at=finished, wall_s=finished - started, **result)
