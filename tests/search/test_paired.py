"""Paired timing (``search.paired_timing``): the latency objectives from each trial's ratio to fp32 in its own
request, on one anchor's scale; the front, the table's speed-ups and the suggestions read those numbers, and
the side-by-side check at the end is a check of their order (the end-to-end sweep test runs it on a real
agent)."""

from __future__ import annotations

import pandas as pd
import pytest

from edgetune.search.front import fastest_close_to_fp32, speedup_vs_fp32, suggestions
from edgetune.search.paired import anchor_values, noise_report
from edgetune.search.side_by_side import order_check, order_check_lines


def test_the_first_paired_measurement_sets_the_anchor_and_every_trial_is_ratio_times_anchor():
    anchors: dict = {}
    # the fp32 baseline is the reference itself: ratio 1, its own timing is the anchor
    fp32 = anchor_values({"latency_p50_ms@d": 10.0, "latency_p90_ms@d": 12.0, "size_bytes": 5.0}, ["d"], anchors,
                         is_reference=True, trial=0)
    assert anchors == {"d": {"trial": 0, "p50": 10.0, "p90": 12.0}}
    assert fp32["latency_p50_ms@d"] == 10.0 and fp32["latency_ratio@d"] == 1.0 and fp32["own_latency_p50_ms@d"] == 10.0
    # a trial timed while the device ran twice as slow: own 9 ms, fp32 beside it 20 ms -> 0.45 x 10 ms
    late = anchor_values({"latency_p50_ms@d": 9.0, "latency_p90_ms@d": 11.0, "latency_ratio@d": 0.45,
                          "latency_ratio_p90@d": 0.5, "ref_latency_p50_ms@d": 20.0, "ref_latency_p90_ms@d": 22.0},
                         ["d"], anchors, is_reference=False, trial=7)
    assert late["latency_p50_ms@d"] == pytest.approx(4.5) and late["latency_p90_ms@d"] == pytest.approx(6.0)
    assert late["own_latency_p50_ms@d"] == 9.0 and anchors["d"]["trial"] == 0  # the anchor does not move
    # an agent that does not pair (before protocol 1.4): its own timing, unchanged
    assert anchor_values({"latency_p50_ms@e": 3.0}, ["e"], anchors, is_reference=False, trial=8) == \
        {"latency_p50_ms@e": 3.0}


def _frame(rows):
    df = pd.DataFrame(rows)
    for col in ("baseline", "label"):
        if col not in df:
            df[col] = None
    return df


def _row(n, p50, sbs, *, acc=0.80, size=1000.0, pareto=True, baseline=None, ci=0.02):
    return {"trial": n, "state": "COMPLETE", "baseline": baseline, "label": baseline or f"t{n}", "pareto": pareto,
            "feasible": None, "map50_95@d": acc, "latency_p50_ms@d": p50, "size_bytes": size,
            "latency_ratio@d": p50 / 10.0, "ref_latency_p50_ms@d": 10.0 + n,
            "ci95_low_latency_p50_ms@d": p50 * (1 - ci), "ci95_high_latency_p50_ms@d": p50 * (1 + ci),
            "sbs_latency_p50_ms@d": sbs, "sbs_ci95_low_latency_p50_ms@d": sbs * 0.98,
            "sbs_ci95_high_latency_p50_ms@d": sbs * 1.02}


KEYS, GOALS = ["map50_95@d", "latency_p50_ms@d", "size_bytes"], ["max", "min", "min"]


def test_paired_rows_take_their_speedups_and_suggestions_from_the_paired_values_not_the_recheck():
    # the side-by-side recheck ran on a device twice as slow: it must not replace the numbers of the front
    df = _frame([_row(0, 10.0, 20.0, acc=0.805, size=4000, baseline="fp32", pareto=False),
                 _row(1, 4.0, 8.2, acc=0.801), _row(2, 5.0, 10.0, acc=0.803, size=800)])
    base = df.iloc[0]
    assert speedup_vs_fp32(df.iloc[1], base, "latency_p50_ms@d") == (pytest.approx(2.5), False)
    best = fastest_close_to_fp32(df, KEYS)
    assert best["trial"] == 1 and best["paired"] and best["speedup"] == pytest.approx(2.5)
    assert "paired with fp32" in next(p["why"] for p in suggestions(df, KEYS, GOALS) if p["kind"] == "fastest")
    assert order_check(df, KEYS) == [{"device": "d", "n": 3, "tau": 1.0, "contradictions": []}]
    assert order_check_lines(df, KEYS) == ["side by side at the end (d, 3 points): same order within noise "
                                           "(Kendall tau 1.00)"]


def test_an_order_the_side_by_side_check_reverses_beyond_noise_is_reported():
    df = _frame([_row(0, 10.0, 10.0, baseline="fp32", pareto=False), _row(1, 4.0, 6.0), _row(2, 5.0, 4.5),
                 _row(3, 5.1, 5.3)])
    (check,) = order_check(df, KEYS)
    # 4 < 5 and 4 < 5.1 paired, 6 > 4.5 and 6 > 5.3 side by side, all beyond the 95% CIs
    assert check["contradictions"] == [(1, 2), (1, 3)]
    assert check["tau"] == pytest.approx((4 - 2) / 6)
    assert "DIFFERS beyond noise for #1/#2, #1/#3" in order_check_lines(df, KEYS)[0]
    # a reversed pair inside the noise of either timing is discordant, not a contradiction
    df.loc[df["trial"] == 3, "sbs_latency_p50_ms@d"] = 5.9
    df.loc[df["trial"] == 3, ["sbs_ci95_low_latency_p50_ms@d", "sbs_ci95_high_latency_p50_ms@d"]] = [5.8, 6.0]
    assert order_check(df, KEYS)[0]["contradictions"] == [(1, 2)]


def test_a_device_too_noisy_to_rank_gets_a_warning_with_its_spread_and_the_drift_is_noted():
    quiet = _frame([_row(0, 10.0, 10.0, baseline="fp32"), _row(1, 4.0, 4.0), _row(2, 5.0, 5.0)])
    warnings, notes = noise_report(quiet, ["d"], max_spread=0.10)
    assert warnings == [] and "fp32's own p50 moved 10-12 ms" in notes[0] and "(20%)" in notes[0]
    noisy = _frame([_row(n, p, p, ci=0.15) for n, p in ((0, 10.0), (1, 4.0), (2, 5.0))])
    (warning,), _ = noise_report(noisy, ["d"], max_spread=0.10)
    assert "device d is too noisy" in warning and "span 30% of the ratio" in warning
    assert "`search.max_paired_spread` = 10%" in warning


def test_an_anchor_taken_on_a_busy_device_is_named_with_its_factor():
    """The ms of a paired sweep are ratios x fp32's p50 in the first measurement (the anchor): one taken while
    the device was busy (run E of docs/measurements.md: 7.88 ms, quietest 3.62) inflates every value shown
    by the same factor, so the front's order stands but the warning says by how much the ms are off."""
    busy = _row(0, 20.0, 20.0, baseline="fp32")
    busy["ref_latency_p50_ms@d"] = 20.0
    df = _frame([busy, _row(1, 8.0, 8.0), _row(2, 10.0, 10.0)])  # their fp32 beside them: 11 and 12 ms
    warnings, _ = noise_report(df, ["d"], max_spread=0.10)
    (warning,) = [w for w in warnings if "busy then" in w]
    assert "(20 ms), 1.82x the quietest fp32 p50 of the sweep (11 ms)" in warning


def _measured(ratio, low, high, ref_ms):
    from edgetune.device_agents.protocol import Measurement, PairedLatency

    stats = {"n": 20, "p50_ms": ref_ms, "p90_ms": ref_ms, "p99_ms": ref_ms, "mean_ms": ref_ms, "std_ms": 0.0,
             "min_ms": ref_ms, "max_ms": ref_ms, "ci95_low_ms": ref_ms, "ci95_high_ms": ref_ms, "ci_coverage": 0.95,
             "total_s": 0.1}
    paired = PairedLatency(reference="0" * 64, reference_runtime="ort", runs=20, burst=5, model=stats,
                           reference_latency=stats, ratio_p50=ratio, ratio_p90=ratio, ratio_ci95_low=low,
                           ratio_ci95_high=high)
    return Measurement.model_construct(paired=paired, throttled=None)


class _Hooks:
    """The measuring side of SweepHooks for the rule alone: it hands out the given measurements in order (the
    real agent path runs in the end-to-end sweep test)."""

    def __init__(self, *measurements):
        from edgetune.search.runner import SweepHooks

        self.left = list(measurements)
        for name in ("quiet_reference", "note_quiet", "throttle_policy", "recover_device", "pool_size"):
            setattr(self, name, getattr(SweepHooks, name).__get__(self))

    def paired_policy(self):
        return 2, 0.0, 0.10, 1.3

    def measure(self, artifact, device, runtime=None):
        return self.left.pop(0)


def test_a_busy_devices_paired_timing_is_taken_again_and_the_quietest_is_kept():
    from edgetune.search.runner import MeasureAttempts, measure_quiet

    quiet, busy_wide, busy_slow = _measured(0.60, 0.59, 0.61, 3.8), _measured(0.40, 0.30, 0.62, 7.9), \
        _measured(0.28, 0.27, 0.29, 8.2)
    hooks = _Hooks(quiet)
    assert measure_quiet(hooks, None, "d", None, MeasureAttempts(), sleep=lambda s: None) is quiet
    assert hooks.quiet_reference("d") == 3.8
    # a wide CI, then a tight one taken while fp32 ran 2.2x slower than its quietest, then a quiet one
    hooks.left = [busy_wide, busy_slow, quiet]
    attempts = MeasureAttempts()
    assert measure_quiet(hooks, None, "d", None, attempts, sleep=lambda s: None) is quiet
    assert attempts.paired_retakes == 2 and not attempts.notes
    # busy all along: the least bad one is kept, with why
    hooks.left = [busy_wide, busy_slow, busy_wide]
    attempts = MeasureAttempts()
    kept = measure_quiet(hooks, None, "d", None, attempts, sleep=lambda s: None)
    assert kept is busy_wide and attempts.paired_retakes == 2  # both busy: the one whose fp32 ran fastest
    assert "its paired-ratio 95% CI spans 80% of the ratio" in attempts.notes[0]


def test_a_device_busy_most_of_the_time_is_not_retaken():
    from edgetune.search.runner import MeasureAttempts, measure_quiet

    quiet, busy = _measured(0.60, 0.59, 0.61, 3.8), _measured(0.40, 0.30, 0.62, 7.9)
    hooks = _Hooks(quiet, busy, busy, busy, busy, busy, busy, busy)
    retakes = []
    for _ in range(4):  # quiet, then busy first takes until busy is the majority of 4
        attempts = MeasureAttempts()
        measure_quiet(hooks, None, "d", None, attempts, sleep=lambda s: None)
        retakes.append(attempts.paired_retakes)
    assert retakes == [0, 2, 2, 0] and not hooks.left
