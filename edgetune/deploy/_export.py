"""``export``: the deployable folder of one trial, for people who deploy by hand.

``model.onnx`` + ``manifest.json`` (the artifact, hash-checked), ``summary.json`` (the sweep's measured
numbers per device with their fingerprints), ``README.md`` (the same numbers and how to load the model)
and, when a sweep device runs TensorRT (a Jetson), ``build_engine.sh``: the ``trtexec`` command that builds
the engine on the board the way the agent's TensorRT runtime does (strongly typed: the precision comes
from the ONNX graph, so TensorRT 10 and 11 build the same precisions).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgetune.errors import ConfigError

__all__ = ["export_trial", "tensorrt_devices", "trtexec_command"]


def tensorrt_devices(records, point) -> list[str]:
    """Sweep devices that run TensorRT: declared ``jetson*`` kind, or a TensorRT runtime in the trial's fingerprint."""
    fps = point.record.fingerprints
    out = []
    for d in records.cfg.devices:
        fp = fps.get(d.name) or {}
        kind = d.kind or fp.get("kind") or ""
        if kind.startswith("jetson") or str(fp.get("runtime", "")).startswith("tensorrt"):
            out.append(d.name)
    return out


def trtexec_command(manifest: dict, *, onnx: str = "model.onnx", engine: str = "model.engine") -> str:
    kinds = (manifest.get("config") or {}).get("sparsity") or {}
    two_four = any((v or {}).get("kind") == "2:4" for v in kinds.values() if isinstance(v, dict))
    flags = ["--stronglyTyped", "--timingCacheFile=timing.cache"] + (["--sparsity=enable"] if two_four else [])
    return f"trtexec --onnx={onnx} --saveEngine={engine} " + " ".join(flags)


def _script(manifest: dict) -> str:
    return "\n".join([
        "#!/bin/sh",
        "# Build the TensorRT engine ON THE BOARD (engines are specific to the TensorRT version and the GPU).",
        "# The precision is in the ONNX graph (QDQ int8 / fp16 casts); --stronglyTyped keeps it (TensorRT 10.x,",
        "# JetPack 6); on TensorRT 11 strong typing is always on and the flag is a no-op.",
        "# trtexec is in /usr/src/tensorrt/bin on JetPack. Lock clocks first: sudo nvpmodel -m <mode>; sudo jetson_clocks",
        "set -e",
        'cd "$(dirname "$0")"',
        "TRTEXEC=${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}",
        '"$TRTEXEC" ' + trtexec_command(manifest).removeprefix("trtexec "),
        "# Python instead: builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) on 10.x,",
        "# builder.create_network(0) on 11.x; parse model.onnx; builder.build_serialized_network(network, config).",
        "",
    ])


def _by_device(values: dict[str, float]) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    per: dict[str, dict[str, float]] = {}
    common = {}
    for k, v in sorted(values.items()):
        metric, _, dev = k.partition("@")
        if dev:
            per.setdefault(dev, {})[metric] = v
        else:
            common[k] = v
    return per, common


def export_trial(*, sweep, out: str | Path, trial: int | None = None, rule: str | None = None,
                 workdir: str | Path = ".edgetune", rebuild: bool = True, force: bool = False) -> dict:
    """Write the folder; returns the summary (also written as ``summary.json``)."""
    from edgetune.deploy._deploy import how_to_load, resolve_point
    from edgetune.deploy._fetch import fetch_artifact
    from edgetune.deploy._sweep import load_sweep

    records = load_sweep(sweep)
    point = resolve_point(records, trial=trial, rule=rule)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out '{out}' is not empty; choose a new folder or pass --force to overwrite its files.")
    art, source = fetch_artifact(records, point, workdir=workdir, rebuild=rebuild)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(art.onnx_path, out / "model.onnx")
    (out / "manifest.json").write_text(json.dumps(art.manifest, indent=2, sort_keys=True))
    per_device, common = _by_device(point.values)
    trt = tensorrt_devices(records, point)
    summary = {"sweep": records.name, "trial": point.number, "label": point.label, "baseline": point.baseline,
               "pareto": point.pareto, "artifact_hash": art.hash, "onnx_sha256": art.manifest.get("onnx_sha256"),
               "artifact_from": source, "objectives": dict(zip(records.keys, records.goals, strict=True)),
               "values": common, "devices": per_device, "fingerprints": point.record.fingerprints,
               "config_summary": point.record.summary, "tensorrt_devices": trt}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    if trt:
        script = out / "build_engine.sh"
        script.write_text(_script(art.manifest))
        script.chmod(0o755)
        summary["build_engine"] = trtexec_command(art.manifest)
    runtime = point.record.runtime or "ort"  # the snippet loads the file with the runtime the sweep measured
    (out / "README.md").write_text(_readme(summary, art.manifest, how_to_load(path="model.onnx", manifest=art.manifest,
                                                                              runtime=runtime)))
    return summary


def _readme(summary: dict, manifest: dict, load: str) -> str:
    lines = [f"# {summary['sweep']} / trial {summary['trial']} ({summary['label']})", "",
             f"Artifact {summary['artifact_hash']}; model.onnx sha256 {summary['onnx_sha256']}.", "",
             "| device | metric | value |", "|---|---|---|"]
    for dev, vals in summary["devices"].items():
        lines += [f"| {dev} | {k} | {v:.6g} |" for k, v in vals.items()]
    lines += [f"| - | {k} | {v:,.0f} |" for k, v in summary["values"].items()]
    lines += ["", "Measured by the sweep on each device; `summary.json` has the device fingerprints.", "",
              "## Load it", "", "```python", load.replace("\n  ", "\n").strip(), "```", ""]
    if summary.get("build_engine"):
        lines += ["## TensorRT", "", "On the board: `sh build_engine.sh`, i.e.", "", f"    {summary['build_engine']}", ""]
    return "\n".join(lines)
