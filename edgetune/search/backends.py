"""Backends: where a sweep's trials run. A :class:`Backend` takes the plans (``plans()`` asks the
sampler for the next one, None when the sweep has all its trials), the sweep's hooks, and calls
``on_result`` once per plan, in the driver's process (the driver alone writes Optuna and MLflow).

``local`` (this process) and ``ray`` (a Ray cluster) are registered here; ``search.backend`` names one,
and the config lists what is registered. Every backend gives the same records for the same trials
(tests/search/test_backend_conformance.py runs over all of them).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from edgetune.errors import ConfigError
from edgetune.search.execution import execute_trials
from edgetune.search.runner import SweepHooks, TrialPlan, TrialResult

__all__ = ["Backend", "register_backend", "available_backends", "get_backend", "LocalBackend"]

Plans = Callable[[], TrialPlan | None]
OnResult = Callable[[TrialPlan, TrialResult], None]

_BACKENDS: dict[str, type[Backend] | str] = {"ray": "edgetune.search.ray_backend:RayBackend"}  # str: loaded on use


class Backend(ABC):
    """Runs trials. Built with the sweep config (``search.*`` settings); stateless between sweeps."""

    name: str = ""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    @abstractmethod
    def run(self, plans: Plans, hooks: SweepHooks, on_result: OnResult) -> None:
        """Run plans until ``plans()`` returns None; ``on_result(plan, result)`` for each, never raising for
        a failed trial."""


def register_backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    def deco(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        _BACKENDS[name] = cls
        return cls

    return deco


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def get_backend(name: str, cfg) -> Backend:
    if name not in _BACKENDS:
        raise ConfigError(f"`search.backend` {name!r} is not registered; backends: {', '.join(available_backends())}.")
    cls = _BACKENDS[name]
    if isinstance(cls, str):  # a builtin backend whose module loads when it is first used
        import importlib

        module, _, attr = cls.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    return cls(cfg)


@register_backend("local")
class LocalBackend(Backend):
    """Trials one after the other in this process; with ``search.overlap`` the next trial compresses in a
    thread while the current one is measured (``auto``: when no measured device runs on this host). With a
    pool of devices (``devices[].pool``), as many trials at once as the smallest pool has agents."""

    def run(self, plans: Plans, hooks: SweepHooks, on_result: OnResult) -> None:
        mode = self.cfg.search.overlap
        overlap = hooks.overlap_ok() if mode == "auto" else mode == "on"
        execute_trials(plans, hooks, overlap=overlap, on_result=on_result, workers=hooks.parallel_trials())
