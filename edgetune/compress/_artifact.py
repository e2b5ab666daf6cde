"""``Artifact``: the deployable ONNX file plus its manifest, stored content-addressed in a cache dir.

Layout: ``<workdir>/<artifact hash>/model.onnx`` + ``manifest.json``, written to a temp dir and moved
into place with ``os.replace`` (a killed compress never leaves a half artifact). The artifact hash is
computed from the inputs (source weights, resolved config, calibration data, recovery settings), so the
same inputs are served from the cache without any work; ``onnx_sha256`` is the hash of the bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgetune._logging import get_logger
from edgetune.errors import CompressionError

log = get_logger(__name__)

__all__ = ["Artifact", "MANIFEST_VERSION", "onnx_sizes", "zstd_size", "load_cached", "store"]

MANIFEST_VERSION = 1
ONNX_NAME, MANIFEST_NAME = "model.onnx", "manifest.json"


@dataclass(frozen=True)
class Artifact:
    """A compressed model: ``onnx_path`` (single-file ONNX) and ``manifest`` (plain JSON data).

    Manifest keys: ``artifact_hash``, ``onnx_sha256``, ``config`` (+ ``config_hash``), ``resolved``
    (per-layer precision, per-group channels), ``source`` (model name, weights sha256), ``calibration``
    (sha256, images, method), ``recovery``, ``head``, ``input``, ``sizes`` (bytes, zstd_bytes, params,
    nonzero_params, macs, bitops), ``timings_s``, ``versions``.
    """

    hash: str
    onnx_path: Path
    manifest: dict
    from_cache: bool = False

    @property
    def onnx_bytes(self) -> bytes:
        return self.onnx_path.read_bytes()

    @property
    def sizes(self) -> dict:
        return self.manifest["sizes"]

    @property
    def config(self):
        from edgetune.spaces import CompressionConfig

        return CompressionConfig.model_validate(self.manifest["config"])

    @classmethod
    def load(cls, directory: str | Path) -> Artifact:
        """Read an artifact directory (``model.onnx`` + ``manifest.json``) and check its bytes."""
        directory = Path(directory)
        mpath, opath = directory / MANIFEST_NAME, directory / ONNX_NAME
        if not (mpath.is_file() and opath.is_file()):
            raise CompressionError(f"'{directory}' is not an artifact directory (needs {ONNX_NAME} and {MANIFEST_NAME}).")
        manifest = json.loads(mpath.read_text())
        digest = hashlib.sha256(opath.read_bytes()).hexdigest()
        if digest != manifest.get("onnx_sha256"):
            raise CompressionError(f"artifact '{directory}' is corrupt: {ONNX_NAME} has sha256 {digest[:16]}..., the "
                                   f"manifest says {str(manifest.get('onnx_sha256'))[:16]}.... Delete the directory.")
        return cls(manifest["artifact_hash"], opath, manifest, from_cache=True)


def zstd_size(data: bytes, level: int = 10) -> int:
    import zstandard

    return len(zstandard.ZstdCompressor(level=level).compress(data))


def onnx_sizes(model_proto) -> tuple[int, int]:
    """(params, non-zero params) of the weights and biases of the weighted nodes of a float graph."""
    from onnx import numpy_helper

    from edgetune.compress._onnx_map import WEIGHTED_OPS

    inits = {i.name: i for i in model_proto.graph.initializer}
    names = {i for n in model_proto.graph.node if n.op_type in WEIGHTED_OPS for i in n.input[1:] if i in inits}
    params = nonzero = 0
    for name in names:
        arr = numpy_helper.to_array(inits[name])
        params += arr.size
        nonzero += int((arr != 0).sum())
    return params, nonzero


def load_cached(workdir: Path, key: str) -> Artifact | None:
    directory = Path(workdir) / key
    if not (directory / MANIFEST_NAME).is_file():
        return None
    try:
        return Artifact.load(directory)
    except (CompressionError, json.JSONDecodeError, KeyError) as exc:
        log.warning("cached artifact %s is unusable (%s); rebuilding it", directory, exc)
        return None


def store(workdir: Path, key: str, onnx_bytes: bytes, manifest: dict) -> Artifact:
    """Write the artifact atomically to ``<workdir>/<key>/`` and return it."""
    workdir = Path(workdir)
    final = workdir / key
    tmp = workdir / f".{key}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / ONNX_NAME).write_bytes(onnx_bytes)
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    if final.exists():  # a concurrent compress of the same inputs finished first, or a corrupt entry
        existing = load_cached(workdir, key)
        if existing is not None and existing.manifest.get("onnx_sha256") == manifest.get("onnx_sha256"):
            shutil.rmtree(tmp, ignore_errors=True)  # the same bytes: keep the entry another process may be reading
            return Artifact(key, existing.onnx_path, manifest)  # built here, not served from the cache
        shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return Artifact(key, final / ONNX_NAME, manifest)
