"""``SearchSpace``: per-layer precision and per-group sparsity choices of one model for some device kinds.

Plain data (no torch): built by :func:`~edgetune.spaces.build_space`, serialisable with ``to_dict`` so a
sweep can log it. A sampler sees :attr:`SearchSpace.dimensions` (one categorical choice each: a layer's
precision, a group's sparsity, or one choice for a whole stage / block when tied; the model's input size,
``input_size``; the device runtime, ``runtime``), and turns the values it picked into a
:class:`CompressionConfig` with :meth:`SearchSpace.config_from` (the runtime is measured on, read by
:meth:`SearchSpace.runtime_from`; it shapes the artifact only where int8 layers are placed for it:
``QuantSettings.placement``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from edgetune.errors import ConfigError, closest_names
from edgetune.spaces._config import CompressionConfig, Sparsity, baseline
from edgetune.spaces._layers import Group, Layer
from edgetune.spaces._rules import QuantSettings

__all__ = ["Dimension", "SearchSpace"]


@dataclass(frozen=True)
class Dimension:
    """One categorical search parameter; its value applies to every member (layers or groups)."""

    name: str
    kind: str  # "precision" | "sparsity" | "input_size" | "runtime" | "scales"
    choices: tuple[str, ...]
    members: tuple[str, ...]


def _kinds(choices: tuple[str, ...]) -> set[str]:
    return {c if c == "2:4" else c.split(":")[0] for c in choices if c != "dense"}


@dataclass
class SearchSpace:
    layers: tuple[Layer, ...]
    groups: tuple[Group, ...]
    precision_choices: dict[str, tuple[str, ...]]
    sparsity_choices: dict[str, tuple[str, ...]]
    dimensions: tuple[Dimension, ...]
    targets: tuple[str, ...]
    quant: QuantSettings
    importance: str = "auto"
    round_to: int = 8
    precision_pins: dict[str, str] = field(default_factory=dict)  # layer -> why it has one precision
    sparsity_pins: dict[str, str] = field(default_factory=dict)  # group -> why it stays dense
    notes: tuple[str, ...] = ()  # choices dropped by the rule table, and why
    input_size: int = 0  # the model's own
    input_size_choices: tuple[int, ...] = ()  # resolutions to export at (empty: the model's own only)
    runtime_choices: tuple[str, ...] = ()  # device runtimes to measure on (empty: each device's default)
    scale_choices: tuple[str, ...] = ()  # a detector's output scales to keep (``8+16+32``, every one first)

    def __post_init__(self) -> None:
        self._layer = {lay.name: lay for lay in self.layers}
        self._group = {g.name: g for g in self.groups}
        self._group_of = {n: g.name for g in self.groups for n in g.layers}

    # -- lookups -------------------------------------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        return [lay.name for lay in self.layers]

    def layer(self, name: str) -> Layer:
        if name not in self._layer:
            raise ConfigError(f"unknown layer {name!r}.{closest_names(name, self.layer_names)}")
        return self._layer[name]

    def group_of(self, layer: str) -> str | None:
        return self._group_of.get(layer)

    @property
    def offered_precisions(self) -> set[str]:
        return {p for c in self.precision_choices.values() for p in c}

    @property
    def size_log10(self) -> float:
        """log10 of the number of distinct points."""
        return sum(math.log10(len(d.choices)) for d in self.dimensions)

    # -- points --------------------------------------------------------------------------------------
    def _complete(self, precision: dict[str, str], sparsity: dict[str, Sparsity],
                  input_size: int | None = None, runtime: str | None = None,
                  scales: tuple[int, ...] | None = None) -> CompressionConfig:
        return CompressionConfig(default_precision="fp32", precision=precision,
                                 sparsity={k: v for k, v in sparsity.items() if v.active},
                                 importance=self.importance, round_to=self.round_to,
                                 quant=self.quant.for_runtime(runtime), input_size=input_size, scales=scales)

    def scales_of(self, label: str) -> tuple[int, ...] | None:
        """A ``scales`` choice as a config's ``scales``: None for every output scale (the first choice)."""
        if not self.scale_choices or label == self.scale_choices[0]:
            return None
        return tuple(int(s) for s in label.split("+"))

    def config_from(self, params: Mapping[str, str]) -> CompressionConfig:
        """The config of one value per dimension (``{dimension.name: choice}``); pins are filled in."""
        unknown = sorted(set(params) - {d.name for d in self.dimensions})
        if unknown:
            raise ConfigError(f"unknown search dimension {unknown[0]!r}."
                              f"{closest_names(unknown[0], [d.name for d in self.dimensions])}")
        precision = {n: c[0] for n, c in self.precision_choices.items() if len(c) == 1}
        size = self.input_size_choices[0] if len(self.input_size_choices) == 1 else None
        scales = None
        # a group with one choice is no dimension, but that choice holds (``ratios: [0.25]`` prunes every trial)
        sparsity = {n: Sparsity.parse(c[0]) for n, c in self.sparsity_choices.items() if len(c) == 1}
        for d in self.dimensions:
            if d.name not in params:
                raise ConfigError(f"missing a value for search dimension {d.name!r} (choices: {', '.join(d.choices)}).")
            value = params[d.name]
            if value not in d.choices:
                raise ConfigError(f"{value!r} is not a choice of {d.name!r}; choices: {', '.join(d.choices)}.")
            if d.kind == "input_size":
                size = int(value)
            if d.kind == "scales":
                scales = self.scales_of(value)
            for m in d.members:
                if d.kind == "precision":
                    precision[m] = value
                else:  # a tied choice a member cannot take (2:4 on a depthwise group) leaves it dense
                    sp = Sparsity.parse(value)
                    sparsity[m] = sp if sp.kind in _kinds(self.sparsity_choices[m]) else Sparsity()
        return self._complete(precision, sparsity, None if size == self.input_size else size, self.runtime_from(params),
                              scales)

    def runtime_from(self, params: Mapping[str, str]) -> str | None:
        """The runtime a point is measured on: its ``runtime`` value, the one runtime offered, or None (each
        device's default)."""
        if len(self.runtime_choices) > 1:
            return params.get("runtime", self.runtime_choices[0])
        return self.runtime_choices[0] if self.runtime_choices else None

    @property
    def baseline_runtime(self) -> str | None:
        """The runtime the baselines are measured on: the first of ``space.runtime``."""
        return self.runtime_choices[0] if self.runtime_choices else None

    def random_config(self, seed: int = 0) -> CompressionConfig:
        rng = random.Random(seed)
        return self.config_from({d.name: rng.choice(d.choices) for d in self.dimensions})

    def baseline(self, name: str, runtime: str | None = None) -> CompressionConfig:
        """A named baseline with this space's quantization recipe, placed for ``runtime`` (None: the runtime
        the baselines are measured on)."""
        return baseline(name, quant=self.quant.for_runtime(runtime or self.baseline_runtime)).model_copy(update={"importance": self.importance,
                                                                   "round_to": self.round_to})

    def validate(self, config: CompressionConfig) -> CompressionConfig:
        """Raise ConfigError naming the layer / group, the value and the fix; return ``config``."""
        targets = ", ".join(self.targets)
        sizes = self.input_size_choices or (self.input_size,)
        if config.input_size is not None and self.input_size and config.input_size not in (*sizes, self.input_size):
            raise ConfigError(f"`input_size` {config.input_size} is not offered (space.input_size: "
                              f"{', '.join(map(str, sizes))}); use one of those or add it to `space.input_size`.")
        if config.scales is not None and "+".join(map(str, config.scales)) not in self.scale_choices[1:]:
            offered = ", ".join(self.scale_choices) or "none: `space.scales` is unset"
            raise ConfigError(f"`scales` {list(config.scales)} is not offered (space.scales: {offered}); use one of "
                              "those or add it to `space.scales`.")
        if config.default_precision not in self.offered_precisions:
            raise ConfigError(
                f"`default_precision` {config.default_precision!r} is not offered: none of the targets ({targets}) "
                f"benefits from it (rule table in docs/compression.md). Use one of "
                f"{', '.join(sorted(self.offered_precisions))} or add a target that runs it (e.g. jetson-orin for fp16).")
        for name, prec in config.precision.items():
            if name not in self._layer:
                extra = " It is a group; set its sparsity under `sparsity:`." if name in self._group else ""
                raise ConfigError(f"`precision` names unknown layer {name!r}.{extra}{closest_names(name, self.layer_names)}")
            choices = self.precision_choices[name]
            if prec not in choices:
                if name in self.precision_pins:
                    raise ConfigError(f"layer {name!r} is pinned to {choices[0]} ({self.precision_pins[name]}), but the "
                                      f"config asks for {prec}. Drop it from the config or from `space.keep`.")
                raise ConfigError(
                    f"precision {prec!r} is not offered for layer {name!r} (choices: {', '.join(choices)}); the "
                    f"targets ({targets}) do not benefit from it or `space.precision` leaves it out.")
        groups = list(self._group)
        for name, sp in config.sparsity.items():
            if name not in self._group:
                if name in self._group_of:
                    raise ConfigError(f"`sparsity` names layer {name!r}, which is coupled in group "
                                      f"{self._group_of[name]!r}: set the group's ratio instead.")
                if name in self._layer and self._layer[name].last:
                    raise ConfigError(f"layer {name!r} writes the model output and is never pruned; remove it "
                                      "from `sparsity`.")
                raise ConfigError(f"`sparsity` names unknown group {name!r}.{closest_names(name, groups)}")
            if not sp.active:
                continue
            choices = self.sparsity_choices[name]
            kinds = _kinds(choices)
            if name in self.sparsity_pins:
                raise ConfigError(f"group {name!r} is pinned dense ({self.sparsity_pins[name]}), but the config prunes it "
                                  f"({sp.label()}). Remove it from the config or from `space.keep.sparsity`.")
            if sp.kind not in kinds:
                raise ConfigError(
                    f"sparsity kind {sp.kind!r} is not offered for group {name!r} (choices: {', '.join(choices)}); "
                    f"the targets ({targets}) or `space.sparsity.kind` do not allow it"
                    + (" (2:4 needs a jetson-orin target and non-depthwise layers with input channels divisible "
                       "by 4)." if sp.kind == "2:4" else "."))
        return config

    # -- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "layers": [lay.to_dict() for lay in self.layers], "groups": [g.to_dict() for g in self.groups],
            "precision_choices": {k: list(v) for k, v in self.precision_choices.items()},
            "sparsity_choices": {k: list(v) for k, v in self.sparsity_choices.items()},
            "dimensions": [{"name": d.name, "kind": d.kind, "choices": list(d.choices), "members": list(d.members)}
                           for d in self.dimensions],
            "targets": list(self.targets), "quant": self.quant.model_dump(mode="json"),
            "importance": self.importance, "round_to": self.round_to,
            "precision_pins": dict(self.precision_pins), "sparsity_pins": dict(self.sparsity_pins),
            "notes": list(self.notes), "input_size": self.input_size,
            "input_size_choices": list(self.input_size_choices), "runtime_choices": list(self.runtime_choices),
            "scale_choices": list(self.scale_choices),
        }

    @classmethod
    def from_dict(cls, d: dict) -> SearchSpace:
        return cls(
            layers=tuple(Layer.from_dict(x) for x in d["layers"]), groups=tuple(Group.from_dict(x) for x in d["groups"]),
            precision_choices={k: tuple(v) for k, v in d["precision_choices"].items()},
            sparsity_choices={k: tuple(v) for k, v in d["sparsity_choices"].items()},
            dimensions=tuple(Dimension(x["name"], x["kind"], tuple(x["choices"]), tuple(x["members"]))
                             for x in d["dimensions"]),
            targets=tuple(d["targets"]), quant=QuantSettings(**d["quant"]), importance=d["importance"],
            round_to=d["round_to"],
            precision_pins=dict(d["precision_pins"]), sparsity_pins=dict(d["sparsity_pins"]), notes=tuple(d["notes"]), input_size=d["input_size"],
            input_size_choices=tuple(d.get("input_size_choices", ())), runtime_choices=tuple(d.get("runtime_choices", ())),
            scale_choices=tuple(d.get("scale_choices", ())))
