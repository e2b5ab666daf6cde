"""Search spaces: layer discovery, coupling groups, device rules, ``SearchSpace``, ``CompressionConfig``.

Importing this package does not import torch (``edgetune.config`` imports its ``space:`` section);
:func:`build_space` imports torch and Torch-Pruning when called.
"""

from edgetune.spaces._build import build_space, select_layers, space_from_layers
from edgetune.spaces._config import BASELINES, BITS, CompressionConfig, Sparsity, baseline
from edgetune.spaces._discover import (
    dependency_graph,
    discover_groups,
    discover_layers,
    find_attention,
    layer_modules,
    measure_macs,
    norm_to_layer,
    out_channel_group,
    test_cut_groups,
)
from edgetune.spaces._layers import Group, Layer, kept_channels, two_four_eligible
from edgetune.spaces._onnx import discover_onnx_layers, read_onnx
from edgetune.spaces._rules import (
    DEVICE_KINDS,
    RULES,
    RUNTIMES,
    KindRule,
    QuantSettings,
    offered,
    quant_for_kinds,
    rule_for,
)
from edgetune.spaces._space import Dimension, SearchSpace
from edgetune.spaces._spec import KeepSpec, SpaceSpec, SparsitySpec

__all__ = [
    "build_space", "space_from_layers", "select_layers",
    "CompressionConfig", "Sparsity", "BASELINES", "BITS", "baseline",
    "dependency_graph", "discover_layers", "discover_groups", "layer_modules", "measure_macs", "norm_to_layer",
    "find_attention", "out_channel_group", "test_cut_groups",
    "discover_onnx_layers", "read_onnx",
    "Layer", "Group", "kept_channels", "two_four_eligible",
    "RULES", "RUNTIMES", "DEVICE_KINDS", "KindRule", "QuantSettings", "rule_for", "offered", "quant_for_kinds",
    "SearchSpace", "Dimension",
    "SpaceSpec", "SparsitySpec", "KeepSpec",
]
