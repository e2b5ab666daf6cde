"""Bad input to compress(): a clear EdgetuneError naming the layer / group and the fix."""

from __future__ import annotations

import pytest

from edgetune.compress import RecoverySpec
from edgetune.errors import CompressionError, ConfigError
from edgetune.spaces import CompressionConfig


def test_unknown_layer_and_group_list_close_names(det_s, shapes_calib, tmp_path):
    from edgetune.compress import compress

    with pytest.raises(ConfigError, match=r"unknown layer 'stage2.0.cnv'.*stage2.0.conv"):
        compress(det_s, CompressionConfig(precision={"stage2.0.cnv": "int8"}), calib=shapes_calib, workdir=tmp_path)
    with pytest.raises(ConfigError, match=r"unknown group 'stage3.1.cv9.conv'.*stage3.1.cv1.conv"):
        compress(det_s, CompressionConfig(sparsity={"stage3.1.cv9.conv": {"ratio": 0.5}}), calib=shapes_calib,
                 workdir=tmp_path, recovery=RecoverySpec(steps=0))


def test_precision_the_space_does_not_offer(det_s, shapes_calib, cpu_space, tmp_path):
    from edgetune.compress import compress

    with pytest.raises(ConfigError, match=r"'fp16' is not offered for layer 'stage2.0.conv'.*targets \(local-cpu\)"):
        compress(det_s, CompressionConfig(precision={"stage2.0.conv": "fp16"}), calib=shapes_calib,
                 workdir=tmp_path, space=cpu_space)


def test_an_unregistered_importance_in_a_point_file_is_named(det_s, shapes_calib, tmp_path):
    from edgetune.compress import IMPORTANCES, compress

    cfg = CompressionConfig(sparsity={"stage3.0.pw.conv": {"ratio": 0.5}}, importance="tayler")
    with pytest.raises(ConfigError, match=r"`importance` 'tayler' is not registered; valid: auto, " +
                       ", ".join(sorted(IMPORTANCES))):
        compress(det_s, cfg, calib=shapes_calib, workdir=tmp_path, recovery=RecoverySpec(steps=0))


def test_pruning_without_train_data_says_how_to_fix_it(det_s, shapes_calib, tmp_path):
    from edgetune.compress import compress

    cfg = CompressionConfig(sparsity={"stage3.0.pw.conv": {"ratio": 0.5}})
    with pytest.raises(CompressionError, match=r"recovery needs the train split.*recovery.steps: 0"):
        compress(det_s, cfg, calib=shapes_calib, workdir=tmp_path)


def test_untraceable_or_onnx_only_models(det_s, shapes_calib, tmp_path):
    from torch import nn

    from edgetune.compress import RecoverySpec, compress
    from edgetune.models import LoadedModel

    class Grey(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3)

        def forward(self, x):
            return self.conv(x)

    grey = LoadedModel("grey", Grey(), det_s.head, 32, "0" * 64)
    with pytest.raises(CompressionError, match="Torch-Pruning cannot trace Grey"):
        compress(grey, CompressionConfig(sparsity={"conv": {"ratio": 0.5}}), calib=shapes_calib, workdir=tmp_path,
                 recovery=RecoverySpec(steps=0))
    onnx_only = LoadedModel("x", None, det_s.head, 256, "0" * 64)
    with pytest.raises(CompressionError, match="no torch module"):
        compress(onnx_only, CompressionConfig(), calib=shapes_calib, workdir=tmp_path)
