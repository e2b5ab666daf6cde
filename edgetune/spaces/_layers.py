"""Plain records of a model's compressible structure: :class:`Layer` and :class:`Group` (no torch)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["Layer", "Group", "conv_kind", "kept_channels", "two_four_eligible"]


@dataclass(frozen=True)
class Layer:
    """One compressible layer (conv / linear), named by its module path.

    ``kind`` is ``dense | depthwise | pointwise | grouped | linear``; ``macs`` are counted at the
    model's input size (batch 1). ``first`` / ``last``: the layer reads the model input / writes the
    model output without another layer in between. ``stage`` / ``block`` are the tie keys.
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    groups: int
    kernel: tuple[int, ...]
    params: int
    macs: int
    first: bool = False
    last: bool = False
    stage: str = ""
    block: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["kernel"] = list(self.kernel)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Layer:
        return cls(**{**d, "kernel": tuple(d["kernel"])})


@dataclass(frozen=True)
class Group:
    """Layers whose output channels are coupled (residual adds, concats, depthwise followers) and so
    share one pruning ratio. ``name`` is the producer layer; ``layers`` lose output channels together;
    ``consumers`` lose the matching input channels; ``channels`` is the coupled channel count."""

    name: str
    layers: tuple[str, ...]
    consumers: tuple[str, ...]
    channels: int

    def to_dict(self) -> dict:
        return {"name": self.name, "layers": list(self.layers), "consumers": list(self.consumers),
                "channels": self.channels}

    @classmethod
    def from_dict(cls, d: dict) -> Group:
        return cls(d["name"], tuple(d["layers"]), tuple(d["consumers"]), int(d["channels"]))


def conv_kind(groups: int, in_channels: int, kernel) -> str:
    """A convolution's ``Layer.kind``: depthwise, grouped, pointwise (all-1 kernel) or dense."""
    if groups > 1 and groups == in_channels:
        return "depthwise"
    if groups > 1:
        return "grouped"
    return "pointwise" if all(k == 1 for k in kernel) else "dense"


def kept_channels(channels: int, ratio: float, round_to: int) -> int:
    """Channels a group keeps when ``ratio`` of them are pruned, rounded UP to a multiple of ``round_to``
    (uneven counts made a pruned model slower than the full one here), never below ``round_to``."""
    if ratio <= 0.0:
        return channels
    kept = math.ceil(channels * (1.0 - ratio) / round_to - 1e-9) * round_to
    return max(min(kept, channels), min(round_to, channels))


def two_four_eligible(layer: Layer) -> bool:
    """2:4 needs groups of four consecutive input weights: no depthwise, (cin / groups) % 4 == 0."""
    return layer.kind != "depthwise" and (layer.in_channels // layer.groups) % 4 == 0
