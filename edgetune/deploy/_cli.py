"""``edgetune deploy``, ``edgetune deploy --rollback``, ``edgetune deployments`` and ``edgetune export``."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["register"]

_SWEEP_HELP = "The sweep's YAML (the file given to `edgetune search`): its storage, MLflow store and devices."


def register(app: typer.Typer) -> None:
    app.command("deploy")(deploy_cmd)
    app.command("deployments")(deployments_cmd)
    app.command("export")(export_cmd)


def _console():
    from edgetune.cli import console

    return console


def _sweep_arg(positional: str | None, option: str | None, *, required: bool) -> str | None:
    """The sweep YAML given as CONFIG or --sweep / --config (as in every other command)."""
    from edgetune.cli import sweep_file

    if positional is None and option is None and not required:
        return None
    return str(sweep_file(positional, option))


def deploy_cmd(
    config_arg: str = typer.Argument(None, metavar="CONFIG", show_default=False,
                                     help="The sweep's YAML (or --sweep / --config)."),
    to: str = typer.Option(..., "--to", "--device", help="Device name, from the sweep's `devices:` or the --fleet file."),
    sweep: str = typer.Option(None, "--sweep", "--config", help=_SWEEP_HELP),
    trial: int = typer.Option(None, "--trial", help="Deploy this trial number."),
    pick: str = typer.Option(None, "--pick", help="Deploy the trial this rule picks, e.g. "
                             "'max map50_95 where latency_p50_ms@pi <= 40 and size_bytes <= 2e6', or the one "
                             "`edgetune front` suggests: fastest | knee | smallest."),
    name: str = typer.Option(None, "--name", help="Deployment slot on the device and registered model name "
                             "(default: the sweep name)."),
    rollback: bool = typer.Option(False, "--rollback", help="Re-activate the previous version of --name on --to."),
    version: int = typer.Option(None, "--version", help="With --rollback: the kept version to activate."),
    workdir: Path = typer.Option(Path(".edgetune"), help="The sweep's workdir (its artifact cache)."),
    fleet: Path = typer.Option(None, "--fleet", help="A fleet file defining --to (instead of the sweep's devices)."),
    no_register: bool = typer.Option(False, "--no-register", help="Do not register the model in MLflow."),
) -> None:
    """Push a trial of a sweep to a device, verify it there against the sweep, register it in MLflow."""
    sweep = _sweep_arg(config_arg, sweep, required=False)
    if rollback:
        return _rollback(to=to, sweep=sweep, name=name, version=version, fleet=fleet)
    from edgetune.deploy._deploy import deploy, how_to_load
    from edgetune.errors import ConfigError

    if sweep is None:
        raise ConfigError("--sweep CONFIG is required to deploy (it holds the trials); --rollback needs only --to/--name.")
    console = _console()
    with console.status("fetching, pushing and re-measuring on the device ..."):
        rep = deploy(sweep=sweep, to=to, trial=trial, rule=pick, name=name, workdir=workdir, fleet=fleet,
                     register=not no_register)
    dep, p, v = rep.deployment, rep.point, rep.verification
    prev = rep.result.previous
    change = ("new version" + (f", previous v{prev}" if prev else "")) if rep.result.created else "already active"
    console.print(f"deployed trial {p.number} ({p.label}) of sweep '{rep.sweep}' to {rep.device} as "
                  f"'{dep.name}' v{dep.active} ({change}; artifact {rep.artifact.hash[:12]} from {rep.source})")
    for line in _verification_lines(v):
        console.print(line)
    for note in rep.notes:
        console.print(f"note: {note}")
    if rep.registration is not None:
        r = rep.registration
        console.print(f"registered: {r.uri} -> version {r.version} (MLflow run {r.run_id})")
    console.print(f"on {rep.device} the model lives at {dep.current_path} (always the active version; this one: "
                  f"{dep.path})\nload it in an application:")
    console.print(how_to_load(path=dep.current_path, manifest=rep.artifact.manifest, runtime=v.runtime_device,
                              registry_uri=rep.tracking_uri if rep.registration else None, url=rep.url, name=dep.name), highlight=False)


def _verification_lines(v) -> list[str]:
    head = "verified" if v.compared and v.same_runtime else "measured"
    lines = [f"{head} on {v.device} ({v.runtime_device}" + (", same runtime as the sweep)" if v.same_runtime else ")")]
    for k, a in v.accuracy.items():
        lines.append(f"  {k}: sweep {a['sweep']:.6f}, device {a['device']:.6f} (diff {a['diff']:+.2g}, "
                     f"tolerance {v.tolerance:g})")
    for k, lat in v.latency.items():
        lines.append(f"  {k}: sweep {lat['sweep']:.3f} ms, device {lat['device']:.3f} ms ({lat['diff_ms']:+.3f} ms, "
                     f"{lat['ratio']:.2f}x)")
    lines += [f"  note: {w}" for w in v.warnings]
    return lines


def _rollback(*, to: str, sweep: str | None, name: str | None, version: int | None, fleet: Path | None) -> None:
    from edgetune.deploy._registry import move_alias, production_alias
    from edgetune.deploy._sweep import agent_client, resolve_device
    from edgetune.errors import ConfigError

    cfg = None
    if sweep is not None:
        from edgetune.config import load_sweep_config
        from edgetune.deploy._sweep import resolve_sweep_path

        cfg = load_sweep_config(resolve_sweep_path(sweep))
    name = name or (cfg.name if cfg else None)
    if not name:
        raise ConfigError("--rollback needs --name NAME (the deployment slot), or --sweep CONFIG to default to its name.")
    spec = resolve_device(to, cfg=cfg, fleet=fleet)
    with agent_client(spec) as client:
        dep = client.rollback(name, version=version)
    console = _console()
    active = dep.active_version
    console.print(f"'{name}' on {to} is now v{dep.active} (sha256 {active.sha256[:12]}, {active.label or 'no label'}); "
                  f"model at {dep.current_path}")
    if cfg is not None:
        moved = move_alias(uri=cfg.tracking.uri, model_name=name, device=to, deployment_name=name, sha256=active.sha256)
        console.print(f"MLflow alias {production_alias(to)} -> version {moved}" if moved else
                      f"MLflow: no registered version of '{name}' matches v{dep.active}; alias unchanged")


def deployments_cmd(
    config_arg: str = typer.Argument(None, metavar="CONFIG", show_default=False,
                                     help="The sweep's YAML (or --sweep / --config)."),
    device: str = typer.Option(..., "--device", help="Device name, from --sweep's `devices:` or --fleet."),
    sweep: str = typer.Option(None, "--sweep", "--config", help=_SWEEP_HELP),
    fleet: Path = typer.Option(None, "--fleet", help="A fleet file defining --device."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the deployments on a device: versions kept, the active one, where they live."""
    sweep = _sweep_arg(config_arg, sweep, required=False)
    from rich.table import Table

    from edgetune.deploy._sweep import agent_client, resolve_device

    cfg = None
    if sweep is not None:
        from edgetune.config import load_sweep_config
        from edgetune.deploy._sweep import resolve_sweep_path

        cfg = load_sweep_config(resolve_sweep_path(sweep))
    with agent_client(resolve_device(device, cfg=cfg, fleet=fleet)) as client:
        deps = client.deployments()
    console = _console()
    if as_json:
        import json

        console.print_json(json.dumps([d.model_dump(mode="json") for d in deps]))
        return
    from rich import box

    table = Table(title=f"deployments on {device}", title_justify="left", box=box.SIMPLE_HEAD)
    for col, kw in (("name", {"no_wrap": True}), ("version", {"no_wrap": True}), ("active", {"no_wrap": True}),
                    ("label", {"overflow": "fold", "ratio": 1}), ("sha256", {"no_wrap": True}),
                    ("bytes", {"no_wrap": True, "justify": "right"})):
        table.add_column(col, **kw)
    for d in deps:
        for v in sorted(d.versions, key=lambda v: -v.version):
            table.add_row(d.name, f"v{v.version}", "*" if v.active else "", v.label or "", v.sha256[:12],
                          f"{v.bytes:,}")
    if not deps:
        console.print(f"no deployments on {device}")
        return
    console.print(table)
    for d in deps:  # paths in full, one per line (a table column would cut them)
        console.print(f"{d.name}: {d.current_path} (the active version; all versions under {Path(d.current_path).parent.parent})",
                      soft_wrap=True)


def export_cmd(
    config_arg: str = typer.Argument(None, metavar="CONFIG", show_default=False,
                                     help="The sweep's YAML (or --sweep / --config)."),
    sweep: str = typer.Option(None, "--sweep", "--config", help=_SWEEP_HELP),
    out: Path = typer.Option(..., "--out", help="Folder to write (model.onnx, manifest.json, summary.json, README.md)."),
    trial: int = typer.Option(None, "--trial", help="Export this trial number."),
    pick: str = typer.Option(None, "--pick", help="Or the trial this rule picks (see `edgetune deploy --help`)."),
    workdir: Path = typer.Option(Path(".edgetune"), help="The sweep's workdir (its artifact cache)."),
    force: bool = typer.Option(False, "--force", help="Write into a non-empty --out."),
) -> None:
    """Write the deployable folder of a trial, for deploying by hand (TensorRT devices: build_engine.sh)."""
    sweep = _sweep_arg(config_arg, sweep, required=True)
    from edgetune.deploy._export import export_trial

    summary = export_trial(sweep=sweep, out=out, trial=trial, rule=pick, workdir=workdir, force=force)
    files = sorted(p.name for p in Path(out).iterdir())
    _console().print(f"exported trial {summary['trial']} ({summary['label']}) of '{summary['sweep']}' to {out}: "
                     f"{', '.join(files)}" + (f"\nTensorRT: {summary['build_engine']}" if summary.get("build_engine") else ""))
