"""Scheduling: how much each group and layer is pruned, from a config (no torch).

Turns a :class:`CompressionConfig` into a :class:`PrunePlan`: for channel sparsity, the number of
channels each group keeps (rounded up to ``round_to``); for unstructured and 2:4 sparsity, the layers
and their ratios. Pins and validation are the search space's business; this only reads the config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgetune._logging import get_logger
from edgetune.spaces import CompressionConfig, Group, Layer, kept_channels, two_four_eligible

log = get_logger(__name__)

__all__ = ["PrunePlan", "schedule"]


@dataclass(frozen=True)
class PrunePlan:
    channels: dict[str, int] = field(default_factory=dict)  # group -> channels kept
    unstructured: dict[str, float] = field(default_factory=dict)  # layer -> ratio of zeroed weights
    two_four: tuple[str, ...] = ()  # layers made 2:4 sparse

    @property
    def empty(self) -> bool:
        return not (self.channels or self.unstructured or self.two_four)

    def to_dict(self) -> dict:
        return {"channels": dict(self.channels), "unstructured": dict(self.unstructured),
                "two_four": list(self.two_four)}


def schedule(config: CompressionConfig, groups: list[Group], layers: list[Layer]) -> PrunePlan:
    by_group = {g.name: g for g in groups}
    by_layer = {lay.name: lay for lay in layers}
    channels: dict[str, int] = {}
    unstructured: dict[str, float] = {}
    two_four: list[str] = []
    for name, sp in sorted(config.sparsity.items()):
        if not sp.active:
            continue
        g = by_group[name]
        if sp.kind == "channel":
            keep = kept_channels(g.channels, sp.ratio, config.round_to)
            if keep < g.channels:
                channels[name] = keep
            else:
                log.info("group %s: %d channels at ratio %g with round_to=%d keeps all of them", name, g.channels,
                         sp.ratio, config.round_to)
        elif sp.kind == "unstructured":
            unstructured.update({n: sp.ratio for n in g.layers})
        else:
            ok = [n for n in g.layers if two_four_eligible(by_layer[n])]
            skipped = sorted(set(g.layers) - set(ok))
            if skipped:
                log.debug("group %s: 2:4 skips %s (depthwise or input channels not divisible by 4)", name, skipped)
            two_four.extend(ok)
    return PrunePlan(channels, unstructured, tuple(two_four))
