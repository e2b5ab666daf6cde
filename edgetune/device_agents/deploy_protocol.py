"""Wire models of the deployment endpoints (additive to protocol 1.x; an older agent answers 404).

- ``PUT /deployments/{name}``: multipart form with ``sha256`` (the ONNX bytes' expected hash),
  ``manifest`` (the artifact manifest, JSON) and ``model`` (the ONNX file) -> :class:`DeployResult`.
- ``GET /deployments`` -> :class:`DeploymentList`; ``GET /deployments/{name}`` -> :class:`Deployment`.
- ``POST /deployments/{name}/rollback`` (optional JSON :class:`RollbackRequest`) -> :class:`Deployment`.
- ``POST /deployments/{name}/predict``: multipart form with ``image`` (PNG / JPEG / BMP / WebP) and
  optional ``score_threshold`` -> :class:`Prediction` (boxes in the uploaded image's pixels).
"""

from __future__ import annotations

from pydantic import Field

from edgetune.device_agents.protocol import PROTOCOL_VERSION, _Request, _Response

__all__ = ["DEPLOYMENT_NAME_PATTERN", "DeploymentVersion", "Deployment", "DeploymentList", "DeployResult",
           "RollbackRequest", "Detection", "Prediction"]

DEPLOYMENT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class DeploymentVersion(_Response):
    """One stored version of a deployment: its ONNX bytes' sha256 and where it lives on the device."""

    version: int
    sha256: str
    bytes: int
    created_at: float
    active: bool = False
    path: str
    artifact_hash: str | None = None
    label: str | None = None


class Deployment(_Response):
    """A deployment slot: the active version and the kept ones (the newest ``keep``, for rollback).

    ``current_path`` is a stable path (a symlink switched atomically) that always points at the active
    version's ``model.onnx``; ``path`` is the active version's own file."""

    protocol: str = PROTOCOL_VERSION
    name: str
    active: int
    path: str
    current_path: str
    versions: list[DeploymentVersion] = Field(default_factory=list)

    @property
    def active_version(self) -> DeploymentVersion:
        return next(v for v in self.versions if v.version == self.active)


class DeploymentList(_Response):
    protocol: str = PROTOCOL_VERSION
    deployments: list[Deployment] = Field(default_factory=list)


class DeployResult(_Response):
    """``created`` is False when the pushed bytes were already the active version (nothing changed)."""

    protocol: str = PROTOCOL_VERSION
    deployment: Deployment
    created: bool
    previous: int | None = None


class RollbackRequest(_Request):
    """``version``: the kept version to activate (default: the newest one older than the active)."""

    version: int | None = Field(default=None, ge=1)


class Detection(_Response):
    box_xyxy: list[float]
    score: float
    class_index: int
    category_id: int
    label: str | None = None


class Prediction(_Response):
    protocol: str = PROTOCOL_VERSION
    name: str
    version: int
    sha256: str
    image_width: int
    image_height: int
    input_size: int
    score_threshold: float
    detections: list[Detection] = Field(default_factory=list)
    top_classes: list[dict] | None = None
    inference_ms: float
    runtime: str
