"""The constraint-aware Pareto front and its hypervolume (Optuna's WFG implementation).

Objectives are normalised by the fp32 baseline before the hypervolume, so it is unitless: for a
``min`` objective the reference is 1.1 x baseline (a point must be no worse than 10% above fp32 to
count), for a ``max`` objective the reference is 0 (accuracy metrics are >= 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["to_minimization", "non_dominated", "pareto_ranks", "hypervolume"]

REF_FACTOR_MIN = 1.1


def to_minimization(values: np.ndarray, goals: Sequence[str]) -> np.ndarray:
    """(n, k) objective values -> all-minimisation (max goals negated)."""
    sign = np.array([-1.0 if g == "max" else 1.0 for g in goals])
    return np.asarray(values, float) * sign


def non_dominated(points_min: np.ndarray) -> np.ndarray:
    """Boolean mask of the non-dominated rows of an all-minimisation (n, k) array (duplicates all kept)."""
    p = np.asarray(points_min, float)
    n = len(p)
    mask = np.ones(n, bool)
    for i in range(n):
        dominated = np.all(p <= p[i], axis=1) & np.any(p < p[i], axis=1)
        mask[i] = not dominated.any()
    return mask


def pareto_ranks(points_min: np.ndarray) -> np.ndarray:
    """Non-domination rank of each row (0 = on the front)."""
    p = np.asarray(points_min, float)
    ranks = np.full(len(p), -1)
    remaining = np.arange(len(p))
    r = 0
    while remaining.size:
        front = non_dominated(p[remaining])
        ranks[remaining[front]] = r
        remaining = remaining[~front]
        r += 1
    return ranks


def hypervolume(values: np.ndarray, goals: Sequence[str], baseline: Sequence[float]) -> float:
    """Hypervolume of feasible points (n, k) in baseline-normalised space (see module doc)."""
    values = np.asarray(values, float).reshape(-1, len(goals))
    if values.size == 0:
        return 0.0
    base = np.asarray(baseline, float)
    scale = np.where(np.abs(base) > 0, np.abs(base), 1.0)
    norm = to_minimization(values / scale, goals)
    ref = np.array([-0.0 if g == "max" else REF_FACTOR_MIN for g in goals])
    inside = np.all(norm < ref, axis=1)
    if not inside.any():
        return 0.0
    from optuna._hypervolume import compute_hypervolume

    pts = norm[inside]
    return float(compute_hypervolume(pts[non_dominated(pts)], ref, assume_pareto=True))
