"""The sweep's Pareto front from the trial records, and its reports (csv, interactive html, png)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgetune.objectives.pareto import hypervolume, pareto_ranks, to_minimization
from edgetune.search.records import RECORD_ATTR

__all__ = ["front_ranks", "sweep_hypervolume", "write_reports", "front_note", "fastest_close_to_fp32", "fp32_row",
           "speedup_vs_fp32"]


def _complete(trials) -> list:
    return [t for t in trials if t.state.name == "COMPLETE" and (t.user_attrs.get(RECORD_ATTR) or {}).get("values")]


def _matrix(trials, keys: Sequence[str]) -> tuple[list, np.ndarray]:
    rows, mat = [], []
    for t in trials:
        vals = t.user_attrs[RECORD_ATTR]["values"]
        if all(k in vals and vals[k] is not None for k in keys):
            rows.append(t)
            mat.append([vals[k] for k in keys])
    return rows, np.asarray(mat, float).reshape(-1, len(keys))


def front_ranks(trials, keys: Sequence[str], goals: Sequence[str]) -> dict[int, int]:
    """trial number -> non-domination rank among COMPLETE feasible trials (0 = Pareto front)."""
    feasible = [t for t in _complete(trials) if t.user_attrs[RECORD_ATTR].get("feasible", True)]
    rows, mat = _matrix(feasible, keys)
    if not rows:
        return {}
    ranks = pareto_ranks(to_minimization(mat, goals))
    return {t.number: int(r) for t, r in zip(rows, ranks, strict=True)}


def sweep_hypervolume(trials, keys: Sequence[str], goals: Sequence[str], baseline: dict[str, float] | None) -> float:
    if not baseline or not all(k in baseline for k in keys):
        return 0.0
    feasible = [t for t in _complete(trials) if t.user_attrs[RECORD_ATTR].get("feasible", True)]
    _, mat = _matrix(feasible, keys)
    return hypervolume(mat, goals, [baseline[k] for k in keys])


def write_reports(df, keys: Sequence[str], goals: Sequence[str], outdir: Path, *, title: str) -> dict[str, Path]:
    """pareto.csv (all trials, front first), pareto.html (plotly: 2-D projections + 3-D), pareto.png."""
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": outdir / "pareto.csv", "html": outdir / "pareto.html", "png": outdir / "pareto.png"}
    ordered = df.sort_values(["pareto", "trial"], ascending=[False, True])
    ordered.to_csv(paths["csv"], index=False)
    ok = df[df["state"] == "COMPLETE"].dropna(subset=list(keys))
    _plotly(ok, keys, goals, paths["html"], title)
    _png(ok, keys, goals, paths["png"], title)
    return paths


def _hover(df) -> list[str]:
    out = []
    for _, r in df.iterrows():
        out.append(f"trial {r['trial']}<br>{r.get('label') or ''}<br>int8 layers {r.get('n_int8_layers')}, "
                   f"params kept {r.get('params_kept')}")
    return out


def _plotly(df, keys, goals, path: Path, title: str) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    pairs = [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys))]
    specs = [[{"type": "xy"} for _ in pairs] + ([{"type": "scene"}] if len(keys) >= 3 else [])]
    titles = [f"{keys[j]} vs {keys[i]}" for i, j in pairs] + (["3-D"] if len(keys) >= 3 else [])
    fig = make_subplots(rows=1, cols=len(specs[0]), specs=specs, subplot_titles=titles)
    front, rest = df[df["pareto"]], df[~df["pareto"]]
    for c, (i, j) in enumerate(pairs, start=1):
        for part, name, color in ((rest, "other trials", "#9aa5b1"), (front, "Pareto front", "#d6336c")):
            fig.add_trace(go.Scatter(x=part[keys[i]], y=part[keys[j]], mode="markers", name=name,
                                     marker={"color": color, "size": 9}, text=_hover(part), hoverinfo="text+x+y",
                                     showlegend=c == 1), row=1, col=c)
        fig.update_xaxes(title_text=f"{keys[i]} ({goals[i]})", row=1, col=c)
        fig.update_yaxes(title_text=f"{keys[j]} ({goals[j]})", row=1, col=c)
    if len(keys) >= 3:
        for part, name, color in ((rest, "other trials", "#9aa5b1"), (front, "Pareto front", "#d6336c")):
            fig.add_trace(go.Scatter3d(x=part[keys[0]], y=part[keys[1]], z=part[keys[2]], mode="markers", name=name,
                                       marker={"color": color, "size": 5}, text=_hover(part), showlegend=False),
                          row=1, col=len(specs[0]))
    fig.update_layout(title=title, height=520, width=max(700, 480 * len(specs[0])))
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)


def _png(df, keys, goals, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [(i, j) for i in range(len(keys)) for j in range(i + 1, len(keys))] or [(0, 0)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4.2), squeeze=False)
    front, rest = df[df["pareto"]], df[~df["pareto"]]
    for ax, (i, j) in zip(axes[0], pairs, strict=True):
        ax.scatter(rest[keys[i]], rest[keys[j]], c="#9aa5b1", s=22, label="other trials")
        ax.scatter(front[keys[i]], front[keys[j]], c="#d6336c", s=30, label="Pareto front")
        for _, r in front.iterrows():
            ax.annotate(str(r["trial"]), (r[keys[i]], r[keys[j]]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel(f"{keys[i]} ({goals[i]})")
        ax.set_ylabel(f"{keys[j]} ({goals[j]})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _num(v) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    v = float(v)
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def fp32_row(df):
    """The completed fp32 baseline's row of a trials frame, or None."""
    base = df[(df["baseline"] == "fp32") & (df["state"] == "COMPLETE")] if len(df) else df
    return base.iloc[0] if len(base) else None


def _positive(v) -> bool:
    return v is not None and v == v and v > 0


def speedup_vs_fp32(r, base, key: str) -> tuple[float | None, bool]:
    """(speed-up of row ``r`` over the fp32 row ``base`` on latency ``key``, whether it comes from the
    side-by-side timings): those when both were timed so, else each trial's own timing; None: not timed."""
    if base is None:
        return None, False
    sbs = "sbs_" + key
    if _positive(r.get(sbs)) and _positive(base.get(sbs)):
        return float(base[sbs]) / float(r[sbs]), True
    if _positive(r.get(key)) and _positive(base.get(key)):
        return float(base[key]) / float(r[key]), False
    return None, False


def front_note(df, keys: Sequence[str], *, sweep: str, url: str, config: str, device: str | None) -> str:
    """The sweep parent run's description (markdown): where to look, the front (numbers rounded; the
    speed-up over fp32, ``=`` where timed side by side) and the command that deploys each member."""
    front = df[df["pareto"]].sort_values(keys[0], ascending=False) if len(df) else df
    base = fp32_row(df)
    lat = next((k for k in keys if k.startswith("latency_p50_ms@")), None) if base is not None else None
    head = ["trial", "label", *keys] + ([f"speed-up vs fp32 ({lat.split('@')[1]})"] if lat else [])
    lines = [f"**edgetune sweep `{sweep}`**: {len(df)} trials, {len(front)} on the Pareto front.", "",
             f"[Open the front as a table of runs]({url}) (filter `tags.pareto = 'true'`); `pareto.html` in this "
             "run's artifacts is the interactive plot.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in front.iterrows():
        cells = [str(r["trial"]), str(r.get("label") or "")] + [_num(r.get(k)) for k in keys]
        if lat:
            x, sbs = speedup_vs_fp32(r, base, lat)
            cells.append(f"{x:.2f}x" + ("=" if sbs else "") if x else "")
        lines.append("| " + " | ".join(cells) + " |")
    if device and len(front):
        lines += ["", "Deploy a member:", "", "```"]
        lines += [f"edgetune deploy --sweep {config} --trial {r['trial']} --to {device}" for _, r in front.iterrows()]
        lines.append("```")
    return "\n".join(lines)


def fastest_close_to_fp32(df, keys: Sequence[str], *, within: float = 0.01) -> dict | None:
    """The front member with the largest speed-up over fp32 (:func:`speedup_vs_fp32`) whose accuracy is
    within ``within`` (1 mAP / top-1 point) of fp32's; None when the objectives have no accuracy or latency,
    or no member qualifies."""
    acc = next((k for k in keys if k.split("@")[0] in ("map50_95", "map50", "top1")), None)
    lat = next((k for k in keys if k.startswith("latency_p50_ms@")), None)
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
                    "accuracy": float(r[acc]), "fp32_accuracy": float(base[acc]), "metric": acc, "side_by_side": sbs}
    return best
