"""Shared fixtures: a stable dataset cache, small shapes splits, the builtin detector and its ONNX.

The cache lives in ``<repo>/.edgetune-cache/tests`` (git-ignored) so generated data is reused between
runs; CI starts from a clean checkout and generates it once per run.
"""

from __future__ import annotations

import os
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


@pytest.fixture(scope="session")
def sweep_workdir(tmp_path_factory) -> Path:
    """One workdir for the session's sweeps, deployments and compressions. Artifacts are content-addressed
    (``<workdir>/artifacts/<hash>``), so a model compressed again with the same inputs is a cache hit: det-s
    in fp32 is exported once per test process, not once per test module (~15 s each)."""
    return tmp_path_factory.mktemp("sweep-work")


@pytest.fixture(scope="session")
def det_s(shapes_val):
    """The builtin det-s as a LoadedModel (torch module in eval mode)."""
    from edgetune.config import ModelSpec
    from edgetune.models import load_model

    return load_model(ModelSpec(source="builtin", name="det-s"), class_names=shapes_val.class_names,
                      category_ids=shapes_val.category_ids)


@pytest.fixture(scope="session")
def det_s_onnx(det_s, tmp_path_factory) -> Path:
    """det-s exported to fp32 ONNX (parity-checked)."""
    from edgetune.compress.export import export_onnx

    path = tmp_path_factory.mktemp("onnx") / "det-s.onnx"
    export_onnx(det_s.module, path, input_size=det_s.input_size)
    return path
