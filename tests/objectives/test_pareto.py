"""Pareto front and hypervolume against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgetune.objectives.pareto import (
    REF_FACTOR_MIN,
    hypervolume,
    non_dominated,
    pareto_ranks,
    to_minimization,
)


def brute_front(p: np.ndarray) -> np.ndarray:
    n = len(p)
    return np.array([not any(np.all(p[j] <= p[i]) and np.any(p[j] < p[i]) for j in range(n) if j != i)
                     for i in range(n)])


def brute_hv(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact union volume by inclusion-exclusion over the grid of all coordinates (fine for small n)."""
    k = points.shape[1]
    axes = [np.unique(np.concatenate([points[:, d], [ref[d]]])) for d in range(k)]
    vol = 0.0
    for idx in itertools.product(*[range(len(a) - 1) for a in axes]):
        lo = np.array([axes[d][i] for d, i in enumerate(idx)])
        hi = np.array([axes[d][i + 1] for d, i in enumerate(idx)])
        if np.any(np.all(points <= lo, axis=1)):
            vol += float(np.prod(hi - lo))
    return vol


@pytest.mark.parametrize("seed", range(5))
def test_non_dominated_matches_brute_force(seed):
    p = np.random.default_rng(seed).integers(0, 6, (40, 3)).astype(float)
    assert (non_dominated(p) == brute_front(p)).all()
    ranks = pareto_ranks(p)
    assert (ranks == 0).sum() == brute_front(p).sum()
    for i, j in itertools.product(range(len(p)), repeat=2):
        if np.all(p[i] <= p[j]) and np.any(p[i] < p[j]):
            assert ranks[i] < ranks[j]


@pytest.mark.parametrize("seed", range(4))
def test_hypervolume_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    goals = ["max", "min", "min"]
    base = np.array([0.8, 10.0, 2e6])
    vals = np.column_stack([rng.uniform(0.5, 0.85, 12), rng.uniform(3, 12, 12), rng.uniform(4e5, 2.3e6, 12)])
    got = hypervolume(vals, goals, base)
    norm = to_minimization(vals / base, goals)
    ref = np.array([0.0, REF_FACTOR_MIN, REF_FACTOR_MIN])
    inside = norm[np.all(norm < ref, axis=1)]
    assert got == pytest.approx(brute_hv(inside, ref), rel=1e-9)
    assert got > 0


def test_hypervolume_of_nothing_and_of_the_baseline():
    assert hypervolume(np.zeros((0, 2)), ["max", "min"], [0.8, 10.0]) == 0.0
    # fp32 itself: accuracy 1.0 x the baseline, latency 1.0 x -> (1.0) * (1.1 - 1.0)
    assert hypervolume(np.array([[0.8, 10.0]]), ["max", "min"], [0.8, 10.0]) == pytest.approx(0.1)
