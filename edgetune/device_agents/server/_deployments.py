"""Versioned deployment slots on the device: ``<workdir>/deployments/<name>/``.

```
v1/model.onnx  v1/manifest.json      one directory per version, moved into place with os.replace
v2/...
current -> v2                        a symlink switched atomically: what applications load
state.json                           active version + kept versions, written temp + os.replace
```

A push is verified (sha256 of the bytes, ONNX checks) before anything is written; a version directory
is complete before it is renamed into place, and ``state.json`` only then names it, so a crash at any
point leaves the previous active version in force. The newest ``keep`` versions stay for rollback.
The deployed bytes are also placed in the artifact store, so ``POST /measure`` re-measures them by hash.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path

from edgetune.device_agents.deploy_protocol import DEPLOYMENT_NAME_PATTERN, Deployment, DeploymentVersion
from edgetune.device_agents.server._errors import ApiError
from edgetune.device_agents.server._store import ContentStore

__all__ = ["DeploymentStore", "check_name"]

_NAME = re.compile(DEPLOYMENT_NAME_PATTERN)
STATE, CURRENT, MODEL, MANIFEST = "state.json", "current", "model.onnx", "manifest.json"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ApiError(400, "BadRequest", f"deployment name {name!r} is invalid: use 1-64 letters, digits, '_', '.' "
                       "or '-', starting with a letter or digit.")
    return name


def _write_json(path: Path, obj: object) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class DeploymentStore:
    """Deployment slots under ``root``. One writer at a time (a lock); readers see whole states only."""

    def __init__(self, root: Path, *, artifacts: ContentStore, keep: int = 3):
        self.root, self.artifacts, self.keep = Path(root), artifacts, max(2, int(keep))
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp = self.root / ".tmp"
        self.tmp.mkdir(exist_ok=True)
        self._lock = threading.Lock()

    # -- reading --------------------------------------------------------------------------------------
    def _state(self, name: str) -> dict | None:
        path = self.root / check_name(name) / STATE
        return json.loads(path.read_text()) if path.is_file() else None

    def _view(self, name: str, state: dict) -> Deployment:
        slot = self.root / name
        versions = [DeploymentVersion(**v, active=v["version"] == state["active"],
                                      path=str((slot / f"v{v['version']}" / MODEL).resolve()))
                    for v in state["versions"]]
        active = next(v for v in versions if v.active)
        return Deployment(name=name, active=state["active"], path=active.path,
                          current_path=str(slot.resolve() / CURRENT / MODEL), versions=versions)

    def get(self, name: str) -> Deployment:
        state = self._state(name)
        if state is None:
            raise ApiError(404, "DeploymentMissing", f"no deployment named '{name}' on this agent; deployments: "
                           f"{', '.join(self.names()) or 'none'}. Push one with `edgetune deploy`.")
        return self._view(name, state)

    def names(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / STATE).is_file())

    def all(self) -> list[Deployment]:
        return [self.get(n) for n in self.names()]

    def manifest(self, name: str, version: int) -> dict:
        return json.loads((self.root / name / f"v{version}" / MANIFEST).read_text())

    def model_path(self, name: str, version: int) -> Path:
        return self.root / name / f"v{version}" / MODEL

    # -- writing --------------------------------------------------------------------------------------
    def commit(self, name: str, onnx_tmp: Path, *, sha256: str, size: int, manifest: dict) -> tuple[Deployment, bool, int | None]:
        """Make the verified file ``onnx_tmp`` the new active version of ``name``; returns (deployment,
        created, previous active version). Pushing the active version's bytes again changes nothing."""
        with self._lock:
            slot = self.root / check_name(name)
            slot.mkdir(exist_ok=True)
            state = self._state(name) or {"name": name, "active": None, "versions": []}
            previous = state["active"]
            if previous is not None:
                active = next(v for v in state["versions"] if v["version"] == previous)
                if active["sha256"] == sha256:
                    onnx_tmp.unlink(missing_ok=True)
                    return self._view(name, state), False, previous
            on_disk = [int(p.name[1:]) for p in slot.glob("v*") if p.name[1:].isdigit()]
            version = max([0, *on_disk, *(v["version"] for v in state["versions"])]) + 1
            staging = slot / f".v{version}.{uuid.uuid4().hex}.tmp"
            staging.mkdir()
            try:
                os.replace(onnx_tmp, staging / MODEL)
                _write_json(staging / MANIFEST, manifest)
                os.replace(staging, slot / f"v{version}")
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            self._to_artifact_store(slot / f"v{version}" / MODEL, sha256)
            state["versions"].append({"version": version, "sha256": sha256, "bytes": size, "created_at": time.time(),
                                      "artifact_hash": manifest.get("artifact_hash"),
                                      "label": (manifest.get("deployment") or {}).get("label")})
            state["active"] = version
            dropped = self._prune(state)
            self._activate(slot, state)
            for v in dropped:
                shutil.rmtree(slot / f"v{v}", ignore_errors=True)
            return self._view(name, state), True, previous

    def rollback(self, name: str, *, version: int | None = None) -> Deployment:
        """Activate ``version`` (default: the newest kept version older than the active one)."""
        with self._lock:
            state = self._state(name)
            if state is None:
                self.get(name)  # raises 404 with the list
            kept = sorted(v["version"] for v in state["versions"])
            if version is None:
                older = [v for v in kept if v < state["active"]]
                if not older:
                    raise ApiError(409, "NothingToRollBack", f"deployment '{name}' has no version older than the "
                                   f"active v{state['active']} (kept: {', '.join(f'v{v}' for v in kept)}).")
                version = older[-1]
            elif version not in kept:
                raise ApiError(404, "VersionMissing", f"deployment '{name}' has no version {version}; kept versions: "
                               f"{', '.join(f'v{v}' for v in kept)} (the newest {self.keep} are kept).")
            state["active"] = version
            self._activate(self.root / name, state)
            return self._view(name, state)

    def _prune(self, state: dict) -> list[int]:
        versions = sorted(state["versions"], key=lambda v: v["version"])
        drop = [v["version"] for v in versions[: max(0, len(versions) - self.keep)] if v["version"] != state["active"]]
        state["versions"] = [v for v in versions if v["version"] not in drop]
        return drop

    def _activate(self, slot: Path, state: dict) -> None:
        """Write the state, then switch the ``current`` symlink (both atomic)."""
        _write_json(slot / STATE, state)
        link = slot / f".{CURRENT}.{uuid.uuid4().hex}"
        try:
            os.symlink(f"v{state['active']}", link, target_is_directory=True)
            os.replace(link, slot / CURRENT)
        except OSError:  # no symlinks here (some Windows setups): state.json still says which is active
            link.unlink(missing_ok=True)

    def _to_artifact_store(self, path: Path, sha256: str) -> None:
        if self.artifacts.has(sha256):
            return
        tmp = self.artifacts.root / ".tmp" / f"{sha256}.{uuid.uuid4().hex}"
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
        os.replace(tmp, self.artifacts.path(sha256))
