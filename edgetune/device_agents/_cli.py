"""CLI: ``edgetune agent serve|local``, ``edgetune devices``, ``edgetune measure``.

Imports nothing heavy at module level (``edgetune agent serve`` must start on a Pi without torch);
``python -m edgetune.device_agents`` runs the ``agent`` commands alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

__all__ = ["register", "agent_app", "parse_cpus"]

agent_app = typer.Typer(name="agent", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                        help="Run a device agent (on a Jetson, a Raspberry Pi, or here as local agents).")


def register(app: typer.Typer) -> None:
    app.add_typer(agent_app, name="agent")
    app.command("devices")(devices_cmd)
    app.command("measure")(measure_cmd)
    app.command("compare")(compare_cmd)


def _console():
    from rich.console import Console

    return Console()


def parse_cpus(text: str | None) -> tuple[int, ...]:
    """``"3"``, ``"2,3"``, ``"0-3"``, ``"0-1,6"`` -> sorted CPU ids."""
    from edgetune.errors import ConfigError

    if not text:
        return ()
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"--cpus must look like '3', '2,3' or '0-3', got {text!r}.") from None
    return tuple(sorted(cpus))


def _read_token(token: str | None, token_file: Path | None) -> str:
    from edgetune.errors import ConfigError

    if token_file is not None:
        if not token_file.is_file():
            raise ConfigError(f"--token-file '{token_file}' does not exist.")
        token = token_file.read_text().strip()
    if not token:
        raise ConfigError("the agent needs a token: pass --token-file PATH, --token T or set $EDGETUNE_AGENT_TOKEN "
                          "(generate one: python -c \"import secrets; print(secrets.token_urlsafe(24))\").")
    return token


def _runtimes(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(p.strip() for p in (text or "ort").split(",") if p.strip()))
    if not names:
        raise typer.BadParameter("name at least one runtime, e.g. --runtime ort or --runtime ort,openvino",
                                 param_hint="--runtime")
    return names


@agent_app.command("serve")
def serve_cmd(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 to accept the network)."),
    port: int = typer.Option(8765, help="Port (0 = any free port; see --ready-file)."),
    token: str = typer.Option(None, envvar="EDGETUNE_AGENT_TOKEN", show_envvar=True, help="Bearer token clients must send."),
    token_file: Path = typer.Option(None, help="Read the token from this file (preferred over --token)."),
    workdir: Path = typer.Option(None, help="Where uploads, engines and jobs live (default: <cache>/agent)."),
    runtime: str = typer.Option("ort", help="ort (onnxruntime), openvino, tensorrt or ncnn; several, comma-separated "
                                "(ort,openvino), offer each to the sweep: the first is the default."),
    threads: int = typer.Option(1, help="Intra-op threads of every measurement."),
    cpus: str = typer.Option(None, help="Pin measurements to these CPUs, e.g. '3', '2,3', '0-3'."),
    name: str = typer.Option(None, help="Device name reported in /health and /info (default: hostname)."),
    kind: str = typer.Option(None, help="Declare the device kind (default: detected, e.g. rpi5, jetson-orin)."),
    queue: int = typer.Option(4, help="Requests that may wait for the device; more get HTTP 429."),
    timeout: float = typer.Option(900.0, help="Seconds a measurement may take before its process is killed."),
    max_artifact_mb: int = typer.Option(512, help="Largest accepted ONNX upload (MiB)."),
    max_dataset_mb: int = typer.Option(2048, help="Largest accepted dataset bundle (MiB)."),
    max_memory_mb: int = typer.Option(None, help="Address-space limit of a measurement process (MiB)."),
    max_connections: int = typer.Option(None, help="Open connections at most; past it, those waiting longest on their "
                                        "client are closed (default: 256, fewer under a low open-file limit)."),
    header_timeout: float = typer.Option(10.0, help="Seconds a client may take to send its request line and headers."),
    stall_timeout: float = typer.Option(60.0, help="Seconds a request body (or a response the client reads) may "
                                        "pause before the connection is dropped (408)."),
    host_lock: Path = typer.Option(None, help="Lock file shared by the agents of this host (default: in the temp dir)."),
    no_host_lock: bool = typer.Option(False, "--no-host-lock", help="Do not coordinate with other agents on this host."),
    ssl_certfile: str = typer.Option(None, help="TLS certificate (PEM) to serve https."),
    ssl_keyfile: str = typer.Option(None, help="TLS private key (PEM)."),
    ready_file: Path = typer.Option(None, help="Write {url, port, pid} as JSON here once listening."),
    sensor_root: Path = typer.Option(None, envvar="EDGETUNE_AGENT_SENSOR_ROOT", show_envvar=True,
                                     help="Read the volatile sensors (throttling flags, temperatures, cpufreq, "
                                     "power) under this directory instead of / : it holds recorded sensor files "
                                     "laid out like / (replaying a board's state; tests)."),
) -> None:
    """Serve a device agent: uploads, device fingerprint and measurements over HTTP (token auth)."""
    import socket

    from edgetune._paths import cache_dir
    from edgetune.device_agents.server import AgentConfig, default_host_lock, serve

    config = AgentConfig(
        token=_read_token(token, token_file), workdir=Path(workdir or cache_dir() / "agent"),
        runtime=_runtimes(runtime)[0], runtimes=_runtimes(runtime)[1:],
        threads=threads, cpus=parse_cpus(cpus), name=name or socket.gethostname(), kind=kind, queue_size=queue,
        max_artifact_bytes=max_artifact_mb << 20, max_dataset_bytes=max_dataset_mb << 20,
        measure_timeout_s=timeout, max_memory_bytes=max_memory_mb << 20 if max_memory_mb else None,
        host_lock=None if no_host_lock else (host_lock or default_host_lock()), max_connections=max_connections,
        header_timeout_s=header_timeout, stall_timeout_s=stall_timeout, sensor_root=sensor_root,
    )
    serve(config, host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, ready_file=ready_file)


@agent_app.command("local")
def local_cmd(
    n: int = typer.Option(1, "--n", help="How many local agents."),
    threads: int = typer.Option(1, help="Intra-op threads per agent (each agent gets its own cores)."),
    workdir: Path = typer.Option(None, help="Where the agents keep their files (default: a temp dir)."),
    fleet_out: Path = typer.Option(Path("fleet.local.yaml"), help="Write a fleet YAML for these agents here."),
) -> None:
    """Start N agents on 127.0.0.1 (labelled local-cpu, pinned, fixed threads) until Ctrl-C."""
    import time

    from rich.table import Table

    from edgetune.device_agents.local import start_local_agents

    console = _console()
    agents = start_local_agents(n, threads=threads, workdir=workdir)
    try:
        path = agents.write_fleet(fleet_out)
        table = Table(title=f"{n} local agent(s): kind local-cpu, {threads} thread(s)")
        for col in ("name", "url", "cpus", "pid"):
            table.add_column(col)
        for a in agents.agents:
            table.add_row(a.name, a.url, ",".join(map(str, a.cpus)), str(a.pid))
        console.print(table)
        console.print(f"fleet file: {path} (token in {agents.token_file}). Try: edgetune devices --fleet {path}")
        console.print("Ctrl-C stops them.")
        while all(a.process.poll() is None for a in agents.agents):
            time.sleep(0.5)
        console.print("[red]an agent exited; stopping the others[/]", markup=True)
    except KeyboardInterrupt:
        pass
    finally:
        agents.stop()


def _fleet_path(fleet: Path | None) -> Path:
    return Path(fleet or os.environ.get("EDGETUNE_FLEET") or "fleet.yaml")


def devices_cmd(
    fleet: Path = typer.Option(None, help="Fleet or sweep YAML (default: $EDGETUNE_FLEET or ./fleet.yaml)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    timeout: float = typer.Option(5.0, help="Seconds to wait for each device."),
) -> None:
    """List the fleet: health, device kind and fingerprint of every device (exit 1 when one is down or
    refuses the token)."""
    from edgetune.device_agents.fleet import load_fleet
    from edgetune.errors import AgentError

    rows = []
    with load_fleet(_fleet_path(fleet), timeout=timeout, retries=0) as fl:
        health = fl.health(timeout=timeout)
        for dev in fl:
            row = {"name": dev.name, "url": dev.spec.url, "status": "up", "kind": dev.spec.kind, "error": None}
            if isinstance(health[dev.name], Exception):
                row.update(status="down", error=str(health[dev.name]))
            else:
                try:
                    info = dev.info()
                    row.update(kind=dev.spec.kind or info.kind, info=info.model_dump(mode="json"))
                except AgentError as exc:
                    row.update(status="up (no info)", error=str(exc))
            rows.append(row)
    down = [r["name"] for r in rows if r["status"] != "up"]  # down, or up but refusing us (a wrong token)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        if down:
            raise typer.Exit(1)
        return
    from rich.table import Table

    table = Table(title="edgetune fleet")
    for col in ("name", "status", "kind", "board", "runtime", "threads/cpus", "power mode", "temp C", "url"):
        table.add_column(col)
    for r in rows:
        info = r.get("info") or {}
        rt = info.get("runtime") or {}
        agent = info.get("agent") or {}
        temps = info.get("temperatures_c") or {}
        table.add_row(r["name"], r["status"] if not r["error"] else f"{r['status']}: {r['error']}",
                      r["kind"] or "?", (info.get("board") or {}).get("model", ""),
                      f"{rt.get('name', '')} {rt.get('version') or ''}".strip(),
                      f"{agent.get('threads', '')}/{','.join(map(str, agent.get('cpus', []))) or 'any'}" if agent else "",
                      info.get("power_mode") or "", f"{max(temps.values()):.0f}" if temps else "", r["url"])
    _console().print(table)
    if down:  # a script can tell: exit 1 when a device does not answer
        _console().print(f"down or refusing: {', '.join(down)}")
        raise typer.Exit(1)


def measure_cmd(
    model: Path = typer.Argument(..., help="ONNX file to measure."),
    device: str = typer.Option(..., "--device", help="Device name in the fleet, or an agent URL."),
    fleet: Path = typer.Option(None, help="Fleet or sweep YAML (default: $EDGETUNE_FLEET or ./fleet.yaml)."),
    token_env: str = typer.Option("EDGETUNE_AGENT_TOKEN", help="With a URL --device: the token's variable."),
    data: str = typer.Option(None, help="Also measure accuracy on this data (builtin:shapes, yolo:PATH, ...)."),
    val_images: int = typer.Option(200, help="Validation images in the dataset bundle."),
    warmup: int = typer.Option(20),
    min_runs: int = typer.Option(100),
    min_seconds: float = typer.Option(1.0),
    threads: int = typer.Option(None, help="Intra-op threads (default: the agent's)."),
    batch: int = typer.Option(1),
    providers: str = typer.Option(None, help="Comma-separated onnxruntime execution providers."),
    as_json: bool = typer.Option(False, "--json", help="Print the Measurement as JSON."),
) -> None:
    """Measure one ONNX model on one device: latency (model-only and end-to-end), memory, power, accuracy."""
    from edgetune.device_agents.protocol import LatencySpec
    from edgetune.errors import ConfigError

    if not model.is_file():
        raise ConfigError(f"model file '{model}' does not exist.")
    fl, name = _device(device, fleet, token_env)
    bundle = _cli_bundle(model, data, val_images) if data else None
    spec = LatencySpec(warmup=warmup, min_runs=min_runs, min_seconds=min_seconds, threads=threads, batch=batch,
                       keep_samples=as_json)
    with fl, fl.lease(name) as client:
        m = client.measure(model, dataset=bundle, latency=spec,
                           providers=[p.strip() for p in providers.split(",")] if providers else None)
    if as_json:
        typer.echo(m.model_dump_json(indent=2))
        return
    _print_measurement(m)


def _device(device: str, fleet: Path | None, token_env: str):
    """(Fleet, device name) for ``--device``: a name in the fleet file, or an agent URL."""
    from edgetune.device_agents.fleet import DeviceSpec, Fleet, load_fleet

    if device.startswith(("http://", "https://")):
        return Fleet([DeviceSpec(name="cli", url=device, token_env=token_env)]), "cli"
    return load_fleet(_fleet_path(fleet)), device


def compare_cmd(
    models: list[Path] = typer.Argument(..., help="Two or more ONNX files; the first is the reference."),
    device: str = typer.Option(..., "--device", help="Device name in the fleet, or an agent URL."),
    fleet: Path = typer.Option(None, help="Fleet or sweep YAML (default: $EDGETUNE_FLEET or ./fleet.yaml)."),
    token_env: str = typer.Option("EDGETUNE_AGENT_TOKEN", help="With a URL --device: the token's variable."),
    runs: int = typer.Option(300, help="Timed runs per model."),
    burst: int = typer.Option(5, help="Timed runs per model per turn (after one untimed run)."),
    warmup: int = typer.Option(10),
    threads: int = typer.Option(None, help="Intra-op threads (default: the agent's)."),
    as_json: bool = typer.Option(False, "--json", help="Print the Comparison as JSON."),
) -> None:
    """Time ONNX models side by side on one device (one process, interleaved): is the compressed one faster?"""
    from rich.table import Table

    from edgetune.errors import ConfigError

    missing = [str(m) for m in models if not m.is_file()]
    if missing or len(models) < 2:
        raise ConfigError(f"model file(s) not found: {', '.join(missing)}." if missing
                          else "give at least two ONNX files to compare (the first is the reference).")
    fl, name = _device(device, fleet, token_env)
    with fl, fl.lease(name) as client:
        shas = [client.upload_artifact(m) for m in models]
        if len(set(shas)) != len(shas):
            raise ConfigError("two of the files are the same model (same sha256); compare distinct files.")
        c = client.compare(shas, runs=runs, burst=burst, warmup=warmup, threads=threads)
    if as_json:
        typer.echo(c.model_dump_json(indent=2))
        return
    table = Table(title=f"{c.device.name} ({c.device.kind}): {c.runtime.name} {c.runtime.version}, {c.threads} "
                        f"thread(s), {c.runs} interleaved runs each (bursts of {c.burst})")
    for col in ("model", "p50 ms", "95% CI of p50", "p90 ms", "speed-up vs first"):
        table.add_column(col, justify="right" if col != "model" else "left")
    ref = c.latency[shas[0]].p50_ms
    for m, sha in zip(models, shas, strict=True):
        s = c.latency[sha]
        table.add_row(str(m), f"{s.p50_ms:.3f}", f"[{s.ci95_low_ms:.3f}, {s.ci95_high_ms:.3f}]", f"{s.p90_ms:.3f}",
                      f"{ref / s.p50_ms:.2f}x")
    _console().print(table)


def _cli_bundle(model: Path, data: str, val_images: int):
    """A dataset bundle for a plain ONNX detector: input size from the graph, head from the dataset."""
    import onnx

    from edgetune.config import parse_data_ref
    from edgetune.data import load_data
    from edgetune.device_agents.bundle import make_bundle
    from edgetune.models.heads import ClassifyHead, DetectHead, layout_of

    graph = onnx.load(str(model), load_external_data=False).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    size = int(dims[-1].dim_value)
    spec = parse_data_ref(data).model_copy(update={"val_images": val_images})
    val = load_data(spec).val
    if val.task == "detect":  # an end-to-end (NMS-free) export outputs (N, K, 6)
        out = [d.dim_value or d.dim_param for d in graph.output[0].type.tensor_type.shape.dim]
        head = DetectHead(num_classes=val.num_classes, category_ids=tuple(val.category_ids),
                          layout=layout_of(out, val.num_classes))
    else:
        head = ClassifyHead(num_classes=val.num_classes, category_ids=tuple(val.category_ids))
    return make_bundle(val, head, size=size)


def _print_measurement(m) -> None:
    from rich.table import Table

    console = _console()
    table = Table(title=f"{m.device.name} ({m.device.kind}): {m.runtime.name} {m.runtime.version}, "
                        f"{', '.join(m.runtime.providers_used)}, {m.threads} thread(s), cpus {m.cpus or 'any'}")
    for col in ("", "p50 ms", "p90 ms", "p99 ms", "mean ms", "95% CI of p50", "n"):
        table.add_column(col, justify="right")
    for label, s in (("model only", m.latency), ("end to end", m.end_to_end)):
        if s is not None:
            table.add_row(label, f"{s.p50_ms:.3f}", f"{s.p90_ms:.3f}", f"{s.p99_ms:.3f}", f"{s.mean_ms:.3f}",
                          f"[{s.ci95_low_ms:.3f}, {s.ci95_high_ms:.3f}]", str(s.n))
    console.print(table)
    if m.accuracy:
        console.print("accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in list(m.accuracy.items())[:4])
                      + f" ({m.accuracy_images} images)")
    if m.power:
        console.print(f"power: {m.power.total_mw:.0f} mW ({m.power.source}), "
                      f"{m.power.energy_per_inference_mj or float('nan'):.3f} mJ/inference")
    model_mem = "" if m.model_rss_bytes is None else (f"model {m.model_rss_bytes / 2**20:.1f} MiB loaded, "
                                                      f"{(m.run_rss_bytes or 0) / 2**20:.1f} MiB running; ")
    console.print(f"{model_mem}process peak RSS {(m.peak_rss_bytes or 0) / 2**20:.1f} MiB, wall {m.wall_s:.1f} s"
                  + (f"\nTHROTTLED while measuring: {', '.join(m.throttled)}" if m.throttled else "")
                  + "".join(f"\nwarning: {w}" for w in m.warnings))
