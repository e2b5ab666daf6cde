"""Wiring a sweep config to real parts: data, model, space, compression, the device fleet, Optuna, MLflow."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlparse

from edgetune._logging import get_logger
from edgetune.search.runner import SweepHooks, TrialPlan
from edgetune.search.sweep import Sweep, objective_keys

log = get_logger(__name__)

__all__ = ["prepare_sweep", "load_front", "LocalHooks"]


def _is_local(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host in ("localhost", "127.0.0.1", "::1", "0.0.0.0") or host.startswith("127."):
        return True
    try:
        return host in (socket.gethostname(), socket.getfqdn())
    except OSError:
        return False


class LocalHooks(SweepHooks):
    """Compression in this process (content-addressed cache in ``workdir/artifacts``), measurement through
    the fleet's agents (each device leased for one measurement at a time)."""

    def __init__(self, *, cfg, loaded, splits, space, fleet, workdir: Path):
        self.cfg, self.loaded, self.splits, self.space, self.fleet = cfg, loaded, splits, space, fleet
        self.artifacts = Path(workdir) / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        keys, _ = objective_keys(cfg)
        names = [d.name for d in cfg.devices]
        wanted = {k.split("@", 1)[1] for k in keys if "@" in k}
        for c in cfg.constraints:
            wanted.update(n for n in names if f"@{n}" in c)
        if cfg.constraints and names and any("@" not in c for c in cfg.constraints):
            wanted.add(names[0])
        self._devices = [n for n in names if n in wanted]

    def devices_for_objectives(self) -> list[str]:
        return self._devices

    def overlap_ok(self) -> bool:
        """Overlap compression with measurement only when no measured device runs on this host."""
        return not any(_is_local(d.url) for d in self.cfg.devices if d.name in self._devices)

    def compress(self, plan: TrialPlan):
        from edgetune.compress import compress

        return compress(self.loaded, plan.config, calib=self.splits.calib, workdir=self.artifacts,
                        train=self.splits.train, recovery=self.cfg.recovery, space=self.space)

    def measure(self, artifact, device: str):
        return self.fleet.measure(device, artifact, latency_runs=self.cfg.search.latency_runs,
                                  warmup=self.cfg.search.latency_warmup, timeout_s=self.cfg.search.measure_timeout_s)

    def compare_latency(self, onnx_paths: list[str], device: str) -> dict[str, dict]:
        return self.fleet.compare(device, onnx_paths, runs=self.cfg.search.side_by_side_runs,
                                  warmup=self.cfg.search.latency_warmup, timeout_s=self.cfg.search.measure_timeout_s)

    def artifact_dir(self, artifact_hash: str) -> Path | None:
        d = self.artifacts / str(artifact_hash)
        return d if d.is_dir() else None


def _load_cfg(config_path: Path):
    from edgetune.config import load_sweep_config

    return load_sweep_config(config_path), Path(config_path).read_text()


def with_devices(cfg, specs):
    """The config with its ``devices:`` replaced, entry by entry, by ``specs`` (names are kept)."""
    if len(specs) < len(cfg.devices):
        raise ValueError("fewer device specs than config devices")
    devices = [s.model_copy(update={"name": d.name}) for d, s in zip(cfg.devices, specs, strict=False)]
    return cfg.model_copy(update={"devices": devices})


def prepare_sweep(config_path: Path, *, workdir: Path, tokens: dict[str, str] | None = None, local_agents=None):
    """Validate everything before any expensive work, then build the Sweep (study + tracker) and space."""
    from edgetune.data import load_data
    from edgetune.models import load_model
    from edgetune.search._fleet import SweepFleet
    from edgetune.search._spec import require_objectives
    from edgetune.spaces import build_space

    cfg, text = _load_cfg(config_path)
    require_objectives(cfg)
    if local_agents is not None:  # --local: the config's devices are served by agents started here
        cfg = with_devices(cfg, local_agents.specs())

    fleet = SweepFleet.from_specs(cfg.devices, tokens=tokens)
    fleet.check_health()  # unreachable agents fail here, naming the device and URL
    kinds = fleet.kinds()
    splits = load_data(cfg.data, need_train=cfg.recovery.steps > 0)
    loaded = load_model(cfg.model, class_names=splits.val.class_names, category_ids=splits.val.category_ids)
    space = build_space(loaded, cfg.space, targets=kinds)
    fleet.upload_dataset(splits.val, head=loaded.head, input_size=loaded.input_size)
    hooks = LocalHooks(cfg=cfg, loaded=loaded, splits=splits, space=space, fleet=fleet, workdir=Path(workdir))
    return Sweep(cfg, config_text=text, hooks=hooks, workdir=Path(workdir), config_path=Path(config_path)), space, cfg


def load_front(config_path: Path):
    """(DataFrame of every trial, objective keys, goals, cfg) from the sweep's storage; no devices needed."""
    from edgetune.search.front import front_ranks
    from edgetune.search.records import trials_frame
    from edgetune.search.side_by_side import SBS_ATTR
    from edgetune.search.tracking import Tracker

    cfg, _ = _load_cfg(config_path)
    keys, goals = objective_keys(cfg)
    import optuna

    from edgetune.errors import ConfigError

    try:
        study = optuna.load_study(study_name=cfg.name, storage=cfg.search.storage)
    except KeyError as exc:
        raise ConfigError(f"no sweep named '{cfg.name}' in {cfg.search.storage}: run `edgetune search "
                          f"{config_path}` first (or fix `name:` / `search.storage`).") from exc
    trials = study.get_trials(deepcopy=False)
    run_ids = {}
    try:
        tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.tracking.experiment or cfg.name, sweep=cfg.name,
                          readonly=True)
        run_ids = {n: r.info.run_id for n, r in tracker.child_runs().items()}
    except Exception as exc:  # the front is in Optuna's storage; MLflow only adds run ids
        log.warning("MLflow store %s not readable (%s); run ids omitted", cfg.tracking.uri, exc)
    df = trials_frame(trials, keys, ranks=front_ranks(trials, keys, goals), run_ids=run_ids,
                      side_by_side=study.user_attrs.get(SBS_ATTR))
    return df, keys, goals, cfg
