"""Typed configuration: YAML is parsed once, here, into strict pydantic models.

Unknown keys and wrong types are rejected with the YAML path of the field (``data.val_images``).
Sections owned by other packages (``space``, ``recovery``, ...) are defined next to their code and
assembled into :class:`SweepConfig`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from edgetune._strict import Strict
from edgetune.compress import RecoverySpec
from edgetune.device_agents.fleet import DeviceSpec
from edgetune.errors import ConfigError, format_validation_error
from edgetune.search import ObjectiveSpec, SearchSpec, TrackingSpec, check_sweep
from edgetune.spaces import SpaceSpec

__all__ = ["Strict", "ModelSpec", "DataSpec", "SweepConfig", "load_sweep_config", "check_paths", "parse_model_ref",
           "parse_data_ref"]


def _check_registered(what: str, name: str, names: list[str]) -> str:
    if name not in names:
        raise ValueError(f"{what} {name!r} is not registered; registered sources: {', '.join(names)}")
    return name


class ModelSpec(Strict):
    """Where the trained model comes from.

    - ``builtin``: ``name`` (det-s, ...), weights shipped with edgetune;
    - ``python``: ``factory`` = ``pkg.module:fn`` returning an ``nn.Module`` (called with ``kwargs``),
      ``weights`` = a state-dict file;
    - ``onnx``: ``path`` to an ONNX file (no pruning, precision search only).
    ``task`` and ``input_size`` are needed for ``python`` and ``onnx`` sources. ``source`` is any name of
    the model-source registry (``edgetune.models.available_sources()``).
    """

    source: str = "builtin"
    name: str | None = None
    factory: str | None = None
    weights: str | None = None
    path: str | None = None
    task: Literal["detect", "classify"] | None = None
    input_size: int | None = Field(default=None, ge=32, le=4096)
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("source")
    @classmethod
    def _registered(cls, v: str) -> str:
        from edgetune.models import available_sources

        return _check_registered("model source", v, available_sources())

    @model_validator(mode="after")
    def _needs(self) -> ModelSpec:
        from edgetune.models import source_class

        need = source_class(self.source).requires
        missing = [k for k in need if getattr(self, k) in (None, "")]
        if missing:
            raise ValueError(f"model source '{self.source}' needs {', '.join(missing)}")
        return self


class DataSpec(Strict):
    """The validation / calibration / fine-tuning data.

    - ``builtin``: ``name: shapes`` (generated, deterministic from ``seed``);
    - ``coco``: ``annotations`` (instances json) + ``images`` (folder); optional ``train_annotations`` /
      ``train_images`` for fine-tuning; otherwise val and calib are split off the one set;
    - ``yolo``: ``path`` to a ``data.yaml``;
    - ``imagefolder``: ``path`` to a folder of ``train/<class>/*.jpg`` and ``val/<class>/*.jpg``.
    ``source`` is any name of the data-source registry (``edgetune.data.available_data_sources()``).
    """

    source: str = "builtin"
    name: str | None = None
    path: str | None = None
    annotations: str | None = None
    images: str | None = None
    train_annotations: str | None = None
    train_images: str | None = None
    val_images: int = Field(default=500, ge=1)
    calib_images: int = Field(default=64, ge=1)
    train_size: int = Field(default=5000, ge=0)
    seed: int = 0

    @field_validator("source")
    @classmethod
    def _registered(cls, v: str) -> str:
        from edgetune.data import available_data_sources

        return _check_registered("data source", v, available_data_sources())

    @model_validator(mode="after")
    def _needs(self) -> DataSpec:
        from edgetune.data import data_source_requires

        need = data_source_requires(self.source)
        missing = [k for k in need if getattr(self, k) in (None, "")]
        if missing:
            raise ValueError(f"data source '{self.source}' needs {', '.join(missing)}")
        return self


class SweepConfig(Strict):
    """A whole sweep file (see configs/demo.yaml and the README's config reference)."""

    name: str = Field(default="sweep", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    model: ModelSpec
    data: DataSpec
    space: SpaceSpec = Field(default_factory=SpaceSpec)
    recovery: RecoverySpec = Field(default_factory=RecoverySpec)
    devices: list[DeviceSpec] = Field(default_factory=list)
    objectives: list[ObjectiveSpec] = Field(default_factory=list)
    constraints: list[str] = Field(default_factory=list)
    search: SearchSpec = Field(default_factory=SearchSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)

    @model_validator(mode="after")
    def _cross_checks(self) -> SweepConfig:
        try:
            check_sweep(self)
            _check_names(self)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return self


def _check_names(cfg: SweepConfig) -> None:
    """Names the sections hold as plain strings, checked against the registries that define them, and
    settings that contradict each other across sections."""
    from edgetune.compress import IMPORTANCES, needs_gradients
    from edgetune.spaces import DEVICE_KINDS

    importance = cfg.space.sparsity.importance
    valid = ["auto", *sorted(IMPORTANCES)]
    if importance not in valid:
        raise ConfigError(f"`space.sparsity.importance` {importance!r} is not registered; valid: {', '.join(valid)}.")
    if needs_gradients(importance) and not cfg.recovery.enabled and cfg.space.sparsity.prunes_channels:
        raise ConfigError(f"`space.sparsity.importance: {importance}` scores channels with gradients on the train "
                          "split, which is loaded only for recovery, and `recovery.steps` is 0. Use `importance: "
                          "magnitude` (or `auto`), or turn recovery on.")
    for i, d in enumerate(cfg.devices):
        if d.kind is not None and d.kind not in DEVICE_KINDS:
            raise ConfigError(f"`devices.{i}.kind` {d.kind!r} is not a known device kind; kinds: "
                              f"{', '.join(DEVICE_KINDS)} (or leave it out: the agent reports its kind).")


# the path fields of the model and data sections: (section, field, "file" | "dir" | "any")
_PATH_FIELDS = (("model", "weights", "file"), ("model", "path", "file"), ("data", "annotations", "file"),
                ("data", "images", "dir"), ("data", "train_annotations", "file"), ("data", "train_images", "dir"),
                ("data", "path", "any"))


def check_paths(cfg: SweepConfig, *, config_path: str | Path | None = None) -> None:
    """Every file and folder the model and data sections name exists (relative paths: from the current
    directory). Cheap, so commands run it before contacting any device; the loaders check contents."""
    problems = []
    for section, field, kind in _PATH_FIELDS:
        value = getattr(getattr(cfg, section), field, None)
        if value in (None, ""):
            continue
        p = Path(value).expanduser()
        ok = p.is_file() if kind == "file" else p.is_dir() if kind == "dir" else p.exists()
        if not ok:
            what = {"file": "file", "dir": "folder", "any": "path"}[kind]
            where = f" (from {Path.cwd()})" if not p.is_absolute() else ""
            problems.append(f"`{section}.{field}`: {what} '{value}' does not exist{where}")
    if problems:
        src = f" in '{config_path}'" if config_path else ""
        raise ConfigError(f"missing path{'s' if len(problems) > 1 else ''}{src}: " + "; ".join(problems) +
                          ". Fix the path (relative paths are read from the directory you run edgetune in).")


def load_sweep_config(path: str | Path, model_cls: type[BaseModel] | None = None) -> BaseModel:
    """Read and validate a sweep YAML; ConfigError names the file and the field paths at fault."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist. Pass the path of a sweep YAML (see configs/).")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must be a YAML mapping of sections (model:, data:, ...).")
    cls = model_cls or _sweep_config_class()
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"invalid config '{path}': {format_validation_error(exc, model=cls)}") from exc


def _sweep_config_class() -> type[BaseModel]:
    return SweepConfig


def parse_model_ref(ref: str) -> ModelSpec:
    """CLI shorthand: ``builtin:det-s`` | ``onnx:PATH`` | ``ultralytics:best.pt`` (a checkpoint of Ultralytics
    training) | ``ultralytics:yolo11n.yaml`` (an architecture, seeded random weights) -> ModelSpec."""
    source, _, rest = ref.partition(":")
    if source == "builtin" and rest:
        return ModelSpec(source="builtin", name=rest)
    if source == "onnx" and rest:
        return ModelSpec(source="onnx", path=rest, task="detect")
    if source == "ultralytics" and rest:
        if rest.endswith((".yaml", ".yml")):
            return ModelSpec(source="ultralytics", **({"path": rest} if "/" in rest else {"name": rest}))
        return ModelSpec(source="ultralytics", weights=rest)
    raise ConfigError(f"--model {ref!r} is not understood; use builtin:NAME (e.g. builtin:det-s or builtin:yolo11n), "
                      "onnx:PATH or ultralytics:PATH/best.pt.")


def parse_data_ref(ref: str) -> DataSpec:
    """CLI shorthand: ``builtin:shapes`` | ``yolo:PATH/data.yaml`` | ``imagefolder:DIR`` -> DataSpec."""
    source, _, rest = ref.partition(":")
    if source == "builtin" and rest:
        return DataSpec(source="builtin", name=rest)
    if source in ("yolo", "imagefolder") and rest:
        return DataSpec(source=source, path=rest)
    raise ConfigError(
        f"--data {ref!r} is not understood; use builtin:shapes, yolo:PATH/data.yaml or imagefolder:DIR "
        "(COCO json needs a config file: data: {source: coco, annotations: ..., images: ...})."
    )
