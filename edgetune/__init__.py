"""edgetune: compress vision models for edge devices, measured on the devices themselves.

Importing ``edgetune`` is cheap and imports none of torch, optuna, ray or mlflow.
"""

from __future__ import annotations

from edgetune.errors import EdgetuneError

__version__ = "0.1.0"
__all__ = ["EdgetuneError", "__version__"]
