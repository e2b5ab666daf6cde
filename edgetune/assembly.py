"""One way to assemble a sweep's parts from its config: data splits -> loaded model -> search space.

Every command goes through :func:`assemble`: ``edgetune search`` (on the driver and, with the same
resolved target kinds, on every Ray worker), ``edgetune space``, ``edgetune compress`` and deploy's
rebuild. So the same config and kinds always give the same data, model and space, and the rules
"does this sweep need a train split?" (asked of compression) and "which device kinds are targeted?"
live here once. Imports nothing heavy at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgetune.errors import ConfigError

__all__ = ["SweepParts", "assemble", "declared_kinds"]


@dataclass
class SweepParts:
    """What a sweep config assembles to. ``kinds``: the target device kinds the space was built for."""

    cfg: Any  # SweepConfig
    splits: Any  # data.Splits
    model: Any  # models.LoadedModel
    space: Any  # spaces.SearchSpace
    kinds: list[str] | None
    sensitivity: Any = None  # compress.Sensitivity of the unrestricted space, when ``max_drop`` shaped it

    def with_train(self) -> SweepParts:
        """These parts with the train split loaded (same val / calib splits: they are deterministic)."""
        if self.splits.train is not None:
            return self
        from edgetune.data import load_data

        return SweepParts(self.cfg, load_data(self.cfg.data, need_train=True), self.model, self.space, self.kinds,
                          self.sensitivity)


def declared_kinds(cfg) -> list[str] | None:
    """The device kinds the config's ``devices:`` declare (None: none declared, ``space.targets`` apply)."""
    return [d.kind for d in cfg.devices if d.kind] or None


def assemble(cfg, *, kinds: list[str] | None = None, train: bool | None = None,
             val_images: int | None = None, workdir: Path | None = None) -> SweepParts:
    """Load the data and the model of ``cfg`` and build its search space.

    ``kinds``: the resolved target device kinds (on the driver: what the agents report; shipped as they
    are to remote workers), else those the config declares, else ``space.targets``. ``train``: load the
    train split (default: when compression needs one for this sweep, see
    :func:`edgetune.compress.needs_train`). ``val_images``: read at most this many validation images
    (``edgetune space`` needs only the class names). ``workdir``: where the sensitivity pass of
    ``space.sparsity.max_drop`` is cached (default ``.edgetune``; a sweep and its Ray workers share it).
    """
    from edgetune.compress import needs_train
    from edgetune.data import load_data
    from edgetune.models import load_model
    from edgetune.spaces import build_space

    restrict = cfg.space.sparsity.max_drop is not None and (cfg.space.sparsity.prunes_channels
                                                             or cfg.space.scales is not None)
    if restrict and val_images is not None:
        val_images = max(val_images, cfg.space.sparsity.sensitivity_images)
    data = cfg.data if val_images is None else cfg.data.model_copy(
        update={"val_images": min(cfg.data.val_images, val_images)})
    splits = load_data(data, need_train=restrict or (needs_train(cfg.recovery) if train is None else train))
    model = load_model(cfg.model, class_names=splits.val.class_names, category_ids=splits.val.category_ids)
    kinds = list(kinds) if kinds else declared_kinds(cfg)
    space = build_space(model, cfg.space, targets=kinds)
    _check_model_settings(cfg, model, space)
    sens = None
    if restrict:
        from edgetune.compress import restrict_space

        sens = _sensitivity(cfg, model, space, splits, workdir)
        space = restrict_space(space, sens, cfg.space.sparsity.max_drop)
    return SweepParts(cfg, splits, model, space, kinds, sens)


def _sensitivity(cfg, model, space, splits, workdir: Path | None):
    """What cutting each dimension alone costs (measured once, then read from ``workdir``'s cache)."""
    from edgetune._logging import get_logger
    from edgetune.compress import measure_sensitivity

    log = get_logger(__name__)
    spec = cfg.space.sparsity

    def progress(done: int, total: int, cut) -> None:
        log.info("sensitivity %d/%d: %s cut %g -> %.4f (drop %.4f)", done, total, cut.dimension, cut.ratio,
                 cut.metric, cut.drop)

    return measure_sensitivity(model, space, train=splits.train, val=splits.val, images=spec.sensitivity_images,
                               workdir=workdir or Path(".edgetune"), on_cut=progress)


def _check_model_settings(cfg, model, space) -> None:
    """Settings that contradict what this model offers, before any trial runs."""
    from edgetune.compress import needs_gradients

    adapter = model.adapter
    if adapter is None or adapter.has_loss:
        return
    choices = [c for cs in space.sparsity_choices.values() for c in cs]
    importance = cfg.space.sparsity.importance
    if any(c.startswith("channel") for c in choices) and importance != "auto" and needs_gradients(importance):
        raise ConfigError(f"`space.sparsity.importance: {importance}` needs the gradients of a supervised loss, "
                          f"which model '{model.name}' ({model.task}) does not offer; use `magnitude` (or `auto`, "
                          "which picks it for such models).")
    if cfg.recovery.enabled and not cfg.recovery.distill and any(c != "dense" for c in choices):
        raise ConfigError(f"model '{model.name}' ({model.task}) offers no supervised loss, so recovery after pruning "
                          "can only distill the uncompressed model: set `recovery.distill: true` (the default) or "
                          "`recovery.steps: 0`.")
