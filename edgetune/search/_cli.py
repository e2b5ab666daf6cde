"""``edgetune search CONFIG`` and ``edgetune front --config CONFIG``."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register", "front_table"]


def register(app: typer.Typer) -> None:
    app.command("search")(search_cmd)
    app.command("front")(front_cmd)


def _fmt(v, nd=4) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:.{nd}f}" if isinstance(v, float) and abs(v) < 1000 else f"{v:,.0f}"


def _header(key: str) -> str:
    """The display name (an accepted alias) over the device: two short lines, so 80 columns fit."""
    metric, _, device = key.partition("@")
    short = {"map50_95": "mAP50-95", "map50": "mAP50", "latency_p50_ms": "p50 ms", "latency_p90_ms": "p90 ms",
             "e2e_latency_p50_ms": "e2e p50 ms", "size_bytes": "size KiB", "compressed_bytes": "zstd KiB",
             "peak_mem_mb": "peak MB", "model_mem_mb": "model MB", "run_mem_mb": "run MB", "energy_mj": "mJ/inf",
             "top1": "top-1", "top5": "top-5"}.get(metric, metric)
    return f"{short}\n{device}" if device else short


def _cell(key: str, v) -> str:
    if v is None or v != v:
        return "-"
    if key.startswith(("size_bytes", "compressed_bytes")):
        return f"{v / 1024:,.0f}"
    return _fmt(v, 2 if "_ms" in key or "mem" in key else 4)


def _present(v) -> bool:
    return v is not None and v == v and v != ""  # not None / NaN (pandas) / empty


def _speedup(r, base_row, key: str) -> str:
    """Speed-up of row ``r`` against fp32 on ``key``'s device, marked ``=`` when timed side by side."""
    from edgetune.search.front import speedup_vs_fp32

    x, sbs = speedup_vs_fp32(r, base_row, key)
    return "-" if x is None else f"{x:.2f}x" + ("=" if sbs else "")


def _picks(df, keys: list[str], goals: list[str]) -> dict[int, list[str]]:
    """trial -> the suggestions it is (``fastest``, ``knee``, ``smallest``)."""
    from edgetune.search.front import suggestions

    picks: dict[int, list[str]] = {}
    for p in suggestions(df, keys, goals):
        picks.setdefault(p["trial"], []).append(p["kind"])
    return picks


def with_table_columns(df, keys: list[str], goals: list[str]):
    """``df`` with the table's derived columns, for ``--csv`` / ``--json``: ``speedup@<device>`` (against fp32
    on that device) and ``speedup_side_by_side@<device>`` (True when both were timed side by side at the end),
    ``speedup_paired@<device>`` (True when both were timed paired with fp32, ``search.paired_timing``),
    ``size_vs_fp32``, ``ties`` (the trials tied within noise, e.g. ``"4 37"``) and ``pick`` (``fastest``,
    ``knee``, ``smallest``: the names ``deploy --pick`` takes)."""
    from edgetune.search.front import fp32_row, noise_ties, paired, speedup_vs_fp32

    out = df.copy()
    base_row = fp32_row(df)
    for k in [k for k in keys if str(k).startswith("latency_p50_ms@")]:
        dev = k.split("@")[1]
        pairs = [speedup_vs_fp32(r, base_row, k) for _, r in df.iterrows()]
        out[f"speedup@{dev}"] = [None if x is None else round(x, 4) for x, _ in pairs]
        out[f"speedup_side_by_side@{dev}"] = [bool(sbs) for _, sbs in pairs]
        out[f"speedup_paired@{dev}"] = [x is not None and base_row is not None and paired(r, k) and paired(base_row, k)
                                        for (x, _), (_, r) in zip(pairs, df.iterrows(), strict=True)]
    base_size = base_row.get("size_bytes") if base_row is not None else None
    out["size_vs_fp32"] = [round(r["size_bytes"] / base_size, 4) if base_size and r.get("size_bytes") else None
                           for _, r in df.iterrows()]
    ties = noise_ties(df, keys)
    out["ties"] = [" ".join(str(t) for t in ties.get(int(n), [])) for n in df["trial"]]
    picks = _picks(df, keys, goals)
    out["pick"] = [" ".join(picks.get(int(n), [])) for n in df["trial"]]
    return out


def front_table(df, keys: list[str], goals: list[str], *, title: str, only_front: bool = True):
    """A rich table of the front (or all trials): the objectives, speed-up and size against fp32, the
    members each is tied with (within noise) and the three suggestions. Fits 80 columns: labels wrap,
    numbers never do. A trial measured while its device was throttled, or whose recovery ``budget_s`` cut
    short, says so after its label. With every trial (``only_front=False``), the model's own memory on each
    device (``model_mem_mb``, the runtime session after load) is a column too."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from edgetune.search.front import fp32_row, noise_ties, paired

    base_row = fp32_row(df)
    rows = df[df["pareto"]] if only_front else df
    lat_keys = [k for k in keys if str(k).startswith("latency_p50_ms@")]
    sbs = any(f"sbs_{k}" in df.columns for k in lat_keys)
    pair = base_row is not None and any(paired(base_row, k) for k in lat_keys)
    ties = noise_ties(df, keys)
    picks = _picks(df, keys, goals)
    notes = []  # short lines: a caption is cut, not wrapped, at the console's width
    if pair:
        notes += ["p50, x: each trial timed in turns with fp32 in its own", "     request: p50 = that ratio x fp32's "
                  "p50 (own", "     timing: own_latency_p50_ms in --csv)"]
    elif sbs:
        notes += ["x= : timed side by side with fp32 at the end of the sweep", "     (plain x: each trial's own timing)"]
    notes += ["ties: same accuracy and p50 within noise (1 SE of the mAP", "      difference, overlapping 95% CIs): "
              "prefer the smaller", "pick: fastest within 1 point of fp32 / knee of the accuracy-", "      latency "
              "front / smallest that meets the constraints"]
    table = Table(title=title, title_justify="left", caption="\n".join(notes), caption_justify="left",
                  box=box.SIMPLE_HEAD, padding=(0, 1), collapse_padding=True, pad_edge=False,
                  show_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("config", overflow="fold", min_width=12, ratio=1)
    for k in keys:
        table.add_column(_header(k), justify="right", no_wrap=True)
    for k in lat_keys:
        table.add_column(f"speed-up\n{k.split('@')[1]}", justify="right", no_wrap=True)
    mem_keys = [] if only_front else [c for c in df.columns if str(c).startswith("model_mem_mb@") and c not in keys]
    for k in mem_keys:
        table.add_column(_header(k), justify="right", no_wrap=True)
    table.add_column("size\n/fp32", justify="right", no_wrap=True)
    table.add_column("ties", overflow="fold", max_width=7)
    table.add_column("pick", no_wrap=True, min_width=8)  # "smallest" whole
    if not only_front:
        table.add_column("state", no_wrap=True)
    for _, r in rows.sort_values(keys[0], ascending=goals[0] == "min").iterrows():
        n = int(r["trial"])
        label = str(r.get("label") or ("fp32" if r.get("baseline") == "fp32" else ""))
        if _present(r.get("throttled")):
            label += f" [THROTTLED {r['throttled']}]"
        if _present(r.get("recovery_cut")):
            label += f" [recovery cut by budget_s: {r['recovery_cut']}]"
        if r.get("int8_mismatch") is True:
            label += " [int8 not as asked: below]"
        cells = [str(n), escape(label)]  # "[...]" is text, not rich markup
        cells += [_cell(k, r.get(k)) for k in keys]
        cells += [_speedup(r, base_row, k) for k in lat_keys]
        cells += [_cell(k, r.get(k)) for k in mem_keys]
        ok = base_row is not None and r.get("size_bytes") and base_row.get("size_bytes")
        cells.append(f"{r['size_bytes'] / base_row['size_bytes']:.2f}x" if ok else "-")
        tied = ties.get(n, [])
        cells.append(" ".join(f"#{t}" for t in tied[:3]) + (f" +{len(tied) - 3}" if len(tied) > 3 else ""))
        cells.append("\n".join(picks.get(n, [])))  # one per line: the column never wraps
        if not only_front:
            cells.append(("front " if r["pareto"] else "") + str(r["state"]).lower())
        table.add_row(*cells)
    return table


def progress_columns() -> list:
    """The sweep's progress line: the count, a short bar, elapsed and ETA first (they fit 80 columns), then
    what runs now or the last result, cut with an ellipsis where the terminal ends."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.table import Column

    def fixed(width: int) -> Column:
        return Column(min_width=width, no_wrap=True)

    return [TextColumn("[bold]trials", table_column=fixed(6)), MofNCompleteColumn(table_column=fixed(7)),
            BarColumn(bar_width=6), TimeElapsedColumn(table_column=fixed(7)), TextColumn("ETA", table_column=fixed(3)),
            TimeRemainingColumn(table_column=fixed(7)), TextColumn("{task.fields[status]}", markup=False)]


STATUS_AT = 44  # the columns before the status take this much of the line


def fit_status(text: str, width: int) -> str:
    """``text`` cut to what is left of a ``width``-column line after the count, bar, elapsed and ETA."""
    room = max(12, width - STATUS_AT)
    return text if len(text) <= room else text[: room - 1] + "…"


def measured_line(values: dict[str, float], keys: list[str], *, compact: bool = False) -> str:
    """A trial's objectives in a few words: ``mAP50-95 0.7413, p50 2.20 ms, 713 KiB``; ``compact`` (the
    progress line): ``mAP50-95 0.741, 2.20 ms, 713 KiB``."""
    parts = []
    for k in keys:
        if values.get(k) is None:
            continue
        name, _, unit = _header(k).split("\n")[0].rpartition(" ")
        if unit not in ("ms", "KiB", "MB", "mJ/inf"):
            name, unit = f"{name} {unit}".strip(), ""
        value = _cell(k, values[k])
        if compact and unit:
            name = ""
        elif compact and isinstance(values[k], float) and abs(values[k]) < 10:
            value = f"{values[k]:.3f}"
        parts.append(" ".join(p for p in ("" if name == "size" else name, value, unit) if p))
    return ", ".join(parts)


def print_timing_lines(console, cfg, df, keys: list[str]) -> None:

    from edgetune.search.paired import timing_lines

    warnings, notes = timing_lines(df, keys, max_spread=cfg.search.max_paired_spread)
    for line in notes:
        console.print(line, markup=False, soft_wrap=True)
    for line in warnings:
        console.print(f"warning: {line}", style="yellow", markup=False, soft_wrap=True)


def venv_command(name: str) -> str:
    """How to type ``name`` in a new shell: bare when it is on PATH as this interpreter's, else the path of
    the script beside this interpreter (``.venv/bin/mlflow`` after ``make demo``, with no venv activated)."""
    import os
    import shutil
    import sys

    script = Path(sys.executable).parent / name
    if not script.is_file() or shutil.which(name) == str(script):
        return name
    rel = os.path.relpath(script)
    return rel if not rel.startswith("..") else str(script)


def _deploy_hint(cfg, df, keys, goals, *, config: Path, local: bool) -> str:
    """The suggestions (fastest within 1 accuracy point of fp32, knee, smallest) and the commands that
    deploy the first (for --local sweeps: with the command that starts the agent the sweep's own local
    agent stood for)."""
    from edgetune.search.front import suggestions

    picks = suggestions(df, keys, goals)
    device = cfg.devices[0].name if cfg.devices else None
    if not picks or device is None:
        return ""
    lines = ["Suggested:"] + [f"  {p['kind']:<8} trial {p['trial']} ({p['label']}): {p['why']}" for p in picks]
    first = picks[0]
    lines.append(f"Deploy the {first['kind']} one (another: change --trial):")
    if local:
        activate = venv_command("activate")
        lines.append(("  " + (f"source {activate}; " if activate != "activate" else "")) +
                     "export EDGETUNE_AGENT_TOKEN=$(python -c 'import secrets; print(secrets.token_hex(16))')")
        runtimes = f"--runtime {','.join(cfg.space.runtime)} " if cfg.space.runtime else ""  # what the sweep searched
        lines.append(f"  {venv_command('edgetune')} agent serve --port 8765 --kind local-cpu --name {device} "
                     f"{runtimes}> agent.log 2>&1 &")
    lines.append(f"  {venv_command('edgetune')} deploy {_short_path(config)} --device {device} --trial {first['trial']}")
    return "\n".join(lines)


def _short_path(path: Path) -> str:
    """``path`` relative to the current directory when it lies below it (what a user would type)."""
    import os

    rel = os.path.relpath(Path(path).resolve())
    return rel if not rel.startswith("..") else str(path)


def _open_hint(cfg, url: str | None = None) -> str:
    """Where to review the sweep: the ``mlflow ui`` command that serves the store at the link's address (none
    when the store is a tracking server: it serves its UI), then the link (:meth:`Tracker.review_url`)."""
    from edgetune.search.tracking import UI_ENV, ui_base, ui_serve_args

    uri = cfg.tracking.uri
    exp = cfg.tracking.experiment or cfg.name
    base = url.split("/#/")[0] if url else ui_base(uri)
    args = ui_serve_args(uri, base)
    serve = (f"Review it in MLflow: serve the store with\n  {venv_command('mlflow')} {args}\nthen open" if args
             else f"Review it in MLflow (the tracking server {base} serves it):")
    where = f"(another address: set {UI_ENV}=http://HOST:PORT)"
    if url:
        return (f"{serve}\n  {url}\n(the front as a table with its objectives as columns; the links above it open "
                "all trials as a scatter, the front in red, and the parent run "
                f"'sweep-{cfg.name}': the front table, the deploy commands, pareto.png, pareto.html) {where}")
    return (f"{serve}\n  {base}\nexperiment '{exp}', filter  tags.pareto = 'true'  (the parent run 'sweep-{cfg.name}' "
            f"holds pareto.html / pareto.csv / pareto.png) {where}")


def search_cmd(
    config_arg: Path = typer.Argument(None, metavar="CONFIG", show_default=False,
                                      help="Sweep YAML (see configs/demo.yaml; or --config)."),
    config: Path = typer.Option(None, "--config", "-c", help="The sweep YAML."),
    trials: int = typer.Option(None, "--trials", help="Total trials (overrides search.trials); a rerun continues."),
    workdir: Path = typer.Option(Path(".edgetune"), help="Artifacts cache and sweep scratch space."),
    local: bool = typer.Option(False, "--local", help="Start a local-cpu agent (pinned to one core) for each "
                               "entry of `devices:` and measure there (the demo; no board needed)."),
    force_resume: bool = typer.Option(False, "--force-resume", help="Resume the study even though its config "
                                      "(space, objectives, constraints, model, data) changed since it started."),
) -> None:
    """Run (or resume) a sweep: compress candidates, measure them on the devices, log to MLflow."""
    from edgetune.cli import sweep_file

    run_search(sweep_file(config_arg, config), trials=trials, workdir=workdir, local=local, force_resume=force_resume)


def run_search(config: Path, *, trials: int | None, workdir: Path, local: bool, force_resume: bool = False) -> None:
    import contextlib

    from edgetune.cli import console
    from edgetune.config import check_paths, load_sweep_config

    stack = contextlib.ExitStack()
    agents = None
    if local:
        from edgetune.device_agents.local import start_local_agents
        from edgetune.search.wiring import agents_needed

        cfg = load_sweep_config(config)
        check_paths(cfg, config_path=config)  # a wrong path fails now, before agents start
        n = max(1, agents_needed(cfg))
        with console.status(f"starting {n} local agent(s) ..."):
            agents = stack.enter_context(start_local_agents(n, threads=1, runtime=",".join(cfg.space.runtime) or "ort"))
        console.print("local agent(s): " + ", ".join(f"{a.name} {a.url} (cpus {a.cpus})" for a in agents.agents))
        if cfg.search.overlap == "on":  # compression beside measurement: keep it off the agents' cores
            from edgetune.search.wiring import isolate_for_overlap

            if (kept := isolate_for_overlap(cfg, agents)) is not None:
                console.print(f"controller pinned to cpus {kept}: it compresses there while the agents measure")
            else:
                console.print("[yellow]search.overlap is on, but the local agents take every core: compression "
                              "will run on the cores they measure on (their paired timings take most of that "
                              "out)[/yellow]")
    with stack:
        _search(config, trials=trials, workdir=workdir, agents=agents, force_resume=force_resume)


def _search(config: Path, *, trials: int | None, workdir: Path, agents, force_resume: bool = False) -> None:
    from rich.markup import escape
    from rich.progress import Progress

    from edgetune.cli import console
    from edgetune.search.wiring import prepare_sweep

    with console.status("preparing: config, data, model, search space, devices ..."):
        sweep, space, cfg = prepare_sweep(config, workdir=workdir, local_agents=agents, force_resume=force_resume)
    total = trials or cfg.search.trials
    console.print(f"sweep {cfg.name}: {len(space.dimensions)} search dimensions "
                  f"(10^{space.size_log10:.1f} points), {total} trials, sampler {cfg.search.sampler}, "
                  f"devices {', '.join(d.name for d in cfg.devices)}")
    with Progress(*progress_columns(), console=console, transient=False) as progress:
        task = progress.add_task("sweep", total=total, status="")

        def update(p) -> None:
            measured = measured_line(p.values, sweep.keys)
            status = p.phase or measured_line(p.values, sweep.keys, compact=True)
            progress.update(task, completed=p.done, status=fit_status(status, progress.console.width))
            if p.last:
                line = p.last + (f": {measured}" if measured else "") + (" (on the front)" if p.on_front else "")
                progress.console.print(f"  {line}", markup=False, soft_wrap=True)

        sweep.on_progress = update
        progress.update(task, completed=sweep.progress.done)
        sweep.run(space, trials=total)
    df = sweep.frame()
    console.print(front_table(df, sweep.keys, sweep.goals, title=f"Pareto front of '{cfg.name}'"))
    print_timing_lines(console, cfg, df, sweep.keys)
    failed = df[df["state"] == "FAIL"]
    if len(failed):
        console.print(f"[yellow]{len(failed)} trial(s) failed[/]: " + escape("; ".join(
            f"#{r['trial']}: {r['error']}" for _, r in failed.head(5).iterrows())), markup=True)
    console.print(_open_hint(cfg, sweep.tracker.review_url()), soft_wrap=True)
    if hint := _deploy_hint(cfg, df, sweep.keys, sweep.goals, config=config, local=agents is not None):
        console.print(hint, soft_wrap=True)


def front_cmd(
    config_arg: Path = typer.Argument(None, metavar="CONFIG", show_default=False, help="Sweep YAML (or --config)."),
    config: Path = typer.Option(None, "--config", "-c", help="The sweep YAML."),
    csv: Path = typer.Option(None, "--csv", help="Write every trial (front first) to this CSV."),
    as_json: bool = typer.Option(False, "--json", help="Print the front as JSON."),
    all_trials: bool = typer.Option(False, "--all", help="Show every trial, not only the front."),
) -> None:
    """Reprint a sweep's Pareto front from its Optuna storage (and MLflow run ids)."""
    from edgetune.cli import console, sweep_file
    from edgetune.search.wiring import load_front

    config = sweep_file(config_arg, config)
    df, keys, goals, cfg = load_front(config)
    if csv or as_json:
        full = with_table_columns(df, keys, goals)  # every column of the table, as numbers
    if csv:
        full.sort_values(["pareto", "trial"], ascending=[False, True]).to_csv(csv, index=False)
        console.print(f"wrote {len(df)} trials to {csv}")
    if as_json:
        console.print_json(full[full["pareto"] | all_trials].to_json(orient="records"))
        return
    console.print(front_table(df, keys, goals, title=f"{'Trials' if all_trials else 'Pareto front'} of '{cfg.name}'",
                              only_front=not all_trials))
    print_timing_lines(console, cfg, df, keys)
    console.print(_open_hint(cfg, df.attrs.get("review_url")), soft_wrap=True)
    if hint := _deploy_hint(cfg, df, keys, goals, config=config, local=False):
        console.print(hint, soft_wrap=True)
