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


class _Tiny(torch.nn.Module):
    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.scale = scale  # a plain attribute the forward reads: part of what the export is made from

    def forward(self, x):
        return self.conv(x) * self.scale


def _tiny(scale: float = 1.0) -> _Tiny:
    torch.manual_seed(0)
    return _Tiny(scale)


def test_cached_export_serves_the_same_weights_and_never_a_wrong_model(tmp_path):
    """The same weights are exported once (the second call is a copy, parity-checked); other weights or another
    plain attribute are another key; an entry that does not match its model (stale, foreign or torn) is
    exported again and replaced, never served."""
    from edgetune.compress.export import cached_export, export_key

    cache = tmp_path / "cache"
    first = cached_export(_tiny(), tmp_path / "a.onnx", input_size=32, cache=cache)
    second = cached_export(_tiny(), tmp_path / "b.onnx", input_size=32, cache=cache)
    assert not first.from_cache and second.from_cache and second.max_abs_diff <= second.tolerance
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert len(list(cache.iterdir())) == 1

    other = _tiny()
    with torch.no_grad():
        other.conv.weight[0, 0, 0, 0] += 1.0
    keys = {export_key(m, input_size=s) for m, s in ((_tiny(), 32), (_tiny(), 64), (other, 32), (_tiny(2.0), 32))}
    assert len(keys) == 4

    entry = cache / f"{export_key(_tiny(), input_size=32)}.onnx"
    export_onnx(_tiny(2.0), tmp_path / "stale.onnx", input_size=32)
    for wrong in ((tmp_path / "stale.onnx").read_bytes(), b"torn"):
        entry.write_bytes(wrong)
        again = cached_export(_tiny(), tmp_path / "c.onnx", input_size=32, cache=cache)
        assert not again.from_cache and again.max_abs_diff <= again.tolerance
        assert entry.read_bytes() == (tmp_path / "a.onnx").read_bytes()
