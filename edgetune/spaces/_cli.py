"""``edgetune space --config SWEEP.yaml``: the layers, groups and choices of a sweep's search space.

Imports nothing heavy at import time (the CLI must start on a Raspberry Pi without torch).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("space")(space_cmd)


def space_cmd(
    config_arg: Path = typer.Argument(None, metavar="CONFIG", show_default=False, help="Sweep YAML (or --config)."),
    config: Path = typer.Option(None, "--config", "-c", help="Sweep YAML (model:, data:, space: sections)."),
    target: list[str] = typer.Option(None, "--target", "-t", help="Device kind(s); default: the kinds of the "
                                     "sweep's devices, else space.targets."),
    as_json: bool = typer.Option(False, "--json", help="Print the space as JSON instead of tables."),
    sensitivity: bool = typer.Option(False, "--sensitivity", help="Also cut each sparsity dimension alone at each "
                                     "ratio (BatchNorm re-estimated, no fine-tuning) and print what it costs; needs "
                                     "the train split, cached in WORKDIR/sensitivity."),
    workdir: Path = typer.Option(Path(".edgetune"), help="The sweep's cache (sensitivity results)."),
) -> None:
    """Print the search space of a sweep: layers, coupling groups, per-layer/per-group choices, pins."""
    from rich.markup import escape
    from rich.table import Table

    from edgetune.assembly import assemble
    from edgetune.cli import console, sweep_file
    from edgetune.config import load_sweep_config

    cfg = load_sweep_config(sweep_file(config_arg, config))
    images = cfg.space.sparsity.sensitivity_images
    with console.status("discovering layers and coupling groups ...", spinner="dots"):
        parts = assemble(cfg, kinds=target or None, train=sensitivity, val_images=images if sensitivity else 8,
                         workdir=workdir)  # without --sensitivity, the classes are all it needs
    model, space = parts.model, parts.space
    sens = (parts.sensitivity or _sensitivity(parts, workdir, images)) if sensitivity else None
    if as_json:
        console.print_json(json.dumps({**space.to_dict(), **({"sensitivity": sens.to_dict()} if sens else {})}))
        return
    group_of = {n: g.name for g in space.groups for n in g.layers}
    layers = Table(title=f"{model.name}: {len(space.layers)} layers")
    for col in ("layer", "kind", "in>out", "k", "params", "MMACs", "precision", "group / pin"):
        layers.add_column(col, justify="right" if col in ("params", "MMACs") else "left", no_wrap=col == "layer")
    for lay in space.layers:
        g = group_of.get(lay.name)
        where = "never pruned (writes the output)" if lay.last else ("" if g == lay.name else f"in group {g}")
        where = "; ".join(x for x in (space.precision_pins.get(lay.name), where) if x)
        layers.add_row(lay.name, lay.kind, f"{lay.in_channels}>{lay.out_channels}", "x".join(map(str, lay.kernel)),
                       f"{lay.params:,}", f"{lay.macs / 1e6:.2f}", "/".join(space.precision_choices[lay.name]), where)
    console.print(layers)
    groups = Table(title=f"{len(space.groups)} coupling groups (one sparsity each)")
    for col in ("group", "layers", "channels", "sparsity choices", "pin"):
        groups.add_column(col, justify="right" if col in ("layers", "channels") else "left", no_wrap=col == "group")
    for g in space.groups:
        groups.add_row(g.name, str(len(g.layers)), str(g.channels), ", ".join(space.sparsity_choices[g.name]),
                       space.sparsity_pins.get(g.name, ""))
    console.print(groups)
    q = space.quant
    console.print(f"targets: {', '.join(space.targets)}; tie: precision {cfg.space.tie_for('precision')}, sparsity {cfg.space.tie_for('sparsity')}; {len(space.dimensions)} search "
                  f"dimensions, ~10^{space.size_log10:.0f} points")
    console.print(f"int8 recipe: {q.activation_type} activations ({'symmetric' if q.activation_symmetric else 'asymmetric'}),"
                  f" per-channel={q.per_channel}, calibration={q.calibration}, QDQ on {', '.join(q.op_types)}")
    console.print(f"channel scoring: {space.importance}; kept channels rounded to {space.round_to}")
    for d in space.dimensions:
        if d.kind in ("input_size", "runtime", "scales"):
            what = {"input_size": "input size (px)", "runtime": "runtime", "scales": "output scales kept (strides)"}
            console.print(f"{what[d.kind]}: {', '.join(d.choices)}")
    for note in space.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", markup=True)
    if sens is not None:
        _print_sensitivity(sens, cfg.space.sparsity.max_drop)


def _sensitivity(parts, workdir: Path, images: int):
    """Measure (or read from the cache) every dimension's cut alone, with a progress bar."""
    from rich.progress import Progress

    from edgetune.cli import console
    from edgetune.compress import measure_sensitivity

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("sensitivity: cut, re-estimate BatchNorm, score", total=None)

        def on_cut(done: int, total: int, cut) -> None:
            bar.update(task, completed=done, total=total, description=f"sensitivity: {cut.dimension} {cut.choice}")

        return measure_sensitivity(parts.model, parts.space, train=parts.splits.train, val=parts.splits.val,
                                   images=images, workdir=workdir, on_cut=on_cut)


def _print_sensitivity(sens, max_drop: float | None) -> None:
    from rich.table import Table
    from rich.text import Text

    from edgetune.cli import console

    t = Table(title=f"sensitivity: each dimension cut alone, BatchNorm re-estimated, no fine-tuning "
                    f"({sens.metric_name} on {sens.images} val images; drop from the uncut model re-estimated the same "
                    f"way, {sens.baseline:.4f}; as loaded {sens.uncut:.4f})")
    for col in ("dimension", "cut", "channels", "MACs cut", sens.metric_name, "drop"):
        t.add_column(col, justify="left" if col == "dimension" else "right", no_wrap=col == "dimension")
    for c in sorted(sens.cuts, key=lambda c: (c.drop / max(c.macs_removed, 1e-6), c.dimension, c.ratio)):
        over = max_drop is not None and c.drop > max_drop
        t.add_row(c.dimension, c.choice or f"{c.ratio:g}", f"{c.channels}>{c.kept}", f"{100 * c.macs_removed:.1f}%",
                  f"{c.metric:.4f}", Text(f"{c.drop:.4f}", style="red" if over else ""))
    console.print(t)
    console.print(f"rows: cheapest first (drop per share of MACs removed); importance {sens.importance}; "
                  f"{sens.seconds:.0f} s to measure" + (f"; red: over max_drop {max_drop:g}, removed from the "
                                                          "space" if max_drop is not None else ""))
