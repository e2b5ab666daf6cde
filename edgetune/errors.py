"""One exception hierarchy for edgetune.

Every error a user can cause says the rule, the offending value and the fix. The CLI prints
``str(error)`` on one line (``--debug`` shows the traceback).
"""

from __future__ import annotations

__all__ = [
    "EdgetuneError",
    "ConfigError",
    "DataError",
    "ModelError",
    "ExportError",
    "CompressionError",
    "AgentError",
    "AgentUnavailable",
    "AuthError",
    "ProtocolMismatch",
    "MeasurementFailed",
    "MissingDependency",
    "DeployError",
    "SweepError",
    "format_validation_error",
    "closest_names",
]


class EdgetuneError(Exception):
    """Root of every error edgetune raises on purpose."""


class ConfigError(EdgetuneError, ValueError):
    """A sweep file, CLI option or compression config is invalid."""


class DataError(EdgetuneError):
    """A dataset cannot be read: missing or corrupt files, bad annotations, wrong paths."""


class ModelError(EdgetuneError):
    """A model source cannot be loaded: bad factory path, weights that do not fit, unknown name."""


class ExportError(EdgetuneError):
    """ONNX export failed or does not match the torch model."""


class CompressionError(EdgetuneError):
    """A compression config cannot be applied to a model."""


class AgentError(EdgetuneError):
    """The device agent answered with an error."""


class AgentUnavailable(AgentError):
    """The device agent cannot be reached (connection refused, timeout, died mid-request)."""


class AuthError(AgentError):
    """The device agent refused the token."""


class ProtocolMismatch(AgentError):
    """Controller and agent speak incompatible protocol versions."""


class MeasurementFailed(AgentError):
    """The agent could not measure an artifact (the runtime's error text is in the message)."""


class MissingDependency(EdgetuneError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class SweepError(EdgetuneError):
    """A sweep ran but has nothing to show: every trial failed (the message lists the distinct reasons)."""


class DeployError(EdgetuneError):
    """A deployment cannot proceed: no trial matches a pick rule, an artifact cannot be fetched or does not
    match its hash, or the device's re-measurement disagrees with the sweep."""


def _keys_at(model, loc) -> list[str]:
    """The field names of the (nested) pydantic model at ``loc`` below ``model`` ([] when not a model)."""
    import typing

    def models_in(tp):
        if isinstance(tp, type) and hasattr(tp, "model_fields"):
            return [tp]
        return [m for a in typing.get_args(tp) for m in models_in(a)]

    current = [model] if model is not None else []
    for part in loc:
        if isinstance(part, int):
            continue  # a list / tuple element: the element type was unwrapped with the field
        nxt = []
        for m in current:
            field = m.model_fields.get(str(part))
            if field is not None:
                nxt.extend(models_in(field.annotation))
        current = nxt
    return sorted({k for m in current for k in m.model_fields})


def format_validation_error(exc, *, prefix: str = "", model=None) -> str:
    """One line naming each failing field of a pydantic ``ValidationError`` by its YAML path
    (``data.val_images``), what is wrong and the value given. ``model``: the validated class, so that an
    unknown key gets the closest valid key of its section."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            keys = _keys_at(model, [p for p in err["loc"][:-1] if not str(p).startswith("function-after")])
            hint = closest_names(str(err["loc"][-1]), keys).strip().replace("Closest names:", "did you mean")
            msg = "unknown key (remove it or check its spelling" + (f"; {hint.rstrip('.')}?" if hint else "") + ")"
        if not loc and not prefix:  # a cross-section check: its message names the fields
            lines.append(msg)
            continue
        loc = f"{prefix}{loc}" if loc else prefix.rstrip(".")
        got = err.get("input")
        show = err["type"] != "extra_forbidden" and not isinstance(got, (dict, list))
        lines.append(f"`{loc}`: {msg}" + (f" (got {got!r})" if show else ""))
    return "; ".join(lines)


def closest_names(name: str, names) -> str:
    """`` Closest names: a, b.`` for a misspelt ``name`` among ``names`` (empty when nothing is close)."""
    import difflib

    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    return f" Closest names: {', '.join(close)}." if close else ""
