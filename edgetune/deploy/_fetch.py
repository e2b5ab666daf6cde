"""Get the artifact of a trial, checked against its hashes.

In order: the sweep's artifact cache (``<workdir>/artifacts/<hash>/``), then the files the sweep logged
in MLflow for its Pareto front (``model.onnx`` + ``manifest.json`` under the trial's run ``model/``, or
the parent run's ``front/trial-<n>/``), then a rebuild with :func:`edgetune.compress.compress` from the trial's config and the source weights.
Every path ends in :meth:`Artifact.load`, which checks the ONNX bytes against the manifest's
``onnx_sha256``; the manifest's ``artifact_hash`` must be the one the sweep recorded for the trial.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from edgetune._logging import get_logger
from edgetune.errors import CompressionError, DeployError

log = get_logger(__name__)

__all__ = ["fetch_artifact"]


def fetch_artifact(sweep, point, *, workdir: str | Path, rebuild: bool = True):
    """(Artifact, where it came from: ``cache`` | ``mlflow`` | ``rebuilt``) for trial ``point``."""
    from edgetune.compress import Artifact

    expected = point.artifact_hash
    if not expected:
        raise DeployError(f"trial {point.number} of sweep '{sweep.name}' has no artifact hash in its record "
                          "(its compression failed?); pick another trial.")
    cache = Path(workdir) / "artifacts"
    directory = cache / expected
    if (directory / "manifest.json").is_file():
        try:
            return _checked(Artifact.load(directory), expected, "the artifact cache"), "cache"
        except (CompressionError, DeployError) as exc:
            log.warning("cached artifact of trial %d is unusable (%s); trying MLflow", point.number, exc)
    art = _from_mlflow(sweep, point, cache)
    if art is not None:
        return art, "mlflow"
    if not rebuild:
        raise DeployError(f"the artifact of trial {point.number} ({expected[:12]}) is neither in {cache} nor on the "
                          f"sweep's MLflow runs (only the front is logged there); allow a rebuild.")
    return _rebuild(sweep, point, cache), "rebuilt"


def _checked(art, expected: str, where: str):
    if art.manifest.get("artifact_hash") != expected:
        raise DeployError(f"the artifact in {where} has hash {str(art.manifest.get('artifact_hash'))[:12]}, but the sweep "
                          f"recorded {expected[:12]} for this trial: it is another model. Nothing was deployed.")
    return art


def _from_mlflow(sweep, point, cache: Path):
    """The trial's files from its child run (``model/``) or the sweep's parent run (``front/trial-<n>/``)."""
    from edgetune.compress import Artifact, store
    from edgetune.search.tracking import Tracker

    cfg = sweep.cfg
    try:
        tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.tracking.experiment or cfg.name, sweep=cfg.name,
                          readonly=True)
    except Exception as exc:  # no MLflow store, no parent run: fall through to the rebuild
        log.warning("MLflow store %s has no runs of sweep '%s' (%s)", cfg.tracking.uri, cfg.name, exc)
        return None
    places = [(point.run_id, "model")] if point.run_id else []
    places.append((tracker.parent_id, f"front/trial-{point.number}"))
    for run_id, folder in places:
        names = {Path(f.path).name for f in tracker.client.list_artifacts(run_id, folder)}
        if not {"model.onnx", "manifest.json"} <= names:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tracker.client.download_artifacts(run_id, folder, tmp))
            try:
                _checked(Artifact.load(local), point.artifact_hash, f"MLflow run {run_id}/{folder}")
            except CompressionError as exc:
                raise DeployError(f"the model logged in MLflow run {run_id}/{folder} for trial {point.number} does not "
                                  f"match its manifest ({exc}); nothing was deployed.") from exc
            manifest = json.loads((local / "manifest.json").read_text())
            art = store(cache, point.artifact_hash, (local / "model.onnx").read_bytes(), manifest)
        log.info("artifact of trial %d fetched from MLflow run %s/%s", point.number, run_id, folder)
        return Artifact.load(art.onnx_path.parent)
    log.info("trial %d has no model files in MLflow (only the front's are logged)", point.number)
    return None


def _rebuild(sweep, point, cache: Path):
    """Compress the trial's config again from the source weights (same inputs give the same hash)."""
    from edgetune.assembly import assemble
    from edgetune.compress import compress, needs_train
    from edgetune.spaces import CompressionConfig

    cfg, record = sweep.cfg, point.record
    if not record.config:
        raise DeployError(f"trial {point.number} has no compression config in its record; it cannot be rebuilt.")
    log.warning("rebuilding the artifact of trial %d from its config and the source weights", point.number)
    config = CompressionConfig.model_validate(record.config)
    recovery = cfg.recovery.refined() if record.refined_from is not None else cfg.recovery  # as the sweep made it
    parts = assemble(cfg, train=needs_train(recovery, config), workdir=cache.parent)  # the sweep's sensitivity cache
    loaded = parts.model
    art = compress(loaded, config, calib=parts.splits.calib, workdir=cache, train=parts.splits.train,
                   recovery=recovery, space=parts.space)  # elastic recovery: the widths the sweep trained
    if art.hash != point.artifact_hash:
        raise DeployError(
            f"rebuilding trial {point.number} gives artifact {art.hash[:12]}, not {point.artifact_hash[:12]} as the "
            f"sweep recorded: the source weights (now sha256 {str(loaded.source_hash)[:12]}), the calibration data or "
            "edgetune's compression changed since the sweep. Deploy from the sweep's workdir or MLflow store, or rerun "
            "the sweep.")
    recorded = (record.sizes or {}).get("bytes")
    if recorded is not None and recorded != art.sizes.get("bytes"):
        log.warning("the rebuilt ONNX of trial %d has %s bytes, the sweep's had %s", point.number,
                    art.sizes.get("bytes"), recorded)
    return art
