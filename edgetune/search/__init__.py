"""Search: samplers, the trial runner, backends (local, Ray), Pareto fronts, MLflow tracking.

Importing this package is light (``edgetune.config`` imports its config sections); the sweep machinery
(Optuna, MLflow) loads on first use of those names.
"""

from edgetune.search._spec import ObjectiveSpec, SearchSpec, TrackingSpec, check_sweep, require_objectives

__all__ = ["ObjectiveSpec", "SearchSpec", "TrackingSpec", "check_sweep", "require_objectives", "Sweep",
           "SweepProgress", "prepare_sweep", "load_front", "Backend", "available_backends", "register_backend",
           "SweepHooks", "TrialPlan", "TrialResult"]

_LAZY = {"Sweep": "sweep", "SweepProgress": "sweep", "prepare_sweep": "wiring", "load_front": "wiring",
         "Backend": "backends", "available_backends": "backends", "register_backend": "backends",
         "SweepHooks": "runner", "TrialPlan": "runner", "TrialResult": "runner"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"edgetune.search.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'edgetune.search' has no attribute {name!r}")
