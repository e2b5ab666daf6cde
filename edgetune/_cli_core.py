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
    model: str = typer.Option("builtin:det-s", "--model", help="builtin:NAME, onnx:PATH or ultralytics:PATH/best.pt"),
    data: str = typer.Option("builtin:shapes", "--data", help="builtin:shapes, yolo:PATH/data.yaml, imagefolder:DIR"),
    val_images: int = typer.Option(500, help="Validation images to evaluate."),
    input_size: int = typer.Option(None, "--input-size", help="Input resolution (default: the model's own; 640 for "
                                                              "an Ultralytics checkpoint)."),
    runs: int = typer.Option(200, help="Timed runs for the latency statistics."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Evaluate a model like `yolo benchmark`: mAP, params, GFLOPs, ONNX size, onnxruntime latency (1 thread)."""
    from edgetune.cli import console
    from edgetune.config import parse_data_ref, parse_model_ref
    from edgetune.evaluation import evaluate_model

    mspec = parse_model_ref(model)
    if input_size:
        mspec = mspec.model_copy(update={"input_size": input_size})
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
    name: str = typer.Option("det-s", help="Builtin model to train: det-s, or yolo11n / yolo26n (need the yolo "
                                           "extra)."),
    iters: int = typer.Option(None, help="Optimizer steps (the budget; not seconds, so it is reproducible). "
                                         "Default: 4500 (det-s), 8000 (yolo11n, yolo26n)."),
    batch: int = typer.Option(None, help="Default: 32 (det-s), 16 (yolo11n, yolo26n)."),
    train_size: int = typer.Option(None, help="Training images of the builtin shapes dataset. Default: 5000 "
                                              "(det-s), 8000 (yolo11n, yolo26n)."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(2),
    lr: float = typer.Option(None, help="Peak learning rate (AdamW, warmup + cosine). Default: 3e-3 (det-s), "
                                        "2e-3 (yolo11n, yolo26n)."),
    init: Path = typer.Option(None, help="det-s: start from these weights (a second training phase)."),
    out: Path = typer.Option(None, help="Where to write the weights (default: a file in the current directory). "
                                        "yolo11n / yolo26n keep a resumable checkpoint beside it (<out>.ckpt): run the "
                                        "same command again to resume."),
) -> None:
    """Train a builtin detector from scratch on the builtin shapes dataset (reproduces the shipped weights)."""
    import hashlib

    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from edgetune.cli import console
    from edgetune.errors import ConfigError
    from edgetune.models.sources import BUILTIN_MODELS

    if name not in BUILTIN_MODELS:
        raise ConfigError(f"unknown builtin model {name!r}; builtin models: {', '.join(BUILTIN_MODELS)}.")
    info = BUILTIN_MODELS[name]
    out = out or Path(f"{name}.pt")
    ultra = info.get("family") == "ultralytics"
    if ultra:
        from edgetune.models.builtin.train_yolo import YoloTrainConfig as Defaults
    else:
        from edgetune.models.builtin.train import TrainConfig as Defaults
    iters = iters or (Defaults.steps if ultra else Defaults.iters)
    with Progress(TextColumn("training"), BarColumn(), TextColumn("{task.completed}/{task.total} loss {task.fields[loss]:.3f}"),
                  TimeRemainingColumn(), console=console) as progress:
        task = progress.add_task("train", total=iters, loss=0.0)

        def on_step(it: int, loss: float) -> None:
            progress.update(task, completed=it, loss=loss)

        if ultra:
            _train_ultralytics_builtin(info, iters=iters, batch=batch, train_size=train_size, seed=seed,
                                       threads=threads, lr=lr, out=out, on_step=on_step)
        else:
            _train_det_builtin(info, iters=iters, batch=batch or Defaults.batch, train_size=train_size or 5000,
                               seed=seed, threads=threads, lr=lr or Defaults.lr, init=init, out=out, on_step=on_step)
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    console.print(f"wrote {out} (sha256 {digest}). Check it: edgetune eval --model builtin:{name} "
                  f"(after copying it to {Path('edgetune/models/weights') / out.name} and its sha256 into "
                  "BUILTIN_MODELS).")


def _train_det_builtin(info: dict, *, iters, batch, train_size, seed, threads, lr, init, out, on_step) -> None:
    import torch

    from edgetune.data.shapes import shapes_split
    from edgetune.models.builtin.det import build_detector
    from edgetune.models.builtin.train import TrainConfig, train_detector

    cfg = TrainConfig(iters=iters, batch=batch, seed=seed, threads=threads, eval_every=0, lr=lr,
                      full_size_iters=max(iters // 10, 1), warmup=min(300, iters // 5))
    train = shapes_split("train", train_size, seed=seed)
    torch.manual_seed(seed)  # the initial weights too
    model = build_detector(info["arch"], num_classes=info["num_classes"], input_size=info["input_size"])
    if init is not None:
        model.load_state_dict(torch.load(init, map_location="cpu", weights_only=True))
    ema = train_detector(model, train, cfg, on_progress=on_step)
    torch.save(ema.state_dict(), out)


def _train_ultralytics_builtin(info: dict, *, iters, batch, train_size, seed, threads, lr, out, on_step) -> None:
    import dataclasses

    import torch

    from edgetune.models.builtin.train_yolo import YoloTrainConfig, train_yolo

    base = YoloTrainConfig(arch=info["arch"], size=info["input_size"])
    cfg = dataclasses.replace(base, steps=iters, batch=batch or base.batch, train_size=train_size or base.train_size,
                              seed=seed, lr=lr or base.lr)
    ema = train_yolo(cfg, out=out, threads=threads, on_step=on_step)
    # fp16 halves the shipped file; the loader casts back to fp32 (mAP unchanged within 1e-4, see docs/models.md)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in ema.state_dict().items()}, out)


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
