"""The pruned-model cache: pruned (+ recovered) torch weights kept under ``WORKDIR/pruned/<pruned_key>``
with the kept channel indices, so other precisions of the same sparsity skip pruning and fine-tuning (and
the fp32 exports made from those weights sit beside them)."""

from __future__ import annotations

import json
from pathlib import Path

from edgetune._logging import get_logger

log = get_logger(__name__)

__all__ = ["pruned_dir", "store_pruned", "load_pruned"]


def pruned_dir(workdir: Path, key: str) -> Path:
    """Where one pruned (+ recovered) model is kept: its weights, its channel indices, its exports."""
    return workdir / "pruned" / key


def store_pruned(workdir: Path, key: str, student, pruned: dict) -> None:
    """Keep the pruned + recovered weights so other precisions of the same sparsity skip the fine-tuning."""
    import io

    import torch

    from edgetune._paths import atomic_write_bytes

    d = pruned_dir(workdir, key)
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(student.state_dict(), buf)
    atomic_write_bytes(d / "weights.pt", buf.getvalue())
    atomic_write_bytes(d / "pruned.json", json.dumps(pruned, sort_keys=True).encode())  # last: marks it complete


def load_pruned(workdir: Path, key: str, student, size: int) -> dict | None:
    """Rebuild the pruned structure from the kept channel indices and load the cached weights; None on a
    miss or an unreadable entry (which is then recomputed and overwritten)."""
    import torch

    from edgetune.compress._prune import prune_to_kept
    from edgetune.spaces import dependency_graph

    d = pruned_dir(workdir, key)
    if not (d / "pruned.json").is_file():
        return None
    try:
        pruned = json.loads((d / "pruned.json").read_text())
        if pruned.get("kept"):
            prune_to_kept(student, dependency_graph(student, size), pruned["kept"])
        student.load_state_dict(torch.load(d / "weights.pt", map_location="cpu", weights_only=True))
    except Exception as exc:  # a torn or foreign cache entry: recompute
        log.warning("pruned-model cache entry %s is unreadable (%s); recomputing it", key[:12], exc)
        return None
    return pruned
