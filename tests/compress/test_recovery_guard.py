"""Recovery runs its configured steps; ``recovery.budget_s`` only guards, and says loudly when it cut
training short (a warning, and the result every trial from those weights carries). Checked by what the
cap does, never by the seconds anything took."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

from edgetune.compress import RecoverySpec


def test_a_recovery_cut_by_budget_s_warns_and_says_how_many_steps_ran(det_s, train_split, caplog):
    from edgetune.compress._recover import recover

    spec = RecoverySpec(steps=10_000, batch=2, train_images=16, budget_s=0.5)
    with caplog.at_level(logging.WARNING, logger="edgetune"):
        result = recover(copy.deepcopy(det_s.module), det_s.module, train_split, spec, adapter=det_s.adapter,
                         input_size=det_s.input_size)
    assert result["stopped"] == "budget_s" and result["steps"] < result["steps_asked"] == 10_000
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("CUT SHORT by `recovery.budget_s`" in m and f"{result['steps']} of 10000 steps" in m for m in warned)


def test_elastic_weights_cut_by_budget_s_flag_every_config_cut_from_them(tmp_path, caplog):
    """A cached elastic fine-tune that the guard cut short: served with its result, and a warning, so each
    config cut from it carries the cut (``recovery_cut`` in its record)."""
    import torch

    from edgetune.compress._elastic import ensure_elastic

    student = torch.nn.Linear(4, 2)
    entry = tmp_path / "elastic" / "k"
    entry.mkdir(parents=True)
    torch.save(torch.nn.Linear(4, 2).state_dict(), entry / "weights.pt")
    rec = {"steps": 250, "steps_asked": 400, "stopped": "budget_s", "seconds": 300.0, "loss": 1.0}
    (entry / "elastic.json").write_text(json.dumps({"orders": {"g": [1, 0]}, "recovery": rec}))
    timings: dict = {}
    with caplog.at_level(logging.WARNING, logger="edgetune"):
        orders, trained = ensure_elastic(student, None, None, choices={}, sizes=(256,), importance="magnitude",
                                         imp=None, train=None, recovery=RecoverySpec(), adapter=None,
                                         workdir=tmp_path, key="k", timings=timings)
    assert orders == {"g": [1, 0]} and trained == rec and timings["elastic_from_cache"]
    assert any("250 of 400 steps" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_the_demo_runs_its_recovery_steps_whatever_the_load():
    """The demo's elastic fine-tune was capped at 5 minutes, so a loaded box trained fewer steps (0.70
    instead of 0.74 mAP50-95 on the 12%-pruned points): its ``budget_s`` is a guard now, far past the time
    its 400 steps take."""
    from edgetune.config import load_sweep_config

    cfg = load_sweep_config(Path(__file__).parents[2] / "configs" / "demo.yaml")
    assert cfg.recovery.steps == 400
    assert cfg.recovery.budget_s is None or cfg.recovery.budget_s >= 1800
