"""ONNX export: one file, parity with torch, loud failure above tolerance."""

from __future__ import annotations

import onnx
import pytest
import torch

from edgetune.compress.export import export_onnx, parity
from edgetune.errors import ExportError


def test_export_is_single_file_and_matches_torch(det_s, tmp_path):
    report = export_onnx(det_s.module, tmp_path / "m.onnx", input_size=det_s.input_size)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    assert report.max_abs_diff <= report.tolerance
    assert report.max_abs_diff < 1e-2
    proto = onnx.load(str(tmp_path / "m.onnx"))
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops  # folded
    assert sum(n.op_type == "Conv" for n in proto.graph.node) == sum(
        isinstance(m, torch.nn.Conv2d) for m in det_s.module.modules())


class _Drifts(torch.nn.Module):
    """Exports fine, but the exported graph differs from eager torch (as a mis-exported op would)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x) + (1.0 if torch.compiler.is_exporting() else 0.0)


def test_export_fails_loudly_above_tolerance(tmp_path):
    with pytest.raises(ExportError, match="does not match torch"):
        export_onnx(_Drifts(), tmp_path / "d.onnx", input_size=32)


def test_parity_reports_the_difference(det_s, det_s_onnx):
    diff, tol = parity(det_s.module, det_s_onnx, input_size=det_s.input_size)
    assert 0 <= diff <= tol
