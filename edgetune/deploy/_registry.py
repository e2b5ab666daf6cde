"""Register a deployed model in the MLflow model registry (``MlflowClient`` with explicit run ids).

Each deployment gets its own run in the sweep's experiment (tag ``edgetune.role=deployment``; not a
child of the sweep run, so the sweep's own reconciliation never touches it) holding ``model/model.onnx``
+ ``model/manifest.json``, the verification and the device fingerprint. The model version's ``source``
is that run's ``model`` folder; its tags carry the manifest's identity (hashes, sizes, input, head), the
re-measured metrics and the device; the alias ``<device>-production`` points at it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass

from edgetune._logging import get_logger

log = get_logger(__name__)

__all__ = ["Registration", "register_deployment", "move_alias", "production_alias"]


@dataclass(frozen=True)
class Registration:
    model: str
    version: int
    alias: str
    run_id: str
    source: str

    @property
    def uri(self) -> str:
        return f"models:/{self.model}@{self.alias}"


def production_alias(device: str) -> str:
    return f"{device}-production"


def _client(uri: str):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _manifest_tags(manifest: dict) -> dict[str, str]:
    src, cal = manifest.get("source") or {}, manifest.get("calibration") or {}
    tags = {"artifact_hash": manifest.get("artifact_hash"), "onnx_sha256": manifest.get("onnx_sha256"),
            "config_hash": manifest.get("config_hash"), "source.model": src.get("model"),
            "source.weights_sha256": src.get("weights_sha256"), "calibration.sha256": cal.get("sha256"),
            "input": json.dumps(manifest.get("input")), "head": json.dumps(manifest.get("head")),
            "sizes": json.dumps(manifest.get("sizes"))}
    return {f"manifest.{k}": str(v)[:8000] for k, v in tags.items() if v is not None}


def register_deployment(*, cfg, point, artifact, model_name: str, device: str, deployment, verification,
                        fingerprint: dict) -> Registration:
    """Log the deployment run and create the registered model version + alias; returns where it is."""
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    from edgetune.search.tracking import artifact_root

    client = _client(cfg.tracking.uri)
    active = deployment.active_version
    done = _registered_already(client, model_name, device, deployment.name, active.version, active.sha256)
    if done is not None:  # the same bytes as the same version on the same device: deploying again is a no-op
        client.set_registered_model_alias(model_name, production_alias(device), done.version)
        log.info("%s version %s already registers '%s' v%d on %s", model_name, done.version, deployment.name,
                 active.version, device)
        return Registration(model=model_name, version=int(done.version), alias=production_alias(device),
                            run_id=done.run_id, source=done.source)
    experiment = cfg.tracking.experiment or cfg.name
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment, artifact_location=artifact_root(cfg.tracking.uri))
    tags = {"edgetune.role": "deployment", "edgetune.sweep": cfg.name, "edgetune.deploy.trial": str(point.number),
            "edgetune.deploy.device": device, "edgetune.deploy.name": deployment.name,
            "edgetune.deploy.version": str(active.version), "edgetune.deploy.path": deployment.current_path,
            "verified": str(verification.ok and verification.compared).lower()}
    run = client.create_run(exp_id, run_name=f"deploy-{deployment.name}-{device}-v{active.version}", tags=tags)
    rid = run.info.run_id
    ts = int(time.time() * 1000)
    metrics = {f"device.{k.replace('@', '.')}": v for k, v in verification.measured.items()}
    metrics.update({f"sweep.{k.replace('@', '.')}": v for k, v in point.values.items()})
    if verification.max_accuracy_diff is not None:
        metrics["verify.max_accuracy_diff"] = verification.max_accuracy_diff
    for key, lat in verification.latency.items():
        metrics[f"verify.{key.replace('@', '.')}.diff_ms"] = lat["diff_ms"]
    params = {"sweep": cfg.name, "trial": point.number, "device": device, "deployment": deployment.name,
              "deployment_version": active.version, "artifact_hash": artifact.hash, "onnx_sha256": active.sha256,
              "label": point.label}
    client.log_batch(rid, metrics=[Metric(k, float(v), ts, 0) for k, v in metrics.items()],
                     params=[Param(k, str(v)) for k, v in params.items()])
    client.log_artifact(rid, str(artifact.onnx_path), "model")
    client.log_dict(rid, artifact.manifest, "model/manifest.json")
    client.log_dict(rid, verification.to_dict(), "verification.json")
    client.log_dict(rid, fingerprint, "device.json")
    client.set_terminated(rid, "FINISHED")

    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name, tags={"edgetune.sweep": cfg.name},
                                       description=f"edgetune deployments of sweep '{cfg.name}'")
    version_tags = {**_manifest_tags(artifact.manifest), **tags,
                    **{k: f"{v:.6g}" for k, v in metrics.items() if k.startswith(("device.", "verify."))},
                    "device.fingerprint": json.dumps(fingerprint, default=str)[:8000]}
    source = f"{run.info.artifact_uri}/model"
    mv = client.create_model_version(model_name, source=source, run_id=rid, tags=version_tags,
                                     description=f"trial {point.number} ({point.label}) of sweep '{cfg.name}', "
                                                 f"deployed to {device} as '{deployment.name}' v{active.version}")
    alias = production_alias(device)
    client.set_registered_model_alias(model_name, alias, mv.version)
    log.info("registered %s version %s (alias %s, run %s)", model_name, mv.version, alias, rid)
    return Registration(model=model_name, version=int(mv.version), alias=alias, run_id=rid, source=source)


def _registered_already(client, model_name: str, device: str, deployment_name: str, version: int, sha256: str):
    """The model version that already records this deployment version with these bytes, or None."""
    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except Exception:  # no such registered model yet
        return None
    return next((v for v in versions if v.tags.get("edgetune.deploy.device") == device
                 and v.tags.get("edgetune.deploy.name") == deployment_name
                 and v.tags.get("edgetune.deploy.version") == str(version)
                 and v.tags.get("manifest.onnx_sha256") == sha256), None)


def move_alias(*, uri: str, model_name: str, device: str, deployment_name: str, sha256: str) -> int | None:
    """Point ``<device>-production`` at the newest model version of ``deployment_name`` on ``device`` with
    these bytes (after a rollback); returns the version, or None when the registry has none."""
    client = _client(uri)
    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except Exception as exc:
        log.warning("model registry %s not readable (%s); alias not moved", uri, exc)
        return None
    match = [v for v in versions if v.tags.get("edgetune.deploy.device") == device
             and v.tags.get("edgetune.deploy.name") == deployment_name and v.tags.get("manifest.onnx_sha256") == sha256]
    if not match:
        return None
    best = max(match, key=lambda v: int(v.version))
    client.set_registered_model_alias(model_name, production_alias(device), best.version)
    return int(best.version)
