"""Compression: prune (scoring / scheduling / surgery), recover, export ONNX, quantize (QDQ), fp16, Artifact.

Importing this package does not import torch or onnxruntime; :func:`compress` does when called.
"""

from edgetune.compress._artifact import Artifact, store
from edgetune.compress._compress import COMPRESS_VERSION, artifact_key, compress, needs_train
from edgetune.compress._importance import IMPORTANCES, needs_gradients, register_importance
from edgetune.compress._onnx_map import layer_node_map, quantized_nodes
from edgetune.compress._schedule import PrunePlan, schedule
from edgetune.compress._sensitivity import Cut, Sensitivity, measure_sensitivity, restrict_space
from edgetune.compress._spec import DEFAULT_STEPS, RecoverySpec
from edgetune.compress.export import ExportReport, export_onnx, node_module_paths

__all__ = [
    "compress", "needs_train", "artifact_key", "COMPRESS_VERSION", "Artifact",
    "RecoverySpec", "DEFAULT_STEPS", "PrunePlan", "schedule", "IMPORTANCES", "register_importance", "needs_gradients", "store",
    "layer_node_map", "quantized_nodes",
    "ExportReport", "export_onnx", "node_module_paths",
    "Cut", "Sensitivity", "measure_sensitivity", "restrict_space",
]
