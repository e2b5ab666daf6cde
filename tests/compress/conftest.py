"""Shared, expensive results of the compress tests: each artifact is compressed once per session.

``compressed(name)`` builds (and memoises) the artifacts the tests inspect; ``ort_map`` measures mAP of
an ONNX file with onnxruntime in process; ``train_split`` is the builtin train split used by recovery.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

TRAIN_IMAGES = 1000


def ort_run(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: np.concatenate([sess.run(None, {name: x[i : i + 1]})[0] for i in range(len(x))])


@pytest.fixture(scope="session")
def ort_map(shapes_val, det_s):
    """(path[, dataset]) -> mAP50-95 of that ONNX file on the dataset (default: the 120 validation images),
    onnxruntime, 1 thread; memoised."""
    from edgetune.models._evaluate import evaluate

    memo: dict = {}

    def run(path: Path, ds=None) -> float:
        ds = shapes_val if ds is None else ds
        key = (str(path), len(ds), getattr(ds, "name", ""))
        if key not in memo:
            memo[key] = float(evaluate(ort_run(path), ds, det_s.head, size=det_s.input_size)["map50_95"])
        return memo[key]

    return run


@pytest.fixture(scope="session")
def train_split():
    from edgetune.data.shapes import shapes_split

    return shapes_split("train", TRAIN_IMAGES)


@pytest.fixture(scope="session")
def cpu_space(det_s):
    from edgetune.spaces import SpaceSpec, build_space

    spec = SpaceSpec(precision=["fp32", "int8"], sparsity={"kind": ["channel", "unstructured"], "ratios": [0, 0.25, 0.5]},
                     keep={"precision": {"fp32": ["first", "last"]}, "sparsity": ["last"]}, targets=["local-cpu"])
    return build_space(det_s, spec)


@pytest.fixture(scope="session")
def gpu_space(det_s):
    from edgetune.spaces import SpaceSpec, build_space

    spec = SpaceSpec(precision=["fp32", "fp16", "int8"], sparsity={"kind": ["channel", "2:4"], "ratios": [0, 0.5]},
                     targets=["jetson-orin"])
    return build_space(det_s, spec)


def all_groups(space, label: str) -> dict:
    """Dimension values: ``label`` for every sparsity dimension that offers it, fp32 precision."""
    return {d.name: (label if label in d.choices else "dense") if d.kind == "sparsity" else "fp32"
            for d in space.dimensions}


@pytest.fixture(scope="session")
def channel_25(cpu_space):
    """Every prunable group at 25% channels, fp32."""
    return cpu_space.config_from(all_groups(cpu_space, "channel:0.25"))


@pytest.fixture(scope="session")
def workdir(sweep_workdir) -> Path:
    """The session's artifact cache (shared with the sweep and deploy tests)."""
    return sweep_workdir / "artifacts"


@pytest.fixture(scope="session")
def compressed(det_s, shapes_calib, cpu_space, gpu_space, workdir, request):
    """name -> Artifact, built on first use (fp32, int8, int8-openvino, mixed, ch50, unstructured50, two_four, fp16)."""
    from edgetune.compress import RecoverySpec, compress

    def configs(name):
        if name in ("fp32", "int8-uniform"):
            return cpu_space, cpu_space.baseline(name), RecoverySpec(steps=0)
        if name == "int8-openvino":  # int8 placed for OpenVINO (QuantSettings.placement)
            return cpu_space, cpu_space.baseline("int8-uniform", "openvino"), RecoverySpec(steps=0)
        if name == "fp16-uniform":
            return gpu_space, gpu_space.baseline(name), RecoverySpec(steps=0)
        if name == "mixed":  # first and last pinned fp32, everything else int8
            return cpu_space, cpu_space.config_from({d.name: "int8" if d.kind == "precision" else "dense"
                                                     for d in cpu_space.dimensions}), RecoverySpec(steps=0)
        if name == "ch50":
            return cpu_space, cpu_space.config_from(all_groups(cpu_space, "channel:0.5")), RecoverySpec(steps=0)
        if name == "unstructured50":  # a few recovery steps: the masks must survive fine-tuning
            return (cpu_space, cpu_space.config_from(all_groups(cpu_space, "unstructured:0.5")),
                    RecoverySpec(steps=4, batch=4))
        if name == "two_four":
            return gpu_space, gpu_space.config_from(all_groups(gpu_space, "2:4")), RecoverySpec(steps=4, batch=4)
        raise KeyError(name)

    memo: dict = {}

    def get(name):
        if name not in memo:
            space, config, recovery = configs(name)
            train = request.getfixturevalue("train_split") if recovery.enabled and config.prunes else None
            memo[name] = compress(det_s, config, calib=shapes_calib, workdir=workdir, train=train,
                                  recovery=recovery, space=space)
        return memo[name]

    return get
