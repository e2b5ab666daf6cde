"""The ``recovery:`` section of a sweep file (pydantic, no torch: ``edgetune.config`` imports it).

```yaml
recovery:                 # fine-tuning after pruning, on by default whenever a config prunes
  steps: 220              # optimizer steps (the budget; 0 disables recovery)
  lr: 0.002               # peak learning rate (AdamW, short warmup, cosine decay)
  distill: true           # knowledge distillation from the uncompressed model
  distill_weight: 1.0
  progressive: 0.5        # channel pruning: the first half of the steps fades the cut channels out, then cuts
  batch: 32
  train_images: 2000      # at most this many images of the train split (0: all)
  seed: 0
  budget_s: null          # optional wall-clock guard, not a budget: the steps run unless it trips (then
                          # a warning, and the trials say so: `recovery_cut`)
  mode: per_config        # per_config: fine-tune each pruned config | elastic: train once, cut many
  refine: {points: 1, steps: 2400, lr: 5.0e-4, within: 0.08}   # after the search (off by default)
```

``mode: elastic`` (train once, search many): the model is fine-tuned ONCE per sweep with ``steps`` steps,
each step at a random width of every group the space may prune (channels ordered by importance, the
least important masked first) and, when the space searches ``input_size``, at each size in turn, with
distillation from the uncompressed model. Any config is then cut from those weights with a BatchNorm
re-estimation only: seconds per trial instead of minutes.

``refine`` (after the search, off unless ``points`` > 0): the elastic weights rank configs cheaply but
keep pruned points several mAP points below what a fine-tune of that one config reaches. So the sweep
takes the ``points`` fastest channel-pruned trials whose accuracy is within ``within`` of fp32 (one per
pruned structure), fine-tunes each config alone (``mode: per_config``, ``steps`` steps at ``lr``,
distillation as set above) and measures it again as a new trial (``refined from #N``). Measured on
the builtin yolo11n: docs/models.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from edgetune._strict import Strict

__all__ = ["RecoverySpec", "RefineSpec", "DEFAULT_STEPS"]

# ~110 s on a 2-core x86 machine for the builtin det-s at 25% channels (measured: docs/compression.md)
DEFAULT_STEPS = 220


class RefineSpec(Strict):
    """``recovery.refine``: fine-tune the most promising pruned trials alone after the search (see the module doc)."""

    points: int = Field(default=0, ge=0, le=100, description="how many pruned trials to refine (0: off)")
    steps: int = Field(default=2400, ge=1, le=1_000_000)
    lr: float = Field(default=5e-4, gt=0.0, le=1.0)
    within: float = Field(default=0.08, ge=0.0, le=1.0, description="a candidate's accuracy may be this far "
                          "below fp32's (the metric's units: 0.08 = 8 mAP points)")


class RecoverySpec(Strict):
    steps: int = Field(default=DEFAULT_STEPS, ge=0, le=1_000_000)
    lr: float = Field(default=2e-3, gt=0.0, le=1.0)
    distill: bool = True
    distill_weight: float = Field(default=1.0, ge=0.0)
    feature_weight: float = Field(default=0.0, ge=0.0, description="feature distillation on the output layers' inputs")
    gt_weight: float = Field(default=1.0, ge=0.0, description="weight of the ground-truth detection loss")
    ema: float = Field(default=0.0, ge=0.0, lt=1.0, description="weight EMA decay of the recovered model (0: off)")
    batch: int = Field(default=32, ge=1, le=1024)
    progressive: float = Field(default=0.5, ge=0.0, lt=1.0, description="channel pruning: the fraction of the "
                               "steps during which the channels to be cut fade to zero BEFORE the cut (0: cut first)")
    crop: float = Field(default=1.0, gt=0.0, le=1.0, description="random crops of this fraction of the input "
                        "size for the first 85% of the steps (cheaper steps), full images after")
    train_images: int = Field(default=2000, ge=0)
    bf16: Literal["auto", "on", "off"] = Field(
        default="auto", description="bfloat16 autocast for the forward passes: 'auto' = on CPUs with native "
        "bf16 (AVX512-BF16 / AMX), where it makes a step ~1.3x faster")
    seed: int = 0
    budget_s: float | None = Field(default=None, gt=0.0, description="a wall-clock guard on the fine-tuning "
                                   "(seconds), not a budget: `steps` always run unless it trips; when it does, a "
                                   "warning says so and the trials from those weights carry `recovery_cut`")
    mode: Literal["per_config", "elastic"] = Field(
        default="per_config", description="per_config: fine-tune every pruned config; elastic: train the model "
        "once at random widths (and sizes), then cut each config from it with BatchNorm re-estimation only")
    refine: RefineSpec = Field(default_factory=RefineSpec)

    def refined(self) -> RecoverySpec:
        """The recovery of a refined trial: this one, per config, with ``refine``'s steps and lr."""
        return self.model_copy(update={"mode": "per_config", "steps": self.refine.steps, "lr": self.refine.lr,
                                       "refine": RefineSpec()})

    @property
    def enabled(self) -> bool:
        return self.steps > 0

    def identity(self) -> dict:
        """What changes the recovered weights (part of the artifact hash; the default mode is left out, so
        the hashes of artifacts made before ``mode`` existed stay the same)."""
        d = self.model_dump(mode="json")
        if d["mode"] == "per_config":
            d.pop("mode")
        d.pop("refine")  # what happens after the search: no part of any artifact's weights
        return d
