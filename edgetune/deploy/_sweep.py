"""A finished sweep, read back for deployment: its config, every trial's record, the front, its devices.

A sweep is named by the path of its YAML (the file says where its Optuna storage, MLflow store and
devices are). The records come from Optuna's storage (the sweep's source of truth); MLflow only adds the
child run ids. Nothing is created or changed: a sweep that is not in the storage is an error. A target
device (``--to``) comes from the sweep's ``devices:`` or from a fleet file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgetune._logging import get_logger
from edgetune.errors import ConfigError, DeployError
from edgetune.search.records import TrialRecord

log = get_logger(__name__)

__all__ = ["TrialPoint", "SweepRecords", "load_sweep", "resolve_sweep_path", "resolve_device", "agent_client"]


@dataclass(frozen=True)
class TrialPoint:
    """One trial of the sweep: ``record`` is its full Optuna record (config, values, sizes, fingerprints)."""

    number: int
    state: str
    record: TrialRecord = field(repr=False)
    baseline: str | None = None
    pareto: bool = False
    run_id: str | None = None

    @property
    def values(self) -> dict[str, float]:
        return dict(self.record.values)

    @property
    def artifact_hash(self) -> str | None:
        return self.record.artifact_hash

    @property
    def label(self) -> str:
        return self.record.label or self.baseline or f"trial {self.number}"

    @property
    def complete(self) -> bool:
        return self.state == "COMPLETE" and bool(self.values)


@dataclass
class SweepRecords:
    cfg: object  # SweepConfig
    config_path: Path
    keys: list[str]
    goals: list[str]
    points: dict[int, TrialPoint]

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def device_names(self) -> list[str]:
        return [d.name for d in self.cfg.devices]

    def trial(self, number: int) -> TrialPoint:
        if number not in self.points:
            raise DeployError(f"sweep '{self.name}' has no trial {number}; its trials are "
                              f"{', '.join(str(n) for n in sorted(self.points)) or 'none'}. `edgetune front --config "
                              f"{self.config_path} --all` lists them.")
        point = self.points[number]
        if not point.complete:
            why = point.record.error or f"state {point.state}"
            raise DeployError(f"trial {number} of sweep '{self.name}' did not complete ({why}); pick a completed "
                              "trial (`edgetune front --all`).")
        return point

    def complete(self) -> list[TrialPoint]:
        return [p for p in self.points.values() if p.complete]

    def baseline_values(self) -> dict[str, float] | None:
        return next((p.values for p in self.complete() if p.baseline == "fp32"), None)


def resolve_sweep_path(sweep: str | Path) -> Path:
    """``sweep`` is a path to the sweep YAML; a bare name is looked up as ``NAME.yaml`` and
    ``configs/NAME.yaml`` in the current directory."""
    path = Path(sweep)
    if path.is_file():
        return path
    for cand in (Path(f"{sweep}.yaml"), Path("configs") / f"{sweep}.yaml"):
        if cand.is_file():
            return cand
    raise ConfigError(f"--sweep {str(sweep)!r}: no such sweep file (also tried {sweep}.yaml and configs/{sweep}.yaml). "
                      "Pass the path of the sweep's YAML (the one given to `edgetune search`).")


def load_sweep(sweep: str | Path) -> SweepRecords:
    """Read a sweep's config and trial records (no device, no model needed)."""
    import optuna

    from edgetune.config import load_sweep_config
    from edgetune.objectives import objective_keys
    from edgetune.search.front import front_ranks
    from edgetune.search.study import BASELINE_ATTR

    path = resolve_sweep_path(sweep)
    cfg = load_sweep_config(path)
    keys, goals = objective_keys(cfg)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from edgetune._paths import missing_sqlite_file

    if (gone := missing_sqlite_file(cfg.search.storage)) is not None:  # opening it would create an empty one
        raise DeployError(f"sweep '{cfg.name}': its storage {cfg.search.storage} does not exist here ({gone}). Run "
                          f"`edgetune search {path}` first, or run this from the directory the sweep ran in.")
    try:
        study = optuna.load_study(study_name=cfg.name, storage=cfg.search.storage)
    except KeyError:
        names = optuna.study.get_all_study_names(storage=cfg.search.storage)
        raise DeployError(f"sweep '{cfg.name}' is not in {cfg.search.storage} (studies there: "
                          f"{', '.join(names) or 'none'}). Run `edgetune search {path}` first, or run this from the "
                          "directory the sweep ran in (relative sqlite paths).") from None
    trials = study.get_trials(deepcopy=False)
    ranks = front_ranks(trials, keys, goals)
    run_ids = _run_ids(cfg)
    points = {t.number: TrialPoint(number=t.number, state=t.state.name, record=TrialRecord.of(t),
                                   baseline=t.user_attrs.get(BASELINE_ATTR), pareto=ranks.get(t.number) == 0,
                                   run_id=run_ids.get(t.number))
              for t in trials}
    return SweepRecords(cfg=cfg, config_path=path, keys=keys, goals=goals, points=points)


def _run_ids(cfg) -> dict[int, str]:
    from edgetune.search.tracking import Tracker

    try:
        tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.tracking.experiment or cfg.name, sweep=cfg.name,
                          readonly=True)
        return {n: r.info.run_id for n, r in tracker.child_runs().items()}
    except Exception as exc:  # the records are in Optuna's storage; MLflow only adds run ids
        log.warning("MLflow store %s not readable (%s); trial run ids unknown", cfg.tracking.uri, exc)
        return {}


def resolve_device(name: str, *, cfg=None, fleet: str | Path | None = None):
    """The DeviceSpec named ``name``: from the fleet file when one is given, else from the sweep config."""
    import yaml
    from pydantic import ValidationError

    from edgetune.device_agents.fleet import FleetSpec
    from edgetune.errors import format_validation_error

    sources: list[tuple[str, list]] = []
    if fleet is not None:
        path = Path(fleet)
        raw = yaml.safe_load(path.read_text()) if path.is_file() else None
        if not isinstance(raw, dict) or "devices" not in raw:
            raise ConfigError(f"--fleet '{path}' must be a YAML file with a `devices:` list "
                              "(see configs/fleet.example.yaml).")
        try:
            sources.append((f"fleet file {path}", list(FleetSpec.model_validate({"devices": raw["devices"]}).devices)))
        except ValidationError as exc:
            raise ConfigError(f"--fleet '{path}': {format_validation_error(exc, model=FleetSpec)}") from exc
    if cfg is not None:
        sources.append((f"sweep '{cfg.name}'", list(cfg.devices)))
    if not sources:
        raise ConfigError(f"--to {name}: say where the device is defined: --sweep CONFIG (its `devices:`) or --fleet FILE.")
    for _, specs in sources:
        for spec in specs:
            if spec.name == name:
                return spec
    listed = "; ".join(f"{where}: {', '.join(s.name for s in specs) or 'none'}" for where, specs in sources)
    raise ConfigError(f"device {name!r} is not defined ({listed}). Use one of these names or add the device.")


def agent_client(spec, *, measure_timeout: float = 1800.0):
    """An AgentClient for ``spec`` (token from its ``token_file`` / ``token_env``)."""
    from edgetune.device_agents.client import AgentClient

    return AgentClient(spec.url, token=spec.resolve_token(), name=spec.name, measure_timeout=measure_timeout)
