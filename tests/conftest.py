"""Shared fixtures: a stable dataset cache, small shapes splits, the builtin detector and its ONNX.

The cache lives in ``<repo>/.edgetune-cache/tests`` (git-ignored) so generated data is reused between
runs; CI starts from a clean checkout and generates it once per run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("EDGETUNE_CACHE", str(ROOT / ".edgetune-cache" / "tests"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

VAL_IMAGES = 120
CALIB_IMAGES = 32


def pytest_collection_modifyitems(items):
    """Files with a ``slow`` test run first. ``make test`` hands whole files to its workers in collection
    order, so a long file collected last would run alone at the end while the other workers idle; started
    first, the long files overlap and the short ones fill the gaps. Stable: the order within each class of
    file is the collection order (the same in every worker, as pytest-xdist requires)."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session")
def shapes_val():
    from edgetune.data.shapes import shapes_split

    return shapes_split("val", VAL_IMAGES)


@pytest.fixture(scope="session")
def shapes_calib():
    from edgetune.data.shapes import shapes_split

    return shapes_split("calib", CALIB_IMAGES)


def _run_root(tmp_path_factory) -> Path:
    """The temp folder of this test run, shared by its pytest-xdist workers (each has its own basetemp in it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def det_s_fp32_export(det_s, tmp_path_factory) -> Path:
    """The compress cache of det-s in fp32, built once per test run and shared by the pytest-xdist workers (a
    file lock: the first one builds it, the others wait and read it): ``<dir>/pruned/<key>/export.onnx`` is the
    exporter's output, which every fp32 and int8 compression of the dense det-s at 256 px starts from and which
    ``det_s_onnx`` is. One deterministic export (~8 s) instead of one per worker and fixture."""
    from edgetune._paths import FileLock
    from edgetune.compress import compress
    from edgetune.spaces import baseline

    root = _run_root(tmp_path_factory)
    out = root / "det-s-fp32"
    lock = FileLock(root / "det-s-fp32.lock")
    lock.acquire()
    try:
        if not (out / "done").is_file():  # a worker that died while building leaves no marker: built again
            shutil.rmtree(out, ignore_errors=True)
            compress(det_s, baseline("fp32"), calib=None, workdir=out)
            (out / "done").touch()
    finally:
        lock.release()
    return out


@pytest.fixture(scope="session")
def sweep_workdir(tmp_path_factory, det_s_fp32_export) -> Path:
    """One workdir for the run's sweeps, deployments and compressions, shared by the pytest-xdist workers as
    by the Ray workers of a sweep (scratch per process, atomic stores: ``compress._scratch``). Artifacts are
    content-addressed (``<workdir>/artifacts/<hash>``), so a model compressed again with the same inputs is a
    cache hit: a pruned model is exported once per run, not once per test process or module (~6-15 s each),
    and det-s itself once (its export is copied in from ``det_s_fp32_export``)."""
    from edgetune._paths import FileLock

    root = _run_root(tmp_path_factory)
    work = root / "sweep-work"
    lock = FileLock(root / "sweep-work.lock")
    lock.acquire()
    try:
        if not (work / "ready").is_file():
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(det_s_fp32_export / "pruned", work / "artifacts" / "pruned")
            (work / "ready").touch()
    finally:
        lock.release()
    return work


@pytest.fixture(scope="session")
def mlflow_db(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store with its tables made. Making them (MLflow's schema migrations) costs ~1 s of
    CPU and seconds of fsyncs; sweeps copy this file to where their config points (``make_sweep``) instead of
    making the same empty store again."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-empty") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session")
def det_s(shapes_val):
    """The builtin det-s as a LoadedModel (torch module in eval mode)."""
    from edgetune.config import ModelSpec
    from edgetune.models import load_model

    return load_model(ModelSpec(source="builtin", name="det-s"), class_names=shapes_val.class_names,
                      category_ids=shapes_val.category_ids)


@pytest.fixture(scope="session")
def det_s_onnx(det_s, det_s_fp32_export, tmp_path_factory) -> Path:
    """det-s exported to fp32 ONNX (parity-checked): a copy of the run's one export of it (``det_s_fp32_export``)."""
    from edgetune.compress.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "det-s.onnx"
    exports = list((det_s_fp32_export / "pruned").glob("*/export.onnx"))
    if len(exports) == 1:
        shutil.copyfile(exports[0], path)
    else:  # the compress cache is laid out otherwise: export it here
        export_onnx(det_s.module, path, input_size=det_s.input_size)
    return path
