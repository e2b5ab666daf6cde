"""Wiring a sweep config to real parts: the device fleet, the assembled sweep (data, model, space, see
``edgetune.assembly``), local hooks, Optuna, MLflow."""

from __future__ import annotations

from pathlib import Path

from edgetune._logging import get_logger
from edgetune.objectives import objective_keys
from edgetune.search.hooks import LocalHooks
from edgetune.search.sweep import Sweep

log = get_logger(__name__)

__all__ = ["prepare_sweep", "load_front", "with_devices", "agents_needed", "sweep_fingerprint"]


def _load_cfg(config_path: Path):
    from edgetune.config import load_sweep_config

    return load_sweep_config(config_path), Path(config_path).read_text()


def agents_needed(cfg) -> int:
    """Agents that serve the config's ``devices:``: one per device and one per member of its ``pool``."""
    return sum(1 + len(d.pool) for d in cfg.devices)


def with_devices(cfg, specs):
    """The config with its ``devices:`` replaced, entry by entry, by ``specs`` (names are kept); a device with
    a ``pool`` takes one spec more per pool member (their URLs become its pool)."""
    if len(specs) < agents_needed(cfg):
        raise ValueError("fewer device specs than config devices (pools included)")
    devices, it = [], iter(specs)
    for d in cfg.devices:
        first = next(it)
        pool = tuple(next(it).url for _ in d.pool)
        devices.append(first.model_copy(update={"name": d.name, "pool": pool}))
    return cfg.model_copy(update={"devices": devices})


def isolate_for_overlap(cfg, agents) -> tuple[int, ...] | None:
    """With ``search.overlap: on``, pin this process (and torch's threads) to the cores the local ``agents``
    do not measure on (``LocalAgents.isolate_controller``); the cores kept, or None (overlap off, or no core
    left)."""
    if cfg.search.overlap != "on" or (kept := agents.isolate_controller()) is None:
        return None
    import torch

    torch.set_num_threads(len(kept))
    return kept


def prepare_sweep(config_path: Path, *, workdir: Path, tokens: dict[str, str] | None = None, local_agents=None,
                  force_resume: bool = False):
    """Validate everything before any expensive work, then build the Sweep (study + tracker) and space.
    A study resumed with another config is refused (``force_resume``: continued anyway)."""
    from edgetune.assembly import assemble
    from edgetune.config import check_paths
    from edgetune.search._fleet import SweepFleet, bundle_dir
    from edgetune.search._spec import require_objectives

    cfg, text = _load_cfg(config_path)
    require_objectives(cfg)
    check_paths(cfg, config_path=config_path)  # before any device is contacted
    if local_agents is not None:  # --local: the config's devices are served by agents started here
        cfg = with_devices(cfg, local_agents.specs())

    fleet = SweepFleet.from_specs(cfg.devices, tokens=tokens, bundle_dir=bundle_dir(workdir))
    fleet.check_health()  # unreachable agents fail here, naming the device and URL
    from edgetune.search.hooks import measured_devices

    fleet.check_runtimes(cfg.space.runtime, measured_devices(cfg))  # before the model is loaded
    parts = assemble(cfg, kinds=fleet.kinds(), workdir=Path(workdir))  # the kinds the agents report: shipped to remote workers as they are
    fleet.upload_dataset(parts.splits.val, head=parts.model.head,
                         input_sizes=[parts.model.input_size, *parts.space.input_size_choices])
    hooks = LocalHooks(parts, fleet=fleet, workdir=Path(workdir))
    return (Sweep(cfg, config_text=text, hooks=hooks, workdir=Path(workdir), config_path=Path(config_path),
                  fingerprint=sweep_fingerprint(cfg, parts, fleet.dataset_hashes), force_resume=force_resume),
            parts.space, cfg)


def sweep_fingerprint(cfg, parts, dataset_hashes: dict[int, str]) -> dict[str, dict]:
    """The config parts a sweep's trials depend on (``search.study.config_fingerprint``): the resolved search
    space, objectives, constraints, the model's weights (sha256) and input size, and the validation data
    (the sha256 of its bundle at the model's size) with the calibration / fine-tuning split settings."""
    from edgetune.search.study import config_fingerprint

    keys, goals = objective_keys(cfg)
    if cfg.search.paired_timing:  # paired latencies are on another scale than a trial's own timing
        goals = [f"{g}, paired with fp32" if k.startswith(("latency_p50_ms@", "latency_p90_ms@")) else g
                 for k, g in zip(keys, goals, strict=True)]
    m, d = parts.model, cfg.data
    model = {"weights sha256": str(m.source_hash)[:16], "input": f"{m.input_size} px", "task": m.task}
    val = dataset_hashes.get(int(m.input_size)) or next(iter(dataset_hashes.values()), "")
    data = {"validation sha256": str(val)[:16], "val_images": len(parts.splits.val), "calib_images": d.calib_images,
            "train_size": d.train_size, "seed": d.seed}
    return config_fingerprint(
        space=parts.space, objectives=keys, goals=goals, constraints=list(cfg.constraints), model=model, data=data,
        model_label=cfg.model.name or cfg.model.factory or cfg.model.path or cfg.model.weights or cfg.model.source,
        data_label=f"{d.source}:{d.name or d.path or d.annotations or ''}")


def load_front(config_path: Path):
    """(DataFrame of every trial, objective keys, goals, cfg) from the sweep's storage; no devices needed."""
    from edgetune.search.front import front_ranks
    from edgetune.search.records import trials_frame
    from edgetune.search.side_by_side import SBS_ATTR
    from edgetune.search.tracking import Tracker

    cfg, _ = _load_cfg(config_path)
    keys, goals = objective_keys(cfg)
    import optuna

    from edgetune._paths import missing_sqlite_file
    from edgetune.errors import ConfigError

    if (gone := missing_sqlite_file(cfg.search.storage)) is not None:  # opening it would create an empty one
        raise ConfigError(f"`search.storage` {cfg.search.storage}: there is no {gone} here, so no sweep to show. Run "
                          f"`edgetune search {config_path}` first, or run this from the directory the sweep ran in "
                          "(relative sqlite paths).")
    try:
        study = optuna.load_study(study_name=cfg.name, storage=cfg.search.storage)
    except KeyError as exc:
        raise ConfigError(f"no sweep named '{cfg.name}' in {cfg.search.storage}: run `edgetune search "
                          f"{config_path}` first (or fix `name:` / `search.storage`).") from exc
    trials = study.get_trials(deepcopy=False)
    run_ids, review = {}, None
    try:
        tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.tracking.experiment or cfg.name, sweep=cfg.name,
                          readonly=True)
        run_ids = {n: r.info.run_id for n, r in tracker.child_runs().items()}
        review = tracker.review_url()
    except Exception as exc:  # the front is in Optuna's storage; MLflow only adds run ids
        log.warning("MLflow store %s not readable (%s); run ids omitted", cfg.tracking.uri, exc)
    df = trials_frame(trials, keys, ranks=front_ranks(trials, keys, goals), run_ids=run_ids,
                      side_by_side=study.user_attrs.get(SBS_ATTR))
    df.attrs["review_url"] = review  # the MLflow view of the front (None: no MLflow store)
    return df, keys, goals, cfg
