"""The runtime interface: load an ONNX file into a session that maps a numpy batch to the first output.

Contract (checked by ``tests/device_agents/test_agent_runtime_conformance.py`` for every runtime):

- :meth:`Runtime.load` builds a :class:`ModelSession` from a single-file ONNX path with a fixed number
  of intra-op threads. A file the runtime cannot load raises :class:`~edgetune.errors.MeasurementFailed`
  carrying the runtime's own error text. A requested accelerator (execution provider) that is missing
  or that the session silently dropped is also MeasurementFailed, never a quiet CPU fallback.
- :meth:`ModelSession.run` takes a C-contiguous array of the input's dtype and shape and returns the
  first output as a host numpy array; it is called from one thread only.
- Runtimes import their framework (onnxruntime, tensorrt) inside methods, so importing this package
  is cheap; one measurement process loads one model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgetune.device_agents.protocol import RuntimeInfo
from edgetune.errors import ConfigError

__all__ = ["Runtime", "ModelSession", "register_runtime", "get_runtime", "available_runtimes"]


class ModelSession(ABC):
    """A loaded model. ``input_shape`` has ``-1`` for dynamic dimensions."""

    input_name: str
    input_shape: tuple[int, ...]
    input_dtype: np.dtype
    providers_used: list[str]
    detail: dict[str, Any]

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Run one batch; returns the model's first output."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device memory (optional)."""

    def realised_precision(self, layers: Sequence[str]) -> dict[str, str] | None:
        """The precision the runtime executes each of ``layers`` (the ONNX graph's weighted node names) in:
        ``int8``, ``fp16``, ``bf16``, ``fp32`` (``fp8`` / ``int4`` where a runtime has them), or ``float``
        where the runtime does not say which float.
        None where the runtime does not expose it (see each runtime's docstring). Called once, after the
        last run: a runtime may release the session to read it."""
        return None

    def shape_for(self, batch: int) -> tuple[int, ...]:
        """The concrete input shape for ``batch`` (dynamic spatial dims are an error: ONNX from edgetune
        export has a fixed input size)."""
        shape = list(self.input_shape)
        if shape and shape[0] == -1:
            shape[0] = batch
        if any(d < 0 for d in shape):
            from edgetune.errors import MeasurementFailed

            raise MeasurementFailed(
                f"model input '{self.input_name}' has dynamic dimensions {self.input_shape} besides the batch; "
                "export it with a fixed input size (edgetune's export does)."
            )
        return tuple(shape)


class Runtime(ABC):
    """A way to run ONNX on this device (onnxruntime, TensorRT, ...)."""

    name: str = ""

    @abstractmethod
    def info(self) -> RuntimeInfo:
        """Name, version and available providers; never raises (``error`` says what is missing)."""

    @abstractmethod
    def load(self, path: Path, *, threads: int, providers: Sequence[str] | None = None,
             cache_dir: Path | None = None, batch: int = 1) -> ModelSession:
        """Load ``path``; ``cache_dir`` may keep built engines between processes."""

    def default_providers(self) -> list[str]:
        return []

    def unusable_reason(self) -> str | None:
        """Why this runtime cannot measure anything on this machine (None: it can). Checked when an agent
        starts, so a missing library fails there, with the fix, not at the first measurement."""
        return self.info().error


_RUNTIMES: dict[str, Callable[[], Runtime]] = {}


def register_runtime(name: str) -> Callable[[type[Runtime]], type[Runtime]]:
    def deco(cls: type[Runtime]) -> type[Runtime]:
        cls.name = name
        _RUNTIMES[name] = cls
        return cls

    return deco


def available_runtimes() -> list[str]:
    return sorted(_RUNTIMES)


def get_runtime(name: str) -> Runtime:
    """The runtime registered as ``name`` (``ort`` or ``tensorrt``); an unknown name lists the valid ones."""
    if name not in _RUNTIMES:
        raise ConfigError(f"unknown runtime {name!r}; valid runtimes: {', '.join(available_runtimes())}.")
    return _RUNTIMES[name]()
