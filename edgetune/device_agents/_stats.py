"""Latency statistics: percentiles, mean/std and a distribution-free confidence interval of the median.

The CI uses order statistics: with ``n`` sorted samples and B ~ Binomial(n, 1/2), the interval
``[x_(j), x_(n-j+1)]`` covers the true median with probability ``1 - 2 P(B <= j - 1)``; ``j`` is the
largest rank that keeps the coverage at or above the level asked. No normality assumption, which
matters for skewed, multi-modal latency samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from edgetune.device_agents.protocol import LatencyStats

__all__ = ["median_ci", "latency_stats", "paired_ratio"]


def _binom_half_pmf_terms(n: int):
    """Yield P(B = k) for k = 0, 1, ... with B ~ Binomial(n, 1/2), in log space (stable for large n)."""
    log2n = n * math.log(2.0)
    lg = math.lgamma
    for k in range(n + 1):
        yield math.exp(lg(n + 1) - lg(k + 1) - lg(n - k + 1) - log2n)


def median_ci(samples: Sequence[float], *, level: float = 0.95) -> tuple[float, float, float]:
    """(low, high, exact coverage) of the order-statistic CI of the median of ``samples``.

    For n < 6 no pair of order statistics reaches 95%: the interval is (min, max) and the coverage
    returned says how much it really covers.
    """
    xs = np.sort(np.asarray(samples, dtype=np.float64))
    n = xs.size
    if n == 0:
        raise ValueError("median_ci needs at least one sample")
    if n == 1:
        return float(xs[0]), float(xs[0]), 0.0
    # rank j (1-based, on both sides) covers with 1 - 2 P(B <= j - 1); take the largest j still >= level
    best_j, best_cov, below = 1, None, 0.0
    terms = _binom_half_pmf_terms(n)
    for j in range(1, n // 2 + 1):
        below += next(terms)  # P(B <= j - 1)
        coverage = 1.0 - 2.0 * below
        if best_cov is None or coverage >= level:
            best_j, best_cov = j, coverage
        if coverage < level:
            break
    return float(xs[best_j - 1]), float(xs[n - best_j]), float(max(best_cov, 0.0))


def latency_stats(samples_ms: Sequence[float], *, keep_samples: bool = True) -> LatencyStats:
    """Summarise latency samples (milliseconds) into a :class:`LatencyStats`."""
    xs = np.asarray(samples_ms, dtype=np.float64)
    if xs.size == 0:
        raise ValueError("latency_stats needs at least one sample")
    p50, p90, p99 = (float(v) for v in np.percentile(xs, [50, 90, 99]))
    lo, hi, cov = median_ci(xs)
    return LatencyStats(
        n=int(xs.size), p50_ms=p50, p90_ms=p90, p99_ms=p99, mean_ms=float(xs.mean()),
        std_ms=float(xs.std(ddof=1)) if xs.size > 1 else 0.0, min_ms=float(xs.min()), max_ms=float(xs.max()),
        ci95_low_ms=lo, ci95_high_ms=hi, ci_coverage=cov, total_s=float(xs.sum() / 1e3),
        samples_ms=[round(float(v), 6) for v in xs] if keep_samples else None,
    )


def paired_ratio(model_ms: Sequence[float], reference_ms: Sequence[float], *, burst: int,
                 level: float = 0.95) -> tuple[float, float, float]:
    """(ratio, CI low, CI high) of a model's latency to a reference's from samples taken in turns
    (``time_interleaved``: sample ``i`` of each belongs to turn ``i // burst``): the median over turns of
    each turn's ratio of its two bursts' fastest runs, with the order-statistic CI of that median
    (:func:`median_ci`). A turn's two bursts run back to back, so clock or load changes between turns
    cancel in its ratio. The fastest run of a burst, not its median: on a CPU shared with another busy
    process, a run the scheduler preempts takes a whole time slice longer, and a longer model is preempted
    more often, so medians under such load shrink the ratio (measured on the 2-core EPYC with a burner on
    the agent's core: median-based 0.495, min-based 0.618, quiet 0.621)."""
    m = np.asarray(model_ms, dtype=np.float64)
    r = np.asarray(reference_ms, dtype=np.float64)
    turns = max(1, -(-min(m.size, r.size) // burst))
    ratios = [float(m[t * burst:(t + 1) * burst].min() / r[t * burst:(t + 1) * burst].min()) for t in range(turns)]
    low, high, _ = median_ci(ratios, level=level)
    return float(np.median(ratios)), low, high
