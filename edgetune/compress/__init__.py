"""Compression: prune, recover, export ONNX, quantize (QDQ), Artifact."""

from edgetune.compress.export import ExportReport, export_onnx, node_module_paths

__all__ = ["ExportReport", "export_onnx", "node_module_paths"]
