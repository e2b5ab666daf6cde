"""The library logger. Library code logs; the CLI owns handlers, colours and progress bars."""

from __future__ import annotations

import logging

ROOT = "edgetune"


def get_logger(name: str) -> logging.Logger:
    """Logger under the ``edgetune`` namespace (pass ``__name__``)."""
    if name != ROOT and not name.startswith(ROOT + "."):
        name = f"{ROOT}.{name}"
    return logging.getLogger(name)


logging.getLogger(ROOT).addHandler(logging.NullHandler())
