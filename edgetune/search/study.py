"""The Optuna side of a sweep: create or resume the study, enqueue baselines, reconcile dead trials.

Optuna's storage is the source of truth of a sweep. A trial's full record (config, metrics, device
fingerprints, error) is kept in its user attrs, so MLflow can always be rebuilt from it. A trial left
RUNNING by a killed process is re-run under its own number on restart (``study.tell`` accepts any
RUNNING trial), so a resumed sweep ends with exactly ``search.trials`` trials and none is lost.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgetune._logging import get_logger
from edgetune.search.records import BASELINE_ATTR
from edgetune.search.samplers import make_sampler

log = get_logger(__name__)

__all__ = ["open_study", "enqueue_baselines", "enqueue_start_points", "stale_trials", "BASELINE_ATTR", "START_ATTR", "REFINE_ATTR"]

START_ATTR = "start_point"
REFINE_ATTR = "refined_from"  # a refined trial: the number of the trial whose config it fine-tunes alone


def open_study(*, storage: str, name: str, goals: Sequence[str], sampler: str, seed: int, n_startup: int = 10,
               keys: Sequence[str] = ()):
    """Create the study, or load it (same name and storage) to resume. ``keys``: the objectives' names
    (``map50_95``, ``latency_p50_ms@local``), stored so optuna-dashboard labels them instead of 0 / 1 / 2."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["maximize" if g == "max" else "minimize" for g in goals]
    study = optuna.create_study(storage=storage, study_name=name, directions=directions,
                                sampler=make_sampler(sampler, seed=seed, n_startup=n_startup), load_if_exists=True)
    if [d.name.lower() for d in study.directions] != directions:
        from edgetune.errors import ConfigError

        raise ConfigError(
            f"study {name!r} in {storage} was created with objectives {[d.name.lower() for d in study.directions]}, "
            f"but the config now has {directions}. Give the sweep a new `name:` or use another `search.storage`.")
    if keys and study.metric_names and list(study.metric_names) != list(keys):
        from edgetune.errors import ConfigError

        raise ConfigError(
            f"study {name!r} in {storage} was created with objectives {', '.join(study.metric_names)}, but the config "
            f"now has {', '.join(keys)}: its trials would be mixed into the old columns. Give the sweep a new `name:` "
            "or use another `search.storage`.")
    if keys and not study.metric_names:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, still so in 5.x
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(keys))
    return study


def enqueue_baselines(study, baselines: dict[str, dict[str, str]]) -> None:
    """Enqueue each named baseline's parameters once (skipped when the study already has it)."""
    have = {t.user_attrs.get(BASELINE_ATTR) for t in study.get_trials(deepcopy=False)}
    waiting = {t.user_attrs.get(BASELINE_ATTR) for t in study.get_trials(deepcopy=False)
               if t.state.name == "WAITING"}
    for name, params in baselines.items():
        if name not in have and name not in waiting:
            study.enqueue_trial(params, user_attrs={BASELINE_ATTR: name}, skip_if_exists=False)


def enqueue_start_points(study, points: dict[str, dict[str, str]], *, room: int) -> int:
    """Enqueue each named start point once (``start_points: uniform``), like the baselines, but at most
    ``room`` of those not enqueued yet, in order (never more than the trial budget runs: the rest would
    stay WAITING); returns how many were left out."""
    have = {t.user_attrs.get(START_ATTR) for t in study.get_trials(deepcopy=False)}
    new = [(name, params) for name, params in points.items() if name not in have]
    for name, params in new[:room]:
        study.enqueue_trial(params, user_attrs={START_ATTR: name}, skip_if_exists=False)
    return max(0, len(new) - room)


def stale_trials(study) -> list:
    """Trials left RUNNING (by a process that died): they are re-run on resume."""
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
