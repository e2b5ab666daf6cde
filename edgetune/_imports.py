"""Deferred optional imports that fail with an actionable message."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgetune.errors import MissingDependency


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise MissingDependency naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f"{purpose} needs the Python package '{module}', which is not importable ({exc}). "
            f'Install it with: pip install "edgetune[{extra}]"'
        ) from exc
