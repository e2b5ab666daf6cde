"""Paired timing: each trial's latency objectives on one scale, whatever the device's speed at the time.

A sweep takes minutes to hours, and a device's speed drifts over that time (clocks, temperature, other
tenants of a shared host); on a loaded 2-core box, a trial timed alone can look twice as fast as one timed
a minute later. With ``search.paired_timing`` the agent times every trial in turns with the fp32 baseline
in the same request (``MeasureRequest.reference``), and the ratio of the two medians (``latency_ratio``)
is what the device state cannot move. The latency objectives become that ratio times the fp32 reference's
time in the first paired measurement on the device (the **anchor**, kept in the study's user attrs):

    latency_p50_ms@dev = latency_ratio@dev x anchor_p50(dev)        (p90 likewise, from the p90 ratio)

so the front, the table, pareto.png and the suggestions all rank on the paired ratios, in milliseconds of the
device as it was at the anchor. The trial's own timing stays in ``own_latency_p50_ms@dev`` and the
reference's time in that request in ``ref_latency_p50_ms@dev`` (how fast the device was then). The fp32
baseline on the baseline runtime is the reference itself: its ratio is 1.

:func:`noise_report` says, per device, how wide the paired ratios' CIs were (a device too noisy to rank
trials gets a warning with the measured spread) and how far the reference's own time moved over the sweep.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ANCHOR_ATTR", "anchor_values", "noise_report", "realised_lines", "timing_lines"]

ANCHOR_ATTR = "paired_anchor"  # study user attr: device -> {"p50": ms, "p90": ms, "trial": n}
_PAIRS = (("latency_p50_ms", "latency_ratio", "ref_latency_p50_ms", "own_latency_p50_ms", "p50"),
          ("latency_p90_ms", "latency_ratio_p90", "ref_latency_p90_ms", "own_latency_p90_ms", "p90"))


def anchor_values(values: dict[str, float], devices: Sequence[str], anchors: dict[str, dict], *,
                  is_reference: bool, trial: int) -> dict[str, float]:
    """``values`` with each device's latency objectives on its anchor's scale (see the module docstring).
    ``anchors`` is updated in place with the first paired measurement of a device it lacks. A device
    measured without pairing (an agent before protocol 1.4) keeps its own timing. ``is_reference``: the
    trial IS the reference (the fp32 baseline on the baseline runtime), ratio 1."""
    out = dict(values)
    for device in devices:
        if is_reference and f"latency_ratio@{device}" not in out and f"latency_p50_ms@{device}" in out:
            for metric, ratio, ref, _, _ in _PAIRS:
                if f"{metric}@{device}" in out:
                    out[f"{ratio}@{device}"] = 1.0
                    out[f"{ref}@{device}"] = out[f"{metric}@{device}"]
        if f"latency_ratio@{device}" not in out:
            continue
        anchor = anchors.setdefault(device, {"trial": trial, **{
            stat: out[f"{ref}@{device}"] for _, _, ref, _, stat in _PAIRS if f"{ref}@{device}" in out}})
        for metric, ratio, _, own, stat in _PAIRS:
            key = f"{metric}@{device}"
            if key in out and f"{ratio}@{device}" in out and anchor.get(stat):
                out[f"{own}@{device}"] = out[key]
                out[key] = out[f"{ratio}@{device}"] * float(anchor[stat])
    return out


def noise_report(df, devices: Sequence[str], *, max_spread: float) -> tuple[list[str], list[str]]:
    """(warnings, notes) about the paired timings of a trials frame's completed trials.

    Warning: a device whose trials' paired-ratio 95% CIs have a median relative width above ``max_spread``
    is too noisy to rank points that close. Note: how far the fp32 reference's own median moved across the
    sweep (the drift the pairing took out)."""
    from edgetune.search.side_by_side import CI_HIGH, CI_LOW

    warnings, notes = [], []
    done = df[df["state"] == "COMPLETE"] if len(df) else df
    for device in devices:
        key = f"latency_p50_ms@{device}"
        cols = [f"latency_ratio@{device}", key, f"{CI_LOW}{key}", f"{CI_HIGH}{key}"]
        if not len(done) or any(c not in done.columns for c in cols):
            continue
        rows = done[done[f"latency_ratio@{device}"].notna() & done[key].gt(0)]
        spreads = ((rows[f"{CI_HIGH}{key}"] - rows[f"{CI_LOW}{key}"]) / rows[key]).dropna()
        if len(spreads):
            median, worst = float(spreads.median()), float(spreads.max())
            if median > max_spread:
                warnings.append(
                    f"device {device} is too noisy to rank close points: its trials' paired-ratio 95% CIs span "
                    f"{median:.0%} of the ratio (median of {len(spreads)}; widest {worst:.0%}), above "
                    f"`search.max_paired_spread` = {max_spread:.0%}; points closer than that are ties. Quiet the "
                    "device (other load, clocks) or raise `search.latency_runs`.")
        refs = rows.get(f"ref_latency_p50_ms@{device}")
        refs = refs.dropna() if refs is not None else []
        if len(refs) >= 2 and refs.max() > refs.min() * 1.05:
            low, high = float(refs.min()), float(refs.max())
            notes.append(f"{device}: fp32's own p50 moved {low:.3g}-{high:.3g} ms during the sweep "
                         f"({high / low - 1:.0%}); the pairing takes that out")
            anchor = _anchor_ms(rows, key)
            if anchor is not None and anchor > low * ANCHOR_SLACK:
                warnings.append(
                    f"{device}: the ms of this front are on the scale of fp32's p50 when the sweep started "
                    f"({anchor:.3g} ms), {anchor / low:.2f}x the quietest fp32 p50 of the sweep ({low:.3g} ms): "
                    "the device was busy then, so every latency shown is that much above a quiet device's. "
                    "Speed-ups and the order of the front do not depend on it; `edgetune compare` times "
                    "chosen points on a quiet device.")
    return warnings, notes


ANCHOR_SLACK = 1.15  # the anchor more than this x the quietest fp32 p50 of the sweep: it was taken on a busy device


def _anchor_ms(rows, key: str) -> float | None:
    """fp32's p50 the latency values are scaled by (the fp32 baseline's value: its ratio is 1)."""
    if "baseline" not in rows.columns:
        return None
    fp32 = rows[rows["baseline"] == "fp32"][key]
    return float(fp32.iloc[0]) if len(fp32) else None


def realised_lines(df) -> list[str]:
    """One line per front member or baseline whose device ran other precisions than asked
    (``records.realised_text``): the label says what was asked, this what ran."""
    if not len(df) or "realised" not in df.columns:
        return []
    shown = df[(df["pareto"] | df["baseline"].notna()) & df["realised"].notna()] if "pareto" in df.columns else df.iloc[0:0]
    return [f"precision as run, #{int(r['trial'])}: {r['realised']}" for _, r in shown.iterrows()]


def timing_lines(df, keys: Sequence[str], *, max_spread: float) -> tuple[list[str], list[str]]:
    """(warnings, notes) shown under the front (terminal and MLflow): a device too noisy to rank close points
    (:func:`noise_report`), the side-by-side check of the front's order (a warning when it reverses a pair
    beyond noise), how far fp32's own time moved."""
    from edgetune.search.side_by_side import order_check, order_check_lines

    devices = [k.split("@")[1] for k in keys if str(k).startswith("latency_p50_ms@")]
    warnings, notes = noise_report(df, devices, max_spread=max_spread)
    notes.extend(realised_lines(df))
    for line, check in zip(order_check_lines(df, keys), order_check(df, keys), strict=True):
        (warnings if check["contradictions"] else notes).append(line)
    return warnings, notes
