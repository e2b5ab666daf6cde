"""Model sources: a registry of how a trained model is loaded (builtin, python factory, onnx, ...).

A source turns a :class:`~edgetune.config.ModelSpec` plus the dataset's classes into a
:class:`LoadedModel`. Sources register with :func:`register_source`; an unknown name lists the valid
ones; the sweep config accepts any registered name and checks the fields its ``requires`` lists. A source
whose models have a training loss of their own attaches a :class:`~edgetune.models.TaskAdapter`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune.errors import ModelError
from edgetune.models.heads import ClassifyHead, DetectHead
from edgetune.models.tasks import TaskAdapter, adapter_for

__all__ = ["LoadedModel", "ModelSource", "register_source", "get_source", "source_class", "available_sources",
           "load_model"]


@dataclass
class LoadedModel:
    """A trained model ready to compress or evaluate.

    ``module`` is the torch ``nn.Module`` (eval mode), or None for sources that only have an ONNX file
    (``onnx_path``), which can be quantized but not pruned. ``source_hash`` is the sha256 of the weights
    (or ONNX) file: the artifact hash depends on it. ``adapter`` is the task seam recovery and gradient
    scoring use (batches, training forward, losses); sources with their own training loss set it.
    """

    name: str
    module: Any | None
    head: DetectHead | ClassifyHead
    input_size: int
    source_hash: str
    onnx_path: Path | None = None
    adapter: TaskAdapter | None = None  # None: the task's generic adapter (see ``models.tasks``)

    def __post_init__(self) -> None:
        if self.adapter is None and self.module is not None:
            self.adapter = adapter_for(self.head.kind)

    @property
    def task(self) -> str:
        return self.head.kind


class ModelSource(ABC):
    """Loads one kind of model. Implementations are stateless; ``load`` may be called from any thread."""

    name: str = ""
    requires: tuple[str, ...] = ()  # the ModelSpec fields this source cannot do without (checked by the config)

    @abstractmethod
    def load(self, spec, *, class_names: tuple[str, ...], category_ids: tuple[int, ...]) -> LoadedModel:
        """Load the model described by ``spec`` for a dataset with these classes."""


_SOURCES: dict[str, type[ModelSource]] = {}


def register_source(name: str) -> Callable[[type[ModelSource]], type[ModelSource]]:
    def deco(cls: type[ModelSource]) -> type[ModelSource]:
        cls.name = name
        _SOURCES[name] = cls
        return cls

    return deco


def available_sources() -> list[str]:
    """The registered source names (``edgetune.models`` registers builtin, python and onnx on import)."""
    return sorted(_SOURCES)


def source_class(name: str) -> type[ModelSource]:
    valid = available_sources()
    if name not in _SOURCES:
        raise ModelError(f"unknown model source {name!r}; registered sources: {', '.join(valid)}.")
    return _SOURCES[name]


def get_source(name: str) -> ModelSource:
    return source_class(name)()


def load_model(spec, *, class_names: tuple[str, ...], category_ids: tuple[int, ...]) -> LoadedModel:
    """Load the model of a ModelSpec for a dataset with the given classes."""
    return get_source(spec.source).load(spec, class_names=class_names, category_ids=category_ids)
