"""The samplers a sweep can use, by name (an unknown name lists the valid ones)."""

from __future__ import annotations

from collections.abc import Callable

from edgetune.errors import ConfigError

__all__ = ["SAMPLERS", "make_sampler"]


def _nsga2(seed: int, n_startup: int):
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, n_startup))


def _tpe(seed: int, n_startup: int):
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, multivariate=True)


def _gp(seed: int, n_startup: int):
    import optuna

    return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup)


def _random(seed: int, n_startup: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


SAMPLERS: dict[str, Callable] = {"nsga2": _nsga2, "tpe": _tpe, "gp": _gp, "random": _random}


def make_sampler(name: str, *, seed: int, n_startup: int = 10):
    if name not in SAMPLERS:
        raise ConfigError(f"`search.sampler` {name!r} is unknown; valid samplers: {', '.join(SAMPLERS)}.")
    return SAMPLERS[name](seed, n_startup)
