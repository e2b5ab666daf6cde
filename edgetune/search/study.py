"""The Optuna side of a sweep: create or resume the study, enqueue baselines and retries, refuse a
changed config.

Optuna's storage is the source of truth of a sweep. A trial's full record (config, metrics, device
fingerprints, error) is kept in its user attrs, so MLflow can always be rebuilt from it. A trial left
RUNNING by a killed process is re-run under its own number on restart (``study.tell`` accepts any
RUNNING trial; ``search._shared`` tells such a trial from one another live controller runs), so a resumed
sweep ends with exactly ``search.trials`` trials and none is lost, plus one retry of each failed trial
(``search.retry_failed``).

Resuming samples new points: the sampler's seed is derived from ``search.seed`` and how many times the
study was opened before (the first run uses ``search.seed`` itself), so a sweep killed and resumed does
not draw its first points again. The study keeps a fingerprint of the config parts its trials depend on
(space, objectives, constraints, model, data); a resume whose fingerprint differs is refused, naming
what changed (``--force-resume`` continues anyway).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from edgetune._logging import get_logger
from edgetune.search.records import BASELINE_ATTR
from edgetune.search.samplers import make_sampler

log = get_logger(__name__)

__all__ = ["open_study", "enqueue_baselines", "enqueue_start_points", "enqueue_retries", "stale_trials",
           "config_fingerprint", "check_fingerprint", "resume_seed", "BASELINE_ATTR", "START_ATTR", "REFINE_ATTR",
           "RETRY_ATTR", "FINGERPRINT_ATTR"]

START_ATTR = "start_point"
REFINE_ATTR = "refined_from"  # a refined trial: the number of the trial whose config it fine-tunes alone
RETRY_ATTR = "retry_of"  # a retried trial: the number of the failed trial whose point it measures again
FINGERPRINT_ATTR = "config_fingerprint"  # study user attr: {part: {"hash", "summary"[, "detail"]}}
STARTS_ATTR = "edgetune:starts"  # study system attr: how many times a controller opened the study


def resume_seed(seed: int, starts: int, n_trials: int) -> int:
    """The sampler seed of a controller that opens a study for the ``starts``-th time (0: the first, which
    uses ``seed`` itself) holding ``n_trials`` trials: distinct for each start, so no resume (and no second
    controller) draws the points of an earlier one again, and reproducible from the storage."""
    if starts == 0 and n_trials == 0:
        return int(seed)
    return int.from_bytes(hashlib.sha256(f"{seed}/{starts}/{n_trials}".encode()).digest()[:4], "big")


def _rdb_storage(url: str):
    """Optuna's RDB storage of ``url``; SQLite waits for other writers (several controllers) instead of
    failing with 'database is locked', and a schema being created by another controller is retried."""
    import random
    import time

    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    for attempt in range(6):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except (SQLAlchemyError, optuna.exceptions.StorageInternalError):
            if attempt == 5:
                raise
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.3)
    raise AssertionError("unreachable")


def open_study(*, storage: str, name: str, goals: Sequence[str], sampler: str, seed: int, n_startup: int = 10,
               keys: Sequence[str] = ()):
    """Create the study, or load it (same name and storage) to resume. ``keys``: the objectives' names
    (``map50_95``, ``latency_p50_ms@local``), stored so optuna-dashboard labels them instead of 0 / 1 / 2.
    The sampler is seeded with :func:`resume_seed` (``seed`` on the first run). Call it under the study's
    ``StudyLock`` when several controllers may start at once."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["maximize" if g == "max" else "minimize" for g in goals]
    study = optuna.create_study(storage=_rdb_storage(storage), study_name=name, directions=directions,
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
    store = study._storage
    starts = int(store.get_study_system_attrs(study._study_id).get(STARTS_ATTR, 0))
    n_trials = len(study.get_trials(deepcopy=False))
    store.set_study_system_attr(study._study_id, STARTS_ATTR, starts + 1)
    if starts or n_trials:  # a resume, or a second controller: new points, not the first run's again
        study.sampler = make_sampler(sampler, seed=resume_seed(seed, starts, n_trials), n_startup=n_startup)
        log.info("study %r: start %d with %d trial(s) stored; sampler seed %d (from search.seed %d)", name,
                 starts + 1, n_trials, resume_seed(seed, starts, n_trials), seed)
    return study


def _part(summary: str, content, detail=None) -> dict:
    digest = hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"hash": digest, "summary": summary, **({"detail": detail} if detail is not None else {})}


def config_fingerprint(*, space, objectives: Sequence[str], goals: Sequence[str], constraints: Sequence[str],
                       model: dict, data: dict, model_label: str = "", data_label: str = "") -> dict[str, dict]:
    """What a study's trials depend on, part by part (``space`` | ``objectives`` | ``constraints`` |
    ``model`` | ``data``): a hash, a one-line summary and, for the space, its dimensions (to name the
    ones that changed). ``model`` / ``data``: content identity (weights sha256, validation bundle sha256,
    split sizes, ...) whose change makes old and new trials incomparable; the labels (model name, data
    source) are shown, not hashed, so moving the files does not count as a change."""
    dims = {d.name: list(d.choices) for d in space.dimensions}
    objs = [f"{k} ({g})" for k, g in zip(objectives, goals, strict=True)]

    def said(label: str, content: dict) -> str:
        return ", ".join(([label] if label else []) + [f"{k} {v}" for k, v in content.items()])

    return {
        "space": _part(f"{len(dims)} dimensions", dims, dims),
        "objectives": _part(", ".join(objs), objs),
        "constraints": _part("; ".join(constraints) or "none", list(constraints)),
        "model": _part(said(model_label, model), model),
        "data": _part(said(data_label, data), data),
    }


def _space_change(old: dict, new: dict) -> str:
    gone, added = [k for k in old if k not in new], [k for k in new if k not in old]
    changed = [k for k in new if k in old and list(old[k]) != list(new[k])]
    parts = []
    for what, names in (("removed", gone), ("added", added), ("other choices in", changed)):
        if names:
            parts.append(f"{what} {', '.join(names[:3])}" + (f" (+{len(names) - 3} more)" if len(names) > 3 else ""))
    if changed:
        k = changed[0]
        parts.append(f"{k}: {list(old[k])} -> {list(new[k])}")
    return "; ".join(parts)


def check_fingerprint(study, fingerprint: dict[str, dict], *, storage: str, name: str, force: bool = False) -> None:
    """Store ``fingerprint`` in a new study; in a resumed one, refuse (ConfigError) a config whose parts
    differ from the stored ones, naming each change and the two ways on. ``force``: continue anyway (with a
    warning) and store the new fingerprint. A study without one (older edgetune) just gets it."""
    stored = study.user_attrs.get(FINGERPRINT_ATTR) or {}
    changed = [k for k, v in fingerprint.items() if k in stored and stored[k].get("hash") != v["hash"]]
    if changed:
        lines = []
        for k in changed:
            old, new = stored[k], fingerprint[k]
            if k == "space" and isinstance(old.get("detail"), dict):
                lines.append(f"space changed ({old['summary']} -> {new['summary']}: "
                             f"{_space_change(old['detail'], new['detail'])})")
            else:
                lines.append(f"{k} changed ({old.get('summary')} -> {new['summary']})")
        what = "; ".join(lines)
        if not force:
            from edgetune.errors import ConfigError

            raise ConfigError(
                f"study {name!r} in {storage} was run with another config: {what}. Its trials would not be comparable "
                "with new ones. Start a new study (give the sweep a new `name:` or another `search.storage`), or "
                "continue this one anyway with `edgetune search --force-resume`.")
        log.warning("--force-resume: continuing study %r although its config changed: %s", name, what)
    if changed or set(fingerprint) - set(stored):
        study.set_user_attr(FINGERPRINT_ATTR, {**stored, **fingerprint})


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


def enqueue_retries(study, space) -> list[int]:
    """``search.retry_failed``: enqueue the point of each failed trial once more (a new trial carrying
    ``retry_of``, and the baseline / start-point / refine attrs of the failed one), unless it is itself a
    retry, was retried before, or its point is no longer in ``space``. Returns the failed trials' numbers."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get(RETRY_ATTR) for t in trials}
    choices = {d.name: set(d.choices) for d in space.dimensions}
    out = []
    for t in trials:
        if t.state.name != "FAIL" or RETRY_ATTR in t.user_attrs or t.number in retried:
            continue
        if set(t.params) != set(choices) or any(v not in choices[k] for k, v in t.params.items()):
            log.info("trial %d failed on a point the space no longer has; not retried", t.number)
            continue
        attrs = {k: t.user_attrs[k] for k in (BASELINE_ATTR, START_ATTR, REFINE_ATTR) if k in t.user_attrs}
        study.enqueue_trial(dict(t.params), user_attrs={**attrs, RETRY_ATTR: t.number}, skip_if_exists=False)
        out.append(t.number)
    return out


def stale_trials(study, owners) -> list:
    """Trials left RUNNING by a controller that is gone (``owners``: a ``TrialOwners``): re-run them."""
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if owners.state(t) == "stale"]
