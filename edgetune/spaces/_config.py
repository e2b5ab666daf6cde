"""``CompressionConfig``: one point of the search space, typed, serialisable and hashable (no torch).

A config gives each layer a precision (``default_precision`` for layers it does not list) and each
coupling group a sparsity (kind + ratio; dense when not listed), plus how to score channels and how to
quantize, and optionally the input resolution to export at (``input_size``; None: the model's own) and
the output scales a detector keeps (``scales``, by stride; None: all). Named baselines: ``fp32``, ``int8-uniform`` (every layer int8, what onnxruntime users do
today), ``fp16-uniform``. Validate a config against a :class:`~edgetune.spaces.SearchSpace` with
``space.validate(config)``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from edgetune._strict import Strict
from edgetune.errors import ConfigError
from edgetune.spaces._rules import QuantSettings
from edgetune.spaces._spec import Importance, Precision, SparsityKind, check_ratio

__all__ = ["Sparsity", "CompressionConfig", "BASELINES", "baseline", "BITS"]

BITS = {"fp32": 32, "fp16": 16, "int8": 8}


class Sparsity(Strict):
    """The sparsity of one group: ``channel`` (remove output channels), ``unstructured`` (zero the
    smallest weights) or ``2:4`` (two non-zeros in every four consecutive input weights; ratio 0.5)."""

    kind: SparsityKind = "channel"
    ratio: float = 0.0

    @field_validator("ratio")
    @classmethod
    def _ratio(cls, v: float) -> float:
        return check_ratio(v)

    @model_validator(mode="before")
    @classmethod
    def _two_four_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") == "2:4" and "ratio" not in data:
            return {**data, "ratio": 0.5}
        return data

    @model_validator(mode="after")
    def _two_four(self) -> Sparsity:
        if self.kind == "2:4" and self.ratio not in (0.0, 0.5):
            raise ValueError(f"2:4 sparsity always removes half the weights: ratio must be 0.5, got {self.ratio}")
        return self

    @property
    def active(self) -> bool:
        return self.ratio > 0.0

    def label(self) -> str:
        if not self.active:
            return "dense"
        return "2:4" if self.kind == "2:4" else f"{self.kind}:{self.ratio:g}"

    @classmethod
    def parse(cls, label: str) -> Sparsity:
        """``dense`` | ``2:4`` | ``channel:0.25`` | ``unstructured:0.5`` (the labels of a space's choices)."""
        if label == "dense":
            return cls()
        if label == "2:4":
            return cls(kind="2:4", ratio=0.5)
        kind, _, ratio = label.rpartition(":")
        try:
            return cls(kind=kind, ratio=float(ratio))
        except (ValueError, ValidationError) as exc:
            raise ConfigError(f"sparsity choice {label!r} is not 'dense', '2:4' or 'KIND:RATIO' "
                              f"(e.g. channel:0.25): {exc}") from exc


class CompressionConfig(Strict):
    name: str | None = Field(default=None, description="a label (baseline name); not part of the hash")
    default_precision: Precision = "fp32"
    precision: dict[str, Precision] = Field(default_factory=dict)
    sparsity: dict[str, Sparsity] = Field(default_factory=dict)
    importance: Importance = "auto"
    round_to: int = Field(default=8, ge=1, le=256)
    quant: QuantSettings = Field(default_factory=QuantSettings)
    input_size: int | None = Field(default=None, ge=32, le=4096,
                                   description="export at this square input size (None: the model's own)")
    scales: tuple[int, ...] | None = Field(default=None, description="a detector's output scales kept, by "
                                           "stride (None: all); the others and the blocks only they read are removed")

    @field_validator("scales")
    @classmethod
    def _scales(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is None:
            return None
        if not v or any(s <= 0 for s in v):
            raise ValueError(f"scales must be one or more positive output strides (e.g. [8]), got {list(v)}")
        return tuple(sorted(set(v)))

    # -- queries -----------------------------------------------------------------------------------
    def precision_of(self, layer: str) -> str:
        return self.precision.get(layer, self.default_precision)

    def sparsity_of(self, group: str) -> Sparsity:
        return self.sparsity.get(group, Sparsity())

    @property
    def prunes(self) -> bool:
        return any(s.active for s in self.sparsity.values())

    @property
    def channel_prunes(self) -> bool:
        return any(s.active and s.kind == "channel" for s in self.sparsity.values())

    def uses(self, precision: str, layers: list[str]) -> bool:
        return any(self.precision_of(n) == precision for n in layers)

    # -- identity ----------------------------------------------------------------------------------
    def canonical(self) -> dict[str, Any]:
        """The config as plain data without its label, dense groups dropped, keys sorted."""
        d = self.model_dump(mode="json", exclude={"name"})
        d["quant"] = self.quant.identity()  # the default int8 placement is left out: older hashes stay the same
        d["sparsity"] = {k: v for k, v in sorted(d["sparsity"].items()) if Sparsity(**v).active}
        d["precision"] = dict(sorted(d["precision"].items()))
        if d.get("input_size") is None:  # the model's own size: the hash of every older point stays the same
            d.pop("input_size", None)
        if d.get("scales") is None:  # every output scale: likewise
            d.pop("scales", None)
        return d

    def hash(self) -> str:
        """sha256 of the canonical JSON: the same point always gives the same hash."""
        blob = json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    # -- serialisation -----------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, indent=2)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict, *, where: str = "compression config") -> CompressionConfig:
        from edgetune.errors import format_validation_error

        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be a mapping (default_precision:, precision:, sparsity:, ...).")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid {where}: {format_validation_error(exc, model=cls)}") from exc

    @classmethod
    def from_file(cls, path: str | Path) -> CompressionConfig:
        """Read a YAML or JSON point file."""
        import yaml

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"point file '{path}' does not exist. Pass a YAML/JSON file or a baseline name "
                              f"({', '.join(BASELINES)}).")
        try:
            data = yaml.safe_load(path.read_text())  # JSON is YAML
        except yaml.YAMLError as exc:
            raise ConfigError(f"point file '{path}' is not valid YAML/JSON: {exc}") from exc
        return cls.from_dict(data, where=f"point file '{path}'")

    @classmethod
    def load(cls, ref: str, *, quant: QuantSettings | None = None) -> CompressionConfig:
        """A baseline name or a point file path."""
        if ref in BASELINES:
            return baseline(ref, quant=quant)
        if not Path(ref).exists() and not ref.endswith((".yaml", ".yml", ".json")):
            import difflib

            close = difflib.get_close_matches(ref, list(BASELINES), n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"--point {ref!r} is neither a baseline nor a file.{hint} Baselines: "
                              f"{', '.join(BASELINES)}.")
        return cls.from_file(ref)


BASELINES: dict[str, str] = {"fp32": "fp32", "int8-uniform": "int8", "fp16-uniform": "fp16"}


def baseline(name: str, *, quant: QuantSettings | None = None) -> CompressionConfig:
    """A named baseline: every layer at one precision, nothing pruned."""
    if name not in BASELINES:
        import difflib

        close = difflib.get_close_matches(name, list(BASELINES), n=1, cutoff=0.5)
        raise ConfigError(f"unknown baseline {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                          + f"; baselines: {', '.join(BASELINES)}.")
    return CompressionConfig(name=name, default_precision=BASELINES[name], quant=quant or QuantSettings())
