"""The model-source conformance suite: every registered source loads, hashes and fails the same way.

Parametrized over ``available_sources()``: a source registered without a case in ``CASES`` fails here
until it gets one. Each case builds a valid ModelSpec for a small model plus the dataset classes it is
loaded for, names the file whose sha256 is its ``source_hash``, and says how to point the source at
another weights file (to check that corrupt and missing files are a ModelError naming the file).
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from edgetune.config import ModelSpec
from edgetune.errors import ModelError
from edgetune.models import LoadedModel, available_sources, load_model
from edgetune.models.sources import sha256_file

DET_CLASSES = ("a", "b", "c", "d", "e", "f")
CLS_CLASSES = ("cat", "dog", "yak")


class TinyDetector(torch.nn.Module):
    """(N, 3, S, S) -> (N, 4 + C, (S / 8)^2), the Ultralytics layout the detection head decodes."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4 + num_classes, 3, stride=8, padding=1)

    def forward(self, x):
        return torch.sigmoid(self.conv(x)).flatten(2)


class TinyClassifier(torch.nn.Module):
    """(N, 3, S, S) -> (N, C) logits."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=4, padding=1)
        self.fc = torch.nn.Linear(8, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def tiny_detector(num_classes: int = 6) -> torch.nn.Module:
    """The python-source factory of this suite: ``<this module>:tiny_detector``."""
    return TinyDetector(num_classes)


@dataclass(frozen=True)
class Case:
    """A valid spec for one source, the classes it is loaded for, the file it hashes, and what its error
    says for a corrupt and a missing weights file."""

    spec: ModelSpec
    classes: tuple[str, ...]
    input_size: int
    hashed_file: Path
    point_at: Callable[[ModelSpec, Path, pytest.MonkeyPatch], ModelSpec]  # load weights from another file
    says: dict[str, str]  # damage ("corrupt" / "missing") -> regex the ModelError must match

    @property
    def task(self) -> str:
        return self.spec.task or "detect"


def _builtin(tmp_path: Path) -> Case:
    import edgetune.models.sources as sources

    def point_at(spec, path, monkeypatch):
        monkeypatch.setattr(sources, "builtin_weights_path", lambda name: path)
        return spec

    return Case(ModelSpec(source="builtin", name="det-s"), DET_CLASSES, 256, sources.builtin_weights_path("det-s"),
                point_at, {"corrupt": "corrupt or was replaced", "missing": "are missing at"})


def _python(tmp_path: Path) -> Case:
    weights = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    torch.save(tiny_detector(len(DET_CLASSES)).state_dict(), weights)
    spec = ModelSpec(source="python", factory=f"{__name__}:tiny_detector", task="detect", input_size=64,
                     kwargs={"num_classes": len(DET_CLASSES)}, weights=str(weights))
    return Case(spec, DET_CLASSES, 64, weights, lambda spec, path, mp: spec.model_copy(update={"weights": str(path)}),
                {"corrupt": "cannot be read as a torch state dict", "missing": "does not exist"})


def _onnx(tmp_path: Path) -> Case:
    from edgetune.compress.export import export_onnx

    path = tmp_path / "tiny-cls.onnx"
    torch.manual_seed(0)
    export_onnx(TinyClassifier(len(CLS_CLASSES)), path, input_size=48)
    spec = ModelSpec(source="onnx", path=str(path), task="classify")  # input size read from the graph
    return Case(spec, CLS_CLASSES, 48, path, lambda spec, p, mp: spec.model_copy(update={"path": str(p)}),
                {"corrupt": "is not a readable ONNX model", "missing": "does not exist"})


def _ultralytics(tmp_path: Path) -> Case:
    """A checkpoint as Ultralytics training writes it (``{"model": DetectionModel, ...}``, the model pickled)."""
    if importlib.util.find_spec("ultralytics") is None:
        pytest.skip("the yolo extra (make test installs it)")
    from edgetune.models.ultralytics_yolo import import_ultralytics

    import_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    weights = tmp_path / "best.pt"
    torch.manual_seed(0)
    torch.save({"epoch": 3, "model": DetectionModel("yolov8n.yaml", nc=len(DET_CLASSES), verbose=False).half()},
               weights)
    spec = ModelSpec(source="ultralytics", weights=str(weights), input_size=96)
    return Case(spec, DET_CLASSES, 96, weights, lambda spec, p, mp: spec.model_copy(update={"weights": str(p)}),
                {"corrupt": "cannot be read", "missing": "does not exist"})


CASES: dict[str, Callable[[Path], Case]] = {"builtin": _builtin, "python": _python, "onnx": _onnx,
                                            "ultralytics": _ultralytics}


SOURCES = available_sources()


def _case(source: str, tmp_path: Path) -> Case:
    if source not in CASES:
        pytest.fail(f"add a conformance case for source {source!r} to CASES in {Path(__file__).name} "
                    "(a valid ModelSpec of a small model, the file it hashes, how to point it at other weights)",
                    pytrace=False)
    return CASES[source](tmp_path)


def _load(case: Case, spec: ModelSpec | None = None) -> LoadedModel:
    return load_model(spec or case.spec, class_names=case.classes, category_ids=tuple(range(1, len(case.classes) + 1)))


def _forward(loaded: LoadedModel) -> np.ndarray:
    x = np.zeros((1, 3, loaded.input_size, loaded.input_size), np.float32)
    if loaded.module is not None:
        with torch.no_grad():
            return loaded.module(torch.from_numpy(x)).numpy()
    import onnxruntime as ort

    sess = ort.InferenceSession(str(loaded.onnx_path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("source", SOURCES)
def test_source_loads_a_model_whose_head_fits_the_task_and_classes(source, tmp_path):
    case = _case(source, tmp_path)
    loaded = _load(case)
    assert loaded.task == loaded.head.kind == case.task
    assert loaded.head.num_classes == len(case.classes) and len(loaded.head.category_ids) == len(case.classes)
    assert loaded.input_size == case.input_size
    assert (loaded.module is None) == (loaded.onnx_path is not None)
    out = _forward(loaded)
    if case.task == "detect":
        assert out.ndim == 3 and out.shape[:2] == (1, 4 + len(case.classes))
    else:
        assert out.shape == (1, len(case.classes))


@pytest.mark.parametrize("source", SOURCES)
def test_source_hash_is_the_stable_sha256_of_the_file(source, tmp_path):
    case = _case(source, tmp_path)
    first, second = _load(case), _load(case)
    assert re.fullmatch(r"[0-9a-f]{64}", first.source_hash)
    assert first.source_hash == second.source_hash == sha256_file(case.hashed_file)


@pytest.mark.parametrize("damage", ["corrupt", "missing"])
@pytest.mark.parametrize("source", SOURCES)
def test_bad_weights_are_a_model_error_naming_the_file(source, damage, tmp_path, monkeypatch):
    case = _case(source, tmp_path)
    bad = tmp_path / "bad" / f"weights{case.hashed_file.suffix}"
    if damage == "corrupt":
        bad.parent.mkdir()
        bad.write_bytes(b"this is not a model file\n" * 8)
    with pytest.raises(ModelError, match=case.says[damage]) as err:
        _load(case, case.point_at(case.spec, bad, monkeypatch))
    assert str(bad) in str(err.value)
