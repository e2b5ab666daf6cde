"""Cache keys of compression: what changes an artifact's bytes (``artifact_key``), a pruned model's weights
(``pruned_key``), and the identities of the train split and task adapter they cover."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgetune.compress._spec import RecoverySpec
from edgetune.spaces import CompressionConfig

__all__ = ["COMPRESS_VERSION", "artifact_key", "pruned_key"]

COMPRESS_VERSION = 1  # bump when compress() makes different bytes from the same inputs


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _dataset_id(ds) -> str | None:
    """The train split's identity in cache keys: its images and their ground truth (another seed or
    generator version of the builtin data names its files alike, but not its boxes)."""
    if ds is None:
        return None
    anns = getattr(ds, "annotations", None) or {}
    truth = _sha({str(k): anns[k] for k in sorted(anns)}) if anns else None
    return _sha([getattr(ds, "name", "?"), [(r.id, Path(r.file).name, r.label) for r in ds.records], truth])


def _adapter_id(adapter) -> str | None:
    return None if adapter is None else f"{type(adapter).__module__}.{type(adapter).__qualname__}"


def artifact_key(*, source_hash: str, input_size: int, precision: dict, config: CompressionConfig,
                 calib_hash: str | None, recovery: RecoverySpec | None, train_id: str | None,
                 importance: str | None = None, adapter: str | None = None) -> str:
    """The artifact hash: everything that changes the bytes, and nothing else (``adapter``: the task
    adapter's name, which decides the losses whenever the train split is used)."""
    ident = {"v": COMPRESS_VERSION, "source": source_hash, "input_size": input_size,
             "precision": dict(sorted(precision.items())), "sparsity": config.canonical()["sparsity"]}
    if config.channel_prunes:
        ident.update(importance=importance or config.importance, round_to=config.round_to)
    if config.scales is not None:  # absent otherwise: every older key stays the same
        ident.update(scales=list(config.scales))
    if "int8" in precision.values():
        ident.update(quant=config.quant.identity(), calib=calib_hash)
    if recovery is not None or train_id is not None:
        ident.update(recovery=None if recovery is None else recovery.identity(), train=train_id, task=adapter)
    return _sha(ident)


def pruned_key(*, source_hash: str, input_size: int, config: CompressionConfig, importance: str,
               recovery: RecoverySpec | None, train_id: str | None, adapter: str | None = None) -> str:
    """The key of a pruned (+ recovered) torch model: what changes its weights, and not the precision."""
    ident = {"v": COMPRESS_VERSION, "source": source_hash, "input_size": input_size,
             "sparsity": config.canonical()["sparsity"], "round_to": config.round_to,
             "importance": importance if config.channel_prunes else None,
             "recovery": None if recovery is None else recovery.identity(), "train": train_id,
             "task": adapter if train_id is not None else None}
    return _sha(ident)
