"""Dataset bundles: the validation set shipped to an agent, in a safe, content-addressed format.

A bundle is one ``.npz`` file (a zip of ``.npy`` arrays, loaded with ``allow_pickle=False``, never a
pickle) holding the letterboxed uint8 images, their letterbox metas and image ids, a few raw images for
end-to-end timing, and ``spec.npy``: UTF-8 JSON with the task-head spec, the input size and the COCO
ground truth. Its bytes are deterministic (fixed zip timestamps), so the same data gives the same hash
and an agent that has it already is not sent it again.

The agent scores a bundle with the controller's own function (``edgetune.models.OutputScorer``), so
agent mAP and in-process mAP of the same outputs are the same number.

What a bundle expands to is capped before a byte of it is inflated: at most :func:`default_max_expanded`
(half this machine's memory, at most 8 GiB) unless the caller passes another cap, and no array may be
larger than its member of the zip, so a bundle from the network cannot make the process that reads it
allocate more than that (the agent refuses such bundles at upload: :func:`bundle_problem`).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgetune.data import Dataset, LetterboxMeta, to_input
from edgetune.errors import DataError
from edgetune.models import ClassifyHead, DetectHead, OutputScorer, head_from_dict, iter_batches

__all__ = ["BUNDLE_VERSION", "DatasetBundle", "BundleData", "make_bundle", "read_bundle", "evaluate_bundle",
           "bundle_problem", "default_max_expanded"]

BUNDLE_VERSION = 1
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
MAX_UNCOMPRESSED = 8 << 30


def default_max_expanded() -> int:
    """The most bytes a bundle may expand to unless told otherwise: half of this machine's memory, at most
    :data:`MAX_UNCOMPRESSED` (8 GiB; also where the memory size cannot be read)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return MAX_UNCOMPRESSED
    return min(MAX_UNCOMPRESSED, total // 2) if total > 0 else MAX_UNCOMPRESSED


@dataclass(frozen=True)
class DatasetBundle:
    """Bundle bytes and their sha256 (the name the agent stores them under)."""

    data: bytes
    sha256: str
    num_images: int
    size: int
    task: str

    def save(self, path: str | Path) -> Path:
        from edgetune._paths import atomic_write_bytes

        path = Path(path)
        atomic_write_bytes(path, self.data)
        return path

    @classmethod
    def load(cls, path: str | Path) -> DatasetBundle:
        data = Path(path).read_bytes()
        b = read_bundle(data)
        return cls(data, hashlib.sha256(data).hexdigest(), len(b.ids), b.size, b.task)


@dataclass(frozen=True)
class BundleData:
    """A bundle read back (agent side)."""

    images: np.ndarray
    metas: list[LetterboxMeta]
    ids: list[int]
    labels: np.ndarray | None
    raw: list[np.ndarray]
    head: DetectHead | ClassifyHead
    coco_gt: dict | None
    size: int
    task: str
    name: str


def make_bundle(dataset: Dataset, head: DetectHead | ClassifyHead, *, size: int, raw_images: int = 8) -> DatasetBundle:
    """Letterbox ``dataset`` to ``size`` and pack it with ``head`` and its ground truth (controller side)."""
    if len(dataset) == 0:
        raise DataError(f"dataset '{dataset.name}' is empty: a bundle needs at least one image.")
    images, metas, ids = [], [], []
    for x, m, i in iter_batches(dataset, size=size, batch=32):
        images.append(x)
        metas.extend(m)
        ids.extend(i)
    arrays: dict[str, np.ndarray] = {
        "images": np.concatenate(images),
        "metas": np.array([[m.scale, m.pad_x, m.pad_y, m.orig_w, m.orig_h] for m in metas], np.float64),
        "ids": np.asarray(ids, np.int64),
    }
    if dataset.task == "classify":
        by_id = {r.id: r.label for r in dataset.records}
        arrays["labels"] = np.asarray([by_id[i] for i in ids], np.int64)
    for k in range(min(raw_images, len(dataset))):
        arrays[f"raw_{k}"] = np.ascontiguousarray(dataset.load_image(k), np.uint8)
    spec = {"version": BUNDLE_VERSION, "name": dataset.name, "task": dataset.task, "size": int(size),
            "head": head.to_dict(), "coco_gt": dataset.coco_gt() if dataset.task == "detect" else None}
    arrays["spec"] = np.frombuffer(json.dumps(spec, sort_keys=True).encode(), np.uint8)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arrays[name]), allow_pickle=False)
    data = buf.getvalue()
    return DatasetBundle(data, hashlib.sha256(data).hexdigest(), len(ids), int(size), dataset.task)


def _bad(msg: str) -> DataError:
    return DataError(f"dataset bundle is invalid: {msg}. Rebuild it with edgetune.device_agents.make_bundle.")


def _check_expansion(zf: zipfile.ZipFile, max_bytes: int) -> None:
    """What the arrays of ``zf`` would take in memory, from the zip's directory and each ``.npy`` header
    (nothing else is inflated): over ``max_bytes`` in all, or an array larger than its member, raises."""
    infos = zf.infolist()
    total = sum(i.file_size for i in infos)
    if total > max_bytes:
        raise _bad(f"it expands to {total:,} bytes, over the limit of {max_bytes:,} bytes (half this machine's "
                   "memory by default); send fewer or smaller images")
    for info in infos:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"{info.filename} is a .npy of version {version}, not 1.0 / 2.0")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
        if dtype.hasobject:
            raise ValueError(f"{info.filename} holds Python objects (a pickle), not a plain array")
        if math.prod(shape) * dtype.itemsize > info.file_size:
            raise _bad(f"array {info.filename} claims shape {shape} of {dtype}, more than the "
                       f"{info.file_size:,} bytes it holds")


def bundle_problem(path: str | Path, *, max_bytes: int | None = None) -> str | None:
    """Why the file at ``path`` is not a bundle this machine would read (None: it is one), from its zip
    directory and array headers only: a zip of ``.npy`` arrays with ``spec`` and ``images``, expanding to
    at most ``max_bytes`` (default :func:`default_max_expanded`). The agent checks uploads with it."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            bad = sorted(n for n in names if not n.endswith(".npy"))
            if bad:
                return f"a dataset bundle holds only .npy arrays, this one also has {bad[:3]}"
            missing = {"spec.npy", "images.npy"} - names
            if missing:
                return f"the dataset bundle lacks {sorted(missing)}"
            _check_expansion(zf, max_bytes or default_max_expanded())
    except DataError as exc:
        return str(exc)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        return f"it is not a dataset bundle (.npz of plain arrays: {exc}); build one with edgetune.device_agents.make_bundle"
    return None


def read_bundle(src: str | Path | bytes, *, max_bytes: int | None = None) -> BundleData:
    """Load and validate a bundle (``allow_pickle=False``); raises DataError naming what is wrong. Its
    arrays may take at most ``max_bytes`` (default :func:`default_max_expanded`), checked before loading."""
    fobj = io.BytesIO(src) if isinstance(src, (bytes, bytearray)) else open(src, "rb")  # noqa: SIM115
    with fobj:
        try:
            with zipfile.ZipFile(fobj) as zf:
                _check_expansion(zf, max_bytes or default_max_expanded())
            fobj.seek(0)
            with np.load(fobj, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
            raise _bad(f"cannot read it as a .npz of plain arrays ({exc})") from exc
    for key in ("spec", "images", "metas", "ids"):
        if key not in arrays:
            raise _bad(f"array '{key}' is missing")
    try:
        spec = json.loads(arrays["spec"].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad(f"spec is not JSON ({exc})") from exc
    if spec.get("version") != BUNDLE_VERSION:
        raise _bad(f"bundle version {spec.get('version')!r}, this edgetune reads version {BUNDLE_VERSION}")
    size = int(spec["size"])
    images, metas, ids = arrays["images"], arrays["metas"], arrays["ids"]
    n = images.shape[0] if images.ndim == 4 else -1
    if images.dtype != np.uint8 or images.shape[1:] != (3, size, size):
        raise _bad(f"images must be uint8 (N, 3, {size}, {size}), got {images.dtype} {images.shape}")
    if metas.shape != (n, 5) or ids.shape != (n,):
        raise _bad(f"metas {metas.shape} / ids {ids.shape} do not match {n} images")
    raw = [arrays[f"raw_{k}"] for k in range(len(arrays)) if f"raw_{k}" in arrays]
    if any(r.dtype != np.uint8 or r.ndim != 3 or r.shape[2] != 3 for r in raw):
        raise _bad("raw images must be uint8 (H, W, 3)")
    return BundleData(
        images=images,
        metas=[LetterboxMeta(float(s), float(px), float(py), int(w), int(h)) for s, px, py, w, h in metas.tolist()],
        ids=[int(i) for i in ids], labels=arrays.get("labels"), raw=raw, head=head_from_dict(spec["head"]),
        coco_gt=spec.get("coco_gt"), size=size, task=str(spec["task"]), name=str(spec.get("name", "")),
    )


def evaluate_bundle(forward: Callable[[np.ndarray], np.ndarray], bundle: BundleData, *, batch: int = 1) -> dict[str, float]:
    """Accuracy of ``forward`` (float32 (b, 3, S, S) in [0, 1] -> raw output) on a bundle: COCO mAP
    (detection) or top-1/top-5 (classification). ``batch`` is the batch ``forward`` is called with."""
    scorer = OutputScorer(bundle.head, coco_gt=bundle.coco_gt, labels=bundle.labels)
    for start in range(0, len(bundle.ids), batch):
        end = start + batch
        scorer.add(np.asarray(forward(to_input(bundle.images[start:end]))), bundle.metas[start:end],
                   bundle.ids[start:end])
    return scorer.result()
