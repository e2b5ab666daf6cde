"""Recovery after pruning, by behaviour on a handful of steps: the student moves towards its teacher, BN
statistics are re-estimated after a cut.

What recovery is worth in accuracy (fp32 vs 25% channels + the default recovery vs 50%) is a result, not
a test: ``benchmarks/bench_compress.py`` measures it and docs/compression.md shows the table. Masks that
survive fine-tuning and the parity of the exported, recovered model are checked in test_prune.py (the
``unstructured50`` and ``two_four`` artifacts are recovered for 4 steps and exported with the parity check).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

SIZE = 128  # the recovery code is size-agnostic; a quarter of det-s's pixels keeps each step cheap


@pytest.fixture(scope="module")
def cut_25(det_s, channel_25):
    """det-s with every prunable group cut by 25% (magnitude, no fade, no BN re-estimation)."""
    from edgetune.compress._importance import make_importance
    from edgetune.compress._prune import channel_drops, cut_channels
    from edgetune.compress._schedule import schedule
    from edgetune.spaces._discover import dependency_graph, discover_groups, discover_layers

    student = copy.deepcopy(det_s.module).eval()
    dg = dependency_graph(student, det_s.input_size)
    layers = discover_layers(student, det_s.input_size, dg=dg)
    plan = schedule(channel_25, discover_groups(student, det_s.input_size, layers, dg=dg), layers)
    cut_channels(student, dg, channel_drops(student, dg, plan, make_importance("magnitude")))
    return student


def held_out_batch(ds, n: int = 8):
    import torch

    from edgetune.models import detection_arrays

    images, _, _ = detection_arrays(ds, size=SIZE, limit=n)
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def distill_gap(student, teacher, x) -> float:
    """The dense distillation loss of ``student`` against ``teacher`` on a fixed batch (eval mode)."""
    import torch

    from edgetune.models.builtin.task import BuiltinDetectAdapter

    student.eval()
    with torch.no_grad():
        return float(BuiltinDetectAdapter().distill(student.raw(x), teacher.raw(x), (x,)))


def test_recovery_moves_the_pruned_student_towards_its_teacher(cut_25, det_s, train_split, shapes_val):
    from edgetune.compress import RecoverySpec
    from edgetune.compress._recover import recover

    student, teacher = copy.deepcopy(cut_25), det_s.module
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x = held_out_batch(shapes_val)
    before = distill_gap(student, teacher, x)
    losses: list[float] = []
    spec = RecoverySpec(steps=12, batch=8, train_images=64, lr=2e-3)
    result = recover(student, teacher, train_split, spec, adapter=det_s.adapter, input_size=SIZE,
                     on_step=lambda s, v: losses.append(v))
    after = distill_gap(student, teacher, x)
    assert result["steps"] == result["steps_asked"] == 12 and result["stopped"] == "steps"
    assert len(losses) == 12 and all(np.isfinite(losses))
    assert after < 0.8 * before, (before, after)  # on images the fine-tuning never saw
    import torch

    after_state = teacher.state_dict()
    assert all(torch.equal(v, after_state[k]) for k, v in teacher_before.items())  # read, not trained
    assert teacher.training is False
    assert not student.training


def test_bn_statistics_are_re_estimated_after_a_cut(cut_25, det_s, train_split, shapes_val):
    import torch

    from edgetune.compress._prune import recalibrate_bn

    student = copy.deepcopy(cut_25)
    x = held_out_batch(shapes_val)
    stale = distill_gap(student, det_s.module, x)
    first_bn = next(m for m in student.modules() if isinstance(m, torch.nn.BatchNorm2d))
    seen: list = []
    hook = first_bn.register_forward_pre_hook(lambda m, i: seen.append(i[0].detach()))
    batches = [held_out_batch(train_split, 8)[k : k + 4] for k in (0, 4)]
    assert recalibrate_bn(student, batches) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in student.modules())
    hook.remove()
    feats = torch.cat(seen)
    # a cumulative average over the batches: the per-batch means, averaged
    want = torch.stack([f.mean((0, 2, 3)) for f in seen]).mean(0)
    assert torch.allclose(first_bn.running_mean, want, atol=1e-5)
    assert feats.shape[1] == first_bn.num_features and not student.training
    assert first_bn.momentum == det_s.module.get_submodule("stem.bn").momentum  # restored after
    assert distill_gap(student, det_s.module, x) < stale  # fresh statistics fit the cut network better
