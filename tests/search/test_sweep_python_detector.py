"""A detector brought by a ``python`` factory (not det-s: no ``raw()``, no loss of its own, the
Ultralytics output layout) goes through a whole sweep: its pruned trials recover by distilling the
uncompressed model (the task seam's generic detector adapter) and complete."""

from __future__ import annotations

import pytest

from edgetune.search.records import RECORD_ATTR
from edgetune.search.wiring import prepare_sweep

SIZE = 128


def tiny_yolo(num_classes: int = 6):
    """Two-scale conv detector with a decoupled head; output (N, 4 + C, A): xywh in input pixels, then
    sigmoid class scores (the layout of Ultralytics YOLOv8 / YOLO11 exports)."""
    import torch
    from torch import nn

    def block(cin, cout, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

    class TinyYolo(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(block(3, 16, 2), block(16, 32, 2), block(32, 32, 1))
            self.p3 = nn.Sequential(block(32, 48, 2), block(48, 48, 1))  # stride 8
            self.p4 = block(48, 64, 2)  # stride 16
            self.box = nn.ModuleList([nn.Conv2d(48, 4, 1), nn.Conv2d(64, 4, 1)])
            self.cls = nn.ModuleList([nn.Conv2d(48, num_classes, 1), nn.Conv2d(64, num_classes, 1)])
            for c in self.cls:
                nn.init.constant_(c.bias, -4.0)  # the usual prior: few confident boxes before training

        def forward(self, x):
            f3 = self.p3(self.stem(x))
            outs = []
            for feat, stride, box, cls in ((f3, 8, self.box[0], self.cls[0]), (self.p4(f3), 16, self.box[1],
                                                                                self.cls[1])):
                n, _, h, w = feat.shape
                ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
                grid = torch.stack([xs, ys]).to(feat.dtype).reshape(1, 2, h * w)
                b = box(feat).reshape(n, 4, h * w)
                xy = (grid + 0.5 + b[:, :2].tanh()) * stride
                wh = b[:, 2:].sigmoid() * 4 * stride
                outs.append(torch.cat([xy, wh, cls(feat).reshape(n, -1, h * w).sigmoid()], 1))
            return torch.cat(outs, 2)

    return TinyYolo()


@pytest.mark.slow
def test_pruned_trials_of_a_factory_detector_complete(tmp_path, make_sweep, local_agent):
    model = {"source": "python", "factory": f"{__name__}:tiny_yolo", "task": "detect", "input_size": SIZE}
    path = make_sweep(tmp_path, name="factory-det", trials=3, ratios=(0.25,),
                      extra={"model": model, "recovery": {"steps": 6, "batch": 16, "train_images": 64}})
    # its own workdir: nothing of this sweep is in the session's cache (``sweep_workdir``: det-s)
    sweep, space, cfg = prepare_sweep(path, workdir=tmp_path / "work", local_agents=local_agent)
    assert cfg.recovery.enabled and not hasattr(sweep.hooks.parts.model.module, "raw")
    sweep.run(space)
    trials = sweep.study.get_trials()
    errors = [t.user_attrs.get(RECORD_ATTR, {}).get("error") for t in trials]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3, errors
    pruned = [t.user_attrs[RECORD_ATTR] for t in trials if not t.user_attrs.get("baseline")]
    assert pruned, "the sweep sampled no pruned trial"
    for rec in pruned:
        assert rec["summary"]["params_kept"] < 0.9  # channels were really removed
        from edgetune.compress import Artifact

        manifest = Artifact.load(sweep.hooks.artifact_dir(rec["artifact_hash"])).manifest
        assert manifest["resolved"]["importance"] == "magnitude"  # auto: no loss for gradients
        result = manifest["recovery"]["result"]
        assert result["steps"] == result["steps_asked"] > 0 and result["stopped"] == "steps"


@pytest.mark.parametrize(("patch", "match"), [
    ({"space": {"sparsity": {"kind": "channel", "ratios": [0.0, 0.25], "importance": "taylor"}}, "recovery": {}},
     r"importance: taylor` needs the gradients of a supervised loss.*use `magnitude`"),
    ({"recovery": {"distill": False}}, r"offers no supervised loss.*`recovery.distill: true`"),
])
def test_settings_a_loss_free_model_cannot_honour_fail_before_any_trial(tmp_path, make_sweep, patch, match):
    from edgetune.assembly import assemble
    from edgetune.config import load_sweep_config
    from edgetune.errors import ConfigError

    model = {"source": "python", "factory": f"{__name__}:tiny_yolo", "task": "detect", "input_size": SIZE}
    path = make_sweep(tmp_path, name="contradiction", trials=3, extra={"model": model, **patch})
    with pytest.raises(ConfigError, match=match):
        assemble(load_sweep_config(path), train=False)
