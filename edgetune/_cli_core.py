"""Core CLI commands: ``eval``, ``train-builtin``, ``demo``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
    app.command("train-builtin")(train_builtin_cmd)
    app.command("demo")(demo_cmd)


def eval_cmd(
    model: str = typer.Option("builtin:det-s", "--model", help="builtin:NAME or onnx:PATH"),
    data: str = typer.Option("builtin:shapes", "--data", help="builtin:shapes, yolo:PATH/data.yaml, imagefolder:DIR"),
    val_images: int = typer.Option(500, help="Validation images to evaluate."),
    runs: int = typer.Option(200, help="Timed runs for the latency statistics."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Evaluate a model like `yolo benchmark`: mAP, params, GFLOPs, ONNX size, onnxruntime latency (1 thread)."""
    from edgetune.cli import console
    from edgetune.config import parse_data_ref, parse_model_ref
    from edgetune.evaluation import evaluate_model

    mspec = parse_model_ref(model)
    dspec = parse_data_ref(data).model_copy(update={"val_images": val_images})
    with console.status("exporting, evaluating and timing ...", spinner="dots"):
        row = evaluate_model(mspec, dspec, runs=runs)
    if as_json:
        console.print_json(json.dumps(row))
        return
    from rich.table import Table

    table = Table(title=f"{row['model']} on {row['data']} ({row['val_images']} val images)")
    for col in ("mAP50-95", "mAP50", "params (M)", "GFLOPs", "ONNX (KB)", "p50 ms", "p90 ms"):
        table.add_column(col, justify="right")
    table.add_row(f"{row['map50_95']:.4f}", f"{row['map50']:.4f}", f"{row['params'] / 1e6:.3f}",
                  f"{row['gflops']:.3f}", f"{row['onnx_bytes'] / 1024:.0f}", f"{row['latency_p50_ms']:.2f}",
                  f"{row['latency_p90_ms']:.2f}")
    console.print(table)
    console.print(f"onnxruntime {row['runtime_version']}, 1 thread, {row['latency_n']} runs, "
                  f"max |ORT - torch| = {row['export_max_abs_diff']:.2g}")


def train_builtin_cmd(
    name: str = typer.Option("det-s", help="Builtin model to train."),
    iters: int = typer.Option(4500, help="Optimizer steps (the budget; not seconds, so it is reproducible)."),
    batch: int = typer.Option(32),
    train_size: int = typer.Option(5000, help="Training images of the builtin shapes dataset."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(2),
    lr: float = typer.Option(3e-3, help="Peak learning rate (AdamW, warmup + cosine)."),
    init: Path = typer.Option(None, help="Start from these weights (a second training phase) instead of scratch."),
    out: Path = typer.Option(None, help="Where to write the weights (default: a file in the current directory)."),
) -> None:
    """Train a builtin detector from scratch on the builtin shapes dataset (reproduces the shipped weights)."""
    import hashlib

    import torch
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from edgetune.cli import console
    from edgetune.data.shapes import shapes_split
    from edgetune.models.builtin.det import build_detector
    from edgetune.models.builtin.train import TrainConfig, train_detector
    from edgetune.models.sources import BUILTIN_MODELS

    info = BUILTIN_MODELS[name]
    cfg = TrainConfig(iters=iters, batch=batch, seed=seed, threads=threads, eval_every=0, lr=lr,
                      full_size_iters=max(iters // 10, 1), warmup=min(300, iters // 5))
    train = shapes_split("train", train_size, seed=seed)
    torch.manual_seed(seed)  # the initial weights too
    model = build_detector(info["arch"], num_classes=info["num_classes"], input_size=info["input_size"])
    if init is not None:
        model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))
    with Progress(TextColumn("training"), BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
                  TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("train", total=iters, loss=0.0)
        ema = train_detector(model, train, cfg,
                             on_progress=lambda it, loss: progress.update(task, completed=it, loss=loss))
    out = out or Path(f"{name}.pt")
    torch.save(ema.state_dict(), out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    console.print(f"wrote {out} (sha256 {digest}). Check it: edgetune eval --model builtin:{name}")


def demo_cmd(
    trials: int = typer.Option(None, "--trials", help="Total trials (default: the config's search.trials)."),
    config: Path = typer.Option(None, "--config", help="Sweep YAML (default: configs/demo.yaml)."),
) -> None:
    """The quick-start sweep: starts a local agent, runs configs/demo.yaml, prints the front, stops the agent."""
    from edgetune.search._cli import run_search

    run_search(config or demo_config_path(), trials=trials, workdir=Path(".edgetune"), local=True)


def demo_config_path() -> Path:
    """configs/demo.yaml of the source tree (the demo runs from the repository root)."""
    here = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
    if here.is_file():
        return here
    from edgetune.errors import ConfigError

    raise ConfigError(f"configs/demo.yaml not found at {here}; pass --config PATH to a sweep YAML.")
