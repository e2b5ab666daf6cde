"""Deployments: ``PUT /deployments/{name}`` (verified, versioned, atomic), ``GET /deployments[/{name}]``,
``POST /deployments/{name}/rollback`` and ``POST /deployments/{name}/predict`` (one image, run in the
measurement child process). Re-measuring a deployment is ``POST /measure`` with its version's sha256.
Wire models: :mod:`edgetune.device_agents.deploy_protocol`; storage: ``_deployments``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from pathlib import Path

from fastapi import APIRouter, Query, Request
from starlette.datastructures import UploadFile

from edgetune.device_agents.deploy_protocol import (
    Deployment,
    DeploymentList,
    DeployResult,
    Prediction,
    RollbackRequest,
)
from edgetune.device_agents.server._deployments import check_name
from edgetune.device_agents.server._errors import ERROR_RESPONSES, ApiError, NamePath
from edgetune.device_agents.server._store import check_sha

__all__ = ["router", "MAX_MANIFEST_BYTES"]

router = APIRouter(responses=ERROR_RESPONSES)  # the token: checked by the gate middleware, before the body
MAX_MANIFEST_BYTES = 1 << 20
_CHUNK = 1 << 20


def _manifest(raw, sha: str) -> dict:
    if not isinstance(raw, str):
        raise ApiError(400, "BadRequest", "form field `manifest` (the artifact manifest as JSON text) is missing.")
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(400, "BadRequest", f"form field `manifest` is not JSON: {exc}.") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("deployment", {}), dict):
        raise ApiError(400, "BadRequest", "`manifest` must be a JSON object (and its `deployment` entry an object).")
    if manifest.get("onnx_sha256") not in (None, sha):
        raise ApiError(400, "ManifestMismatch", f"the manifest describes ONNX bytes with sha256 {manifest['onnx_sha256']}, "
                       f"but the push says {sha}; push the manifest that belongs to this model. Nothing was deployed.")
    return manifest


async def _receive(upload: UploadFile, tmp_dir: Path, *, sha: str, max_bytes: int, check, active: str) -> tuple[Path, int]:
    """Copy the uploaded model to a temp file while hashing it; refuse a wrong hash or non-ONNX bytes."""
    tmp = tmp_dir / f"{sha}.{uuid.uuid4().hex}"
    digest, size = hashlib.sha256(), 0
    try:
        with open(tmp, "wb") as f:
            while chunk := await upload.read(_CHUNK):
                size += len(chunk)
                if size > max_bytes:
                    raise ApiError(413, "PayloadTooLarge", f"the model exceeds {max_bytes} bytes; start the agent "
                                   "with a larger --max-artifact-mb.")
                digest.update(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        if digest.hexdigest() != sha:
            raise ApiError(400, "HashMismatch", f"the uploaded model has sha256 {digest.hexdigest()}, not {sha} as the "
                           f"push says (corrupted, or the wrong file); nothing was replaced ({active}).")
        problem = await asyncio.to_thread(check, tmp) if check is not None else None  # off the event loop
        if problem:
            raise ApiError(415, "UnsupportedContent", f"refused this model: {problem}. Nothing was replaced ({active}).")
        return tmp, size
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _active_text(store, name: str) -> str:
    try:
        return f"'{name}' stays at v{store.get(name).active}"
    except ApiError:
        return f"'{name}' has no version yet"


@router.put("/deployments/{name}", response_model=DeployResult)
async def put_deployment(name: NamePath, request: Request) -> DeployResult:
    state = request.app.state.agent
    store = state.deployments
    check_name(name)  # the body's size: capped by the gate middleware as it streams (413), chunked or not
    form = await request.form(max_files=1, max_fields=2, max_part_size=MAX_MANIFEST_BYTES)
    try:
        sha = check_sha(str(form.get("sha256") or ""))
        manifest = _manifest(form.get("manifest"), sha)
        upload = form.get("model")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "BadRequest", "form file `model` (the ONNX bytes) is missing.")
        tmp, size = await _receive(upload, store.tmp, sha=sha, max_bytes=state.config.max_artifact_bytes,
                                   check=state.artifacts.check, active=_active_text(store, name))
    finally:
        await form.close()
    deployment, created, previous = await asyncio.to_thread(store.commit, name, tmp, sha256=sha, size=size,
                                                            manifest=manifest)
    return DeployResult(deployment=deployment, created=created, previous=previous)


@router.get("/deployments", response_model=DeploymentList)
def list_deployments(request: Request) -> DeploymentList:
    return DeploymentList(deployments=request.app.state.agent.deployments.all())


@router.get("/deployments/{name}", response_model=Deployment)
def get_deployment(name: NamePath, request: Request) -> Deployment:
    return request.app.state.agent.deployments.get(name)


@router.post("/deployments/{name}/rollback", response_model=Deployment)
def rollback(name: NamePath, request: Request, body: RollbackRequest | None = None) -> Deployment:
    return request.app.state.agent.deployments.rollback(name, version=body.version if body else None)


@router.post("/deployments/{name}/predict", response_model=Prediction)
async def predict(name: NamePath, request: Request,
                  score_threshold: float = Query(default=0.25, ge=0.0, le=1.0)) -> Prediction:
    state = request.app.state.agent
    cfg, store = state.config, state.deployments
    deployment = store.get(name)  # the image's size: capped by the gate middleware (413)
    manifest = store.manifest(name, deployment.active)
    if not isinstance(manifest.get("head"), dict):
        raise ApiError(400, "BadRequest", f"deployment '{name}' v{deployment.active} has no task head in its manifest; "
                       "push it with `edgetune deploy` (the manifest of an edgetune artifact has one).")
    form = await request.form(max_files=1, max_fields=1, max_part_size=64 << 10)
    image = store.tmp / f"image.{uuid.uuid4().hex}"
    try:
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "BadRequest", "form file `image` (a PNG / JPEG / BMP / WebP) is missing.")
        with open(image, "wb") as f:
            while chunk := await upload.read(_CHUNK):
                f.write(chunk)
    finally:
        await form.close()
    active = deployment.active_version
    runtime = (manifest.get("deployment") or {}).get("runtime") or cfg.runtime  # pinned by `edgetune deploy`
    if runtime not in cfg.offered_runtimes:
        raise ApiError(409, "Conflict", f"deployment '{name}' v{deployment.active} runs on the {runtime} runtime, which "
                       f"this agent does not offer ({', '.join(cfg.offered_runtimes)}); restart it with --runtime "
                       f"{','.join((*cfg.offered_runtimes, runtime))}.")
    job = {"task": "predict", "request": {"artifact": active.sha256}, "artifact_path": active.path,
           "image_path": str(image), "head": manifest["head"], "score_threshold": score_threshold,
           "labels": (manifest.get("deployment") or {}).get("labels"), "runtime": runtime,
           "threads": cfg.threads, "cpus": list(cfg.cpus), "cache_dir": str(cfg.workdir / "cache"),
           "max_memory_bytes": cfg.max_memory_bytes, "agent_pid": os.getpid()}
    try:
        result, *_ = await state.scheduler.run(job, timeout=cfg.measure_timeout_s)
    finally:
        image.unlink(missing_ok=True)
    return Prediction(name=name, version=deployment.active, sha256=active.sha256,
                      score_threshold=score_threshold, **result)
