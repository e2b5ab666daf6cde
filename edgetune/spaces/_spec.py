"""The ``space:`` section of a sweep file (pydantic, no torch: ``edgetune.config`` imports it).

```yaml
space:
  precision: [fp32, int8]                 # per-layer choices (filtered by the targets' rule table)
  sparsity:
    kind: channel                         # channel | unstructured | 2:4, or a list of them
    ratios: [0.0, 0.25, 0.5]              # per-group choices, each in [0, 0.95]
    importance: magnitude                 # channel scoring: magnitude | lamp | fpgm | bn_scale | taylor
    round_to: 8                           # kept channels are a multiple of this
    max_drop: 0.05                        # drop channel ratios whose cut alone (BatchNorm re-estimated, no
                                          # fine-tuning) costs more metric than this (`edgetune space --sensitivity`)
  keep:
    precision: {fp32: [first, last]}      # pins: first | last | layer names | globs (heads.*.cls_out)
    sparsity: [last]                      # never pruned (last layers never lose output channels anyway)
  tie: none                               # none | stage | block | model: one choice per stage / block /
                                          # the whole model; or per kind: {precision: stage, sparsity: model}
  targets: [local-cpu]                    # device kinds, until the sweep's devices report theirs
  calibration: minmax                     # minmax | entropy | percentile
  runtime: [ort, openvino]                # device runtimes to search over (each device must offer them;
                                          # default: the device's own runtime). The first times the baselines.
  input_size: [256, 224, 192]             # input resolutions to export at (default: the model's own)
  scales: auto                            # detectors (Ultralytics): the output scales to keep, by stride:
                                          # auto (every non-empty subset) or a list ([[8, 16, 32], [8]]);
                                          # a dropped scale's head branch and the neck only it reads go
```
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from edgetune._strict import Strict
from edgetune.errors import closest_names
from edgetune.spaces._rules import DEVICE_KINDS

__all__ = ["SparsitySpec", "KeepSpec", "TieSpec", "SpaceSpec", "Precision", "SparsityKind", "Importance", "MAX_RATIO",
           "check_ratio"]

Precision = Literal["fp32", "fp16", "int8"]
SparsityKind = Literal["channel", "unstructured", "2:4"]
Importance = str  # "auto" or a registered scoring (``edgetune.compress.IMPORTANCES``); checked by the sweep config
TieLevel = Literal["none", "stage", "block", "model"]
MAX_RATIO = 0.95


def check_ratio(r: float, where: str = "") -> float:
    if not 0.0 <= r <= MAX_RATIO:
        raise ValueError(f"sparsity ratio must be in [0, {MAX_RATIO}], but got {r}{where}. Lower it, or pin the "
                         "layer in `space.keep.sparsity` to keep it dense.")
    return float(r)


def _known(values: list[str], valid, *, what: str, plural: str) -> list[str]:
    """``values`` without repeats; ValueError naming the unknown ones, their closest valid names and all valid."""
    bad = [v for v in values if v not in valid]
    if bad:
        hints = "".join(closest_names(b, valid) for b in bad)
        raise ValueError(f"unknown {what} {', '.join(map(repr, bad))}.{hints} Valid {plural}: {', '.join(valid)}")
    return list(dict.fromkeys(values))


class SparsitySpec(Strict):
    kind: SparsityKind | list[SparsityKind] = "channel"
    ratios: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5], min_length=1)
    importance: Importance = Field(default="auto", description="channel scoring; 'auto' = taylor (gradient "
                                   "energy) when the train split is there and the model offers a supervised loss, else magnitude; any name "
                                   "of the importance registry")
    round_to: int = Field(default=8, ge=1, le=256)
    max_drop: float | None = Field(default=None, gt=0, le=1, description="remove a dimension's channel ratio "
                                   "when cutting it alone (BatchNorm re-estimated, before recovery) costs more "
                                   "than this of the metric (mAP50-95 / top-1) on `sensitivity_images` val "
                                   "images (and a `space.scales` choice likewise); null: keep every ratio")
    sensitivity_images: int = Field(default=100, ge=8, description="validation images each sensitivity cut "
                                    "is scored on (the first ones of the val split)")

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v: list[float]) -> list[float]:
        return sorted({check_ratio(r) for r in v})

    @property
    def kinds(self) -> tuple[str, ...]:
        kinds = [self.kind] if isinstance(self.kind, str) else list(self.kind)
        return tuple(dict.fromkeys(kinds))

    @property
    def prunes_channels(self) -> bool:
        """Whether the space can offer channel pruning at all (a kind ``channel`` and a ratio above 0)."""
        return "channel" in self.kinds and any(r > 0 for r in self.ratios)


class KeepSpec(Strict):
    """Pins. Selectors: ``first``, ``last``, an exact layer name, or a glob (``heads.*.cls_out``)."""

    precision: dict[Precision, list[str]] = Field(default_factory=dict)
    sparsity: list[str] = Field(default_factory=lambda: ["last"])

    @model_validator(mode="after")
    def _disjoint(self) -> KeepSpec:
        seen: dict[str, str] = {}
        for prec, sels in self.precision.items():
            for s in sels:
                if s in seen and seen[s] != prec:
                    raise ValueError(f"selector {s!r} pins layers to both {seen[s]} and {prec}; keep one.")
                seen[s] = prec
        return self


class TieSpec(Strict):
    """One tie level per kind of dimension (``tie: {precision: stage, sparsity: model}``)."""

    precision: TieLevel = "none"
    sparsity: TieLevel = "none"


class SpaceSpec(Strict):
    precision: list[Precision] = Field(default_factory=lambda: ["fp32", "int8"], min_length=1)
    sparsity: SparsitySpec = Field(default_factory=SparsitySpec)
    keep: KeepSpec = Field(default_factory=KeepSpec)
    tie: TieLevel | TieSpec = "none"
    targets: list[str] = Field(default_factory=lambda: ["local-cpu"], min_length=1)
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    runtime: list[str] = Field(default_factory=list, description="runtimes to search over (ort, openvino, "
                               "tensorrt); every measured device must offer each; empty: the device's default")
    input_size: list[int] = Field(default_factory=list, description="square input resolutions to export at; "
                                  "empty: the model's own")
    scales: Literal["auto"] | list[list[int]] | None = Field(
        default=None, description="detectors: the sets of output scales (by stride) to search over; `auto`: every "
        "non-empty subset of the head's strides; unset: all scales always kept")

    @field_validator("scales")
    @classmethod
    def _scales(cls, v):
        if v is None or v == "auto":
            return v
        out = []
        for s in v:
            if not s or any(x <= 0 for x in s):
                raise ValueError(f"each entry of `scales` is a non-empty list of output strides (e.g. [8, 16]), got {s}")
            out.append(sorted(set(s)))
        return list({tuple(s): s for s in out}.values())

    @field_validator("runtime")
    @classmethod
    def _runtime(cls, v: list[str]) -> list[str]:
        from edgetune.spaces._rules import RUNTIMES

        return _known(v, RUNTIMES, what="runtime", plural="runtimes")

    @field_validator("input_size")
    @classmethod
    def _input_size(cls, v: list[int]) -> list[int]:
        bad = [s for s in v if not 32 <= s <= 4096 or s % 32]
        if bad:
            raise ValueError(f"input sizes must be multiples of 32 in [32, 4096] (the strides of detectors), got "
                             f"{', '.join(map(str, bad))}")
        return sorted(set(v), reverse=True)

    def tie_for(self, kind: str) -> str:
        """The tie level of ``kind`` (``precision`` / ``sparsity``) dimensions."""
        return self.tie if isinstance(self.tie, str) else getattr(self.tie, kind)

    @field_validator("precision")
    @classmethod
    def _precision(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        return _known(v, DEVICE_KINDS, what="device kind", plural="kinds")
