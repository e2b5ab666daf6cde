"""``edgetune compress --config SWEEP.yaml --point POINT.yaml|BASELINE --out DIR``: write one artifact.

Imports nothing heavy at import time (the CLI must start on a Raspberry Pi without torch).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("compress")(compress_cmd)


def compress_cmd(
    config_arg: Path = typer.Argument(None, metavar="CONFIG", show_default=False, help="Sweep YAML (or --config)."),
    config: Path = typer.Option(None, "--config", "-c", help="Sweep YAML (model:, data:, space:, recovery:)."),
    point: str = typer.Option(..., "--point", "-p", help="A point file (YAML/JSON CompressionConfig) or a "
                                                         "baseline: fp32, int8-uniform, fp16-uniform."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory to write model.onnx + manifest.json into."),
    target: list[str] = typer.Option(None, "--target", "-t", help="Device kind(s); default: the kinds of the "
                                     "sweep's devices, else space.targets."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Rebuild even if the artifact is cached."),
) -> None:
    """Compress the sweep's model with one config (validated against the space) and write the artifact."""
    from rich.table import Table

    from edgetune._paths import cache_dir
    from edgetune.assembly import assemble
    from edgetune.cli import console, sweep_file
    from edgetune.compress import compress, needs_train
    from edgetune.config import load_sweep_config
    from edgetune.spaces import BASELINES, CompressionConfig

    cfg = load_sweep_config(sweep_file(config_arg, config))
    with console.status("loading the model and building the space ...", spinner="dots"):
        parts = assemble(cfg, kinds=target or None, train=False)
    space = parts.space
    conf = space.baseline(point) if point in BASELINES else CompressionConfig.load(point)
    space.validate(conf)
    recovering = needs_train(cfg.recovery, conf)
    if recovering:
        with console.status("loading the train split ...", spinner="dots"):
            parts = parts.with_train()
    with console.status(f"compressing ({'with' if recovering else 'no'} recovery) ...", spinner="dots"):
        art = compress(parts.model, conf, calib=parts.splits.calib, train=parts.splits.train, recovery=cfg.recovery,
                       space=space, workdir=cache_dir() / "artifacts", use_cache=not no_cache)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(art.onnx_path, out / "model.onnx")
    shutil.copyfile(art.onnx_path.with_name("manifest.json"), out / "manifest.json")
    s = art.sizes
    table = Table(title=f"artifact {art.hash[:16]} ({'from cache' if art.from_cache else 'built'})")
    for col in ("ONNX KiB", "zstd KiB", "params", "non-zero", "MMACs", "GBOPs"):
        table.add_column(col, justify="right")
    table.add_row(f"{s['bytes'] / 1024:.0f}", f"{s['zstd_bytes'] / 1024:.0f}", f"{s['params']:,}",
                  f"{s['nonzero_params']:,}", f"{s['macs'] / 1e6:.1f}", f"{s['bitops'] / 1e9:.1f}")
    console.print(table)
    t = art.manifest["timings_s"]
    console.print(f"wrote {out / 'model.onnx'} and manifest.json; timings (s): "
                  + ", ".join(f"{k} {v}" for k, v in t.items()))
