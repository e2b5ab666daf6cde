"""The sweep's Pareto front from the trial records, and its reports (csv, interactive html, png)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgetune.objectives.pareto import hypervolume, pareto_ranks, to_minimization
from edgetune.search.records import TrialRecord
from edgetune.search.side_by_side import ci as _ci
from edgetune.search.side_by_side import positive as _positive

__all__ = ["front_ranks", "sweep_hypervolume", "write_reports", "front_note", "fastest_close_to_fp32", "fp32_row",
           "speedup_vs_fp32", "noise_ties", "knee_point", "smallest_member", "suggestions", "accuracy_key",
           "latency_key", "pareto_figure", "within_noise", "paired"]

def _is_accuracy(metric: str) -> bool:
    """An accuracy metric: one the objectives table says is maximised and measured on a device."""
    from edgetune.objectives import METRICS

    m = METRICS.get(metric)
    return m is not None and m.goal == "max" and m.on_device


def _feasible(trials) -> list[tuple[object, TrialRecord]]:
    """(trial, record) of the COMPLETE trials with values that met the constraints (unknown: met)."""
    out = []
    for t in trials:
        if t.state.name == "COMPLETE":
            rec = TrialRecord.of(t)
            if rec.measured and rec.feasible is not False:
                out.append((t, rec))
    return out


def _matrix(trials: list[tuple[object, TrialRecord]], keys: Sequence[str]) -> tuple[list, np.ndarray]:
    rows, mat = [], []
    for t, rec in trials:
        vals = rec.values
        if all(k in vals and vals[k] is not None for k in keys):
            rows.append(t)
            mat.append([vals[k] for k in keys])
    return rows, np.asarray(mat, float).reshape(-1, len(keys))


def front_ranks(trials, keys: Sequence[str], goals: Sequence[str]) -> dict[int, int]:
    """trial number -> non-domination rank among COMPLETE feasible trials (0 = Pareto front)."""
    rows, mat = _matrix(_feasible(trials), keys)
    if not rows:
        return {}
    ranks = pareto_ranks(to_minimization(mat, goals))
    return {t.number: int(r) for t, r in zip(rows, ranks, strict=True)}


def sweep_hypervolume(trials, keys: Sequence[str], goals: Sequence[str], baseline: dict[str, float] | None) -> float:
    if not baseline or not all(k in baseline for k in keys):
        return 0.0
    _, mat = _matrix(_feasible(trials), keys)
    return hypervolume(mat, goals, [baseline[k] for k in keys])


def write_reports(df, keys: Sequence[str], goals: Sequence[str], outdir: Path, *, title: str) -> dict[str, Path]:
    """pareto.csv (all trials, front first), pareto.html (plotly: 2-D projections + 3-D), pareto.png."""
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": outdir / "pareto.csv", "html": outdir / "pareto.html", "png": outdir / "pareto.png"}
    ordered = df.sort_values(["pareto", "trial"], ascending=[False, True])
    ordered.to_csv(paths["csv"], index=False)
    ok = df[df["state"] == "COMPLETE"].dropna(subset=list(keys))
    marks = _marks(df, keys, goals)
    _plotly(ok, keys, goals, paths["html"], title, marks)
    fig = pareto_figure(ok, keys, goals, title=title, marks=marks)
    fig.savefig(paths["png"], dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths


def _marks(df, keys, goals) -> dict[int, str]:
    """trial -> what to write beside it on the plots: fp32 and the suggestions, nothing else."""
    marks: dict[int, list[str]] = {}
    base = fp32_row(df)
    if base is not None:
        marks[int(base["trial"])] = ["fp32"]
    for p in suggestions(df, keys, goals):
        marks.setdefault(int(p["trial"]), []).append(p["kind"])
    return {n: f"#{n} " + ", ".join(v) for n, v in marks.items()}


def _axis_title(key: str, goal: str) -> str:
    metric, _, device = key.partition("@")
    unit = {"size_bytes": "size", "compressed_bytes": "zstd size"}.get(metric, metric)
    return f"{unit}{' @' + device if device else ''} ({'higher' if goal == 'max' else 'lower'} is better)"


def _hover(df) -> list[str]:
    out = []
    for _, r in df.iterrows():
        out.append(f"trial {r['trial']}<br>{r.get('label') or ''}")
    return out


def _plotly(df, keys, goals, path: Path, title: str, marks: dict[int, str]) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pairs = [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys))]
    specs = [[{"type": "xy"} for _ in pairs] + ([{"type": "scene"}] if len(keys) >= 3 else [])]
    titles = [f"{keys[j]} vs {keys[i]}" for i, j in pairs] + (["3-D"] if len(keys) >= 3 else [])
    fig = make_subplots(rows=1, cols=len(specs[0]), specs=specs, subplot_titles=titles)
    front, rest = df[df["pareto"]], df[~df["pareto"]]
    marked = df[df["trial"].isin(list(marks))]
    for c, (i, j) in enumerate(pairs, start=1):
        for part, name, color in ((rest, "other trials", "#9aa5b1"), (front, "Pareto front", "#d6336c")):
            fig.add_trace(go.Scatter(x=part[keys[i]], y=part[keys[j]], mode="markers", name=name,
                                     marker={"color": color, "size": 9}, text=_hover(part), hoverinfo="text+x+y",
                                     showlegend=c == 1), row=1, col=c)
        fig.add_trace(go.Scatter(x=marked[keys[i]], y=marked[keys[j]], mode="markers+text", name="fp32 / suggested",
                                 text=[marks[int(t)] for t in marked["trial"]], textposition="top center",
                                 marker={"symbol": "star", "size": 14, "color": "#f59f00",
                                         "line": {"color": "black", "width": 1}}, showlegend=c == 1), row=1, col=c)
        fig.update_xaxes(title_text=_axis_title(keys[i], goals[i]), row=1, col=c)
        fig.update_yaxes(title_text=_axis_title(keys[j], goals[j]), row=1, col=c)
    if len(keys) >= 3:
        for part, name, color in ((rest, "other trials", "#9aa5b1"), (front, "Pareto front", "#d6336c")):
            fig.add_trace(go.Scatter3d(x=part[keys[0]], y=part[keys[1]], z=part[keys[2]], mode="markers", name=name,
                                       marker={"color": color, "size": 5}, text=_hover(part), showlegend=False),
                          row=1, col=len(specs[0]))
    fig.update_layout(title=title, height=520, width=max(700, 480 * len(specs[0])))
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)


def _bytes_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: _size(v))


def pareto_figure(df, keys: Sequence[str], goals: Sequence[str], *, title: str, marks: dict[int, str]):
    """The static plot (a matplotlib Figure): every 2-D projection of the objectives, the front in colour,
    fp32 and the suggestions starred and labelled (only those, placed so no two labels overlap), sizes in
    KB / MB, and on a latency axis the speed-up over fp32 as a second scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys))] or [(0, 0)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5.2 * len(pairs), 4.6), squeeze=False)
    front, rest = df[df["pareto"]], df[~df["pareto"]]
    marked = df[df["trial"].isin(list(marks))]
    base = fp32_row(df) if len(df) else None
    for ax, (i, j) in zip(axes[0], pairs, strict=True):
        kx, ky = keys[i], keys[j]
        ax.scatter(rest[kx], rest[ky], c="#9aa5b1", s=22, label="other trials")
        ax.scatter(front[kx], front[ky], c="#d6336c", s=30, label="Pareto front")
        ax.scatter(marked[kx], marked[ky], marker="*", s=180, c="#f59f00", edgecolors="black", linewidths=0.8,
                   label="fp32 / suggested", zorder=3)
        ax.set_xlabel(_axis_title(kx, goals[i]))
        ax.set_ylabel(_axis_title(ky, goals[j]))
        for key, axis in ((kx, ax.xaxis), (ky, ax.yaxis)):
            if key.split("@")[0] in ("size_bytes", "compressed_bytes"):
                axis.set_major_formatter(_bytes_formatter())
        if base is not None and kx.startswith("latency_") and _positive(base.get(kx)):
            ref = float(base[kx])
            top = ax.secondary_xaxis("top", functions=(lambda v, r=ref: r / np.maximum(v, 1e-9),
                                                       lambda v, r=ref: r / np.maximum(v, 1e-9)))
            from matplotlib.ticker import MaxNLocator

            top.xaxis.set_major_locator(MaxNLocator(5))
            top.set_xlabel("speed-up vs fp32 (its own timing)")
        ax.grid(alpha=0.3)
        _place_labels(fig, ax, [(marks[int(r["trial"])], float(r[kx]), float(r[ky])) for _, r in marked.iterrows()])
    axes[0][0].legend(fontsize=8, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


_OFFSETS = [(6, 6), (6, -14), (-6, 6), (-6, -14), (6, 18), (-6, 18), (6, -26), (-6, -26), (14, 0), (-14, 0)]


def _place_labels(fig, ax, labels: list[tuple[str, float, float]]) -> None:
    """Annotate each point, trying offsets until the label overlaps no label placed before it."""
    renderer = fig.canvas.get_renderer()
    placed = []
    for text, x, y in labels:
        ann = None
        for dx, dy in _OFFSETS:
            if ann is not None:
                ann.remove()
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=7,
                              ha="left" if dx >= 0 else "right",
                              bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8})
            box = ann.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in placed):
                break
        placed.append(ann.get_window_extent(renderer))


def _num(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    v = float(v)
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def fp32_row(df):
    """The completed fp32 baseline's row of a trials frame, or None."""
    base = df[(df["baseline"] == "fp32") & (df["state"] == "COMPLETE")] if len(df) else df
    return base.iloc[0] if len(base) else None


def paired(r, key: str) -> bool:
    """Whether row ``r``'s latency ``key`` comes from a paired timing (``search.paired``: the trial timed
    in turns with fp32 in its own request; ``latency_ratio@dev`` is set)."""
    return _positive(r.get("latency_ratio@" + key.partition("@")[2]))


def speedup_vs_fp32(r, base, key: str) -> tuple[float | None, bool]:
    """(speed-up of row ``r`` over the fp32 row ``base`` on latency ``key``, whether it comes from the
    side-by-side timings). Paired trials (:func:`paired`): from their paired values, the numbers the front
    was chosen on (the side-by-side timing is then a check, :func:`side_by_side.order_check`); else from
    the side-by-side timings when both were timed so, else from each trial's own timing; None: not timed."""
    if base is None:
        return None, False
    sbs = "sbs_" + key
    if paired(r, key) and paired(base, key) and _positive(r.get(key)) and _positive(base.get(key)):
        return float(base[key]) / float(r[key]), False
    if _positive(r.get(sbs)) and _positive(base.get(sbs)):
        return float(base[sbs]) / float(r[sbs]), True
    if _positive(r.get(key)) and _positive(base.get(key)):
        return float(base[key]) / float(r[key]), False
    return None, False


def front_note(df, keys: Sequence[str], *, sweep: str, url: str, config: str, device: str | None,
               goals: Sequence[str] | None = None, timing: Sequence[str] = ()) -> str:
    """The sweep parent run's description (markdown): where to look, the suggestions, the front (numbers
    rounded; the speed-up over fp32, ``=`` where timed side by side; ties within noise), the ``timing``
    lines (paired timing, the side-by-side check: ``paired.timing_lines``) and the command that deploys
    each member."""
    goals = list(goals) if goals is not None else ["max" if _is_accuracy(k.split("@")[0]) else "min" for k in keys]
    front = df[df["pareto"]].sort_values(keys[0], ascending=False) if len(df) else df
    base = fp32_row(df)
    lat = latency_key(keys) if base is not None else None
    ties = noise_ties(df, keys) if len(df) else {}
    head = ["trial", "label", *keys] + ([f"speed-up vs fp32 ({lat.split('@')[1]})"] if lat else []) + ["ties"]
    lines = [f"**edgetune sweep `{sweep}`**: {len(df)} trials, {len(front)} on the Pareto front.", "",
             f"[Open the front as a table of runs]({_in_ui(url)}) (its Chart view plots the objectives); "
             "`pareto.png` / `pareto.html` in this run's artifacts plot every trial, the front in colour.", ""]
    picks = suggestions(df, keys, goals) if len(df) else []
    if picks:
        lines.append("Suggestions:")
        lines.append("")
        for p in picks:
            cmd = f" `edgetune deploy {config} --trial {p['trial']} --device {device}`" if device else ""
            lines.append(f"- **{p['kind']}**: trial {p['trial']} ({p['label']}), {p['why']}.{cmd}")
        lines.append("")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in front.iterrows():
        cells = [str(r["trial"]), str(r.get("label") or "")] + [_num(r.get(k)) for k in keys]
        if lat:
            x, sbs = speedup_vs_fp32(r, base, lat)
            cells.append(f"{x:.2f}x" + ("=" if sbs else "") if x else "")
        cells.append(", ".join(f"#{t}" for t in ties.get(int(r["trial"]), [])))
        lines.append("| " + " | ".join(cells) + " |")
    if timing:
        lines += [""] + [f"- {t}" for t in timing]
    lines += ["", "ties: members that differ from this one by no more than the noise on every measured objective "
              "(accuracy: one standard error of the difference over images; p50: overlapping 95% CIs)."]
    if device and len(front):
        lines += ["", "Deploy a member:", "", "```"]
        lines += [f"edgetune deploy {config} --trial {r['trial']} --device {device}" for _, r in front.iterrows()]
        lines.append("```")
    return "\n".join(lines)


def _in_ui(url: str) -> str:
    """An MLflow UI address as a link inside the UI (``#/experiments/...``): it works from any host."""
    return url[url.index("#/"):] if "#/" in url else url


def fastest_close_to_fp32(df, keys: Sequence[str], *, within: float = 0.01) -> dict | None:
    """The front member with the largest speed-up over fp32 (:func:`speedup_vs_fp32`) whose accuracy is
    within ``within`` (1 mAP / top-1 point) of fp32's; None when the objectives have no accuracy or latency,
    or no member qualifies."""
    acc, lat = accuracy_key(keys), latency_key(keys)
    base = fp32_row(df)
    if acc is None or lat is None or base is None:
        return None
    best = None
    for _, r in df[df["pareto"] & (df["baseline"] != "fp32")].iterrows():
        speedup, sbs = speedup_vs_fp32(r, base, lat)
        if speedup is None or speedup <= 1.0 or r[acc] < base[acc] - within:
            continue
        if best is None or speedup > best["speedup"]:
            best = {"trial": int(r["trial"]), "label": r.get("label") or "", "speedup": speedup,
                    "accuracy": float(r[acc]), "fp32_accuracy": float(base[acc]), "metric": acc, "side_by_side": sbs,
                    "paired": paired(r, lat)}
    return best


def accuracy_key(keys: Sequence[str]) -> str | None:
    """The first accuracy objective (``map50_95@dev``, ``top1@dev``, ...)."""
    return next((k for k in keys if _is_accuracy(k.split("@")[0])), None)


def latency_key(keys: Sequence[str]) -> str | None:
    """The first model-only median latency objective (``latency_p50_ms@dev``)."""
    return next((k for k in keys if k.startswith("latency_p50_ms@")), None)


def within_noise(a, b, key: str) -> bool:
    """Whether rows ``a`` and ``b`` differ on ``key`` by no more than its measurement noise: accuracy
    within one standard error of the difference (sqrt(se_a^2 + se_b^2), the standard errors over images),
    a median latency whose 95% CIs overlap (side by side when both were timed so). False when the noise
    of ``key`` is not known."""
    from edgetune.objectives import SE_SUFFIX

    metric, _, device = key.partition("@")
    if _is_accuracy(metric):
        se_key = f"{metric}{SE_SUFFIX}@{device}"
        sa, sb = a.get(se_key), b.get(se_key)
        if sa is None or sb is None or sa != sa or sb != sb:
            return False
        return abs(float(a[key]) - float(b[key])) <= float(np.hypot(sa, sb))
    if metric == "latency_p50_ms":
        both_sbs = (_ci(a, key, sbs=True) is not None and _ci(b, key, sbs=True) is not None
                    and not (paired(a, key) and paired(b, key)))
        ca, cb = _ci(a, key, sbs=both_sbs), _ci(b, key, sbs=both_sbs)
        return ca is not None and cb is not None and ca[0] <= cb[1] and cb[0] <= ca[1]
    return False


def noise_ties(df, keys: Sequence[str]) -> dict[int, list[int]]:
    """Front member -> the other members it cannot be told from on any measured objective: every
    objective measured on a device (accuracy, latency) is within its noise (:func:`_within_noise`); the
    exact ones (size, params) may differ, which is then the reason to prefer one of them."""
    from edgetune.objectives import get_metric

    front = [r for _, r in df[df["pareto"]].iterrows()] if len(df) else []
    measured = [k for k in keys if get_metric(k.split("@")[0]).on_device]
    ties: dict[int, list[int]] = {}
    if not measured:
        return ties
    for i, a in enumerate(front):
        for b in front[i + 1:]:
            if all(within_noise(a, b, k) for k in measured):
                ties.setdefault(int(a["trial"]), []).append(int(b["trial"]))
                ties.setdefault(int(b["trial"]), []).append(int(a["trial"]))
    return {k: sorted(v) for k, v in ties.items()}


def _latency_of(r, key: str, use_sbs: bool) -> float | None:
    v = r.get("sbs_" + key) if use_sbs else r.get(key)
    return float(v) if _positive(v) else None


def knee_point(df, keys: Sequence[str], goals: Sequence[str]) -> dict | None:
    """The front's knee in the accuracy-latency plane: with both axes scaled to [0, 1] over the front, the
    member farthest from the straight line between the most accurate and the fastest member, on the good
    side of it (the most accuracy kept per unit of speed given up). None: fewer than 3 members, or none
    off the line."""
    acc, lat = accuracy_key(keys), latency_key(keys)
    if acc is None or lat is None:
        return None
    rows = [r for _, r in df[df["pareto"]].iterrows() if r.get(acc) is not None]
    use_sbs = bool(rows) and all(_positive(r.get("sbs_" + lat)) and not paired(r, lat) for r in rows)
    pts = [(r, _latency_of(r, lat, use_sbs), float(r[acc])) for r in rows]
    pts = [p for p in pts if p[1] is not None]
    if len(pts) < 3:
        return None
    x = np.array([p[1] for p in pts])
    y = np.array([-p[2] if goals[list(keys).index(acc)] == "max" else p[2] for p in pts])  # both: lower is better
    xn = (x - x.min()) / (np.ptp(x) or 1.0)
    yn = (y - y.min()) / (np.ptp(y) or 1.0)
    a, b = int(np.argmin(xn)), int(np.argmin(yn))  # fastest, most accurate
    (x0, y0), (x1, y1) = (xn[a], yn[a]), (xn[b], yn[b])
    norm = float(np.hypot(x1 - x0, y1 - y0))
    if norm == 0:
        return None
    def cross(qx, qy):
        return (x1 - x0) * (qy - y0) - (y1 - y0) * (qx - x0)

    # signed distance to the line: positive on the side of the ideal corner (0, 0), better on both axes
    dist = cross(xn, yn) * np.sign(cross(0.0, 0.0)) / norm
    k = int(np.argmax(dist))
    if dist[k] <= 1e-9 or k in (a, b):
        return None
    r = pts[k][0]
    return {"trial": int(r["trial"]), "label": r.get("label") or "", "distance": float(dist[k])}


def smallest_member(df) -> dict | None:
    """The smallest front member (ONNX bytes) that meets the sweep's constraints."""
    rows = df[df["pareto"] & (df["feasible"] != False)] if len(df) else df  # noqa: E712 (None: no constraints)
    rows = rows[rows["size_bytes"].notna()] if "size_bytes" in rows else rows.iloc[0:0]
    if not len(rows):
        return None
    r = rows.loc[rows["size_bytes"].idxmin()]
    return {"trial": int(r["trial"]), "label": r.get("label") or "", "size_bytes": float(r["size_bytes"])}


def suggestions(df, keys: Sequence[str], goals: Sequence[str]) -> list[dict]:
    """The three points a user would look at first: ``fastest`` (the largest speed-up over fp32 within
    1 accuracy point of it), ``knee`` (:func:`knee_point`) and ``smallest`` (:func:`smallest_member`).
    Each: ``{"kind", "trial", "label", "why"}`` plus what made it; missing ones are left out (a trial can
    be more than one)."""
    out = []
    if (f := fastest_close_to_fp32(df, keys)) is not None:
        how = "timed side by side" if f["side_by_side"] else (
            "paired with fp32 in its own measurement" if f["paired"] else "from its trial's timing")
        out.append({**f, "kind": "fastest", "why": f"{f['speedup']:.2f}x faster than fp32 ({how}) at {f['metric']} "
                                                    f"{f['accuracy']:.4f} vs {f['fp32_accuracy']:.4f}"})
    if (k := knee_point(df, keys, goals)) is not None:
        out.append({**k, "kind": "knee", "why": "the knee of the accuracy-latency front (most accuracy kept per "
                                                "unit of speed given up)"})
    if (sm := smallest_member(df)) is not None:
        out.append({**sm, "kind": "smallest", "why": f"the smallest that meets the constraints "
                                                      f"({_size(sm['size_bytes'])})"})
    return out


def _size(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if abs(n) >= 1e6 else f"{n / 1e3:.0f} KB"
