"""The x86 controller half of ``scripts/check_aarch64.sh`` (run with the controller's venv python).

Compresses det-s (fp32, int8-uniform) with ``edgetune compress``, starts an x86 agent from this venv,
measures both artifacts on it and on the aarch64 agent (already running, emulated) with accuracy computed
by each agent from its own runtime's outputs on the same dataset bundle, prints the aarch64 fingerprint
and a table, and exits 1 when an mAP50-95 differs by more than ``--tolerance``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

MODELS = ("fp32", "int8-uniform")
# Latency under emulation means nothing: time as little as the agent allows, accuracy is what counts.
LATENCY = {"warmup": 1, "min_runs": 5, "max_runs": 5, "min_seconds": 0.0, "end_to_end": False,
           "keep_samples": False}


def log(msg: str) -> None:
    print(f"==> [{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def small_config(src: Path, out: Path, val_images: int) -> Path:
    """A copy of the sweep config with ``data.val_images`` lowered (emulated accuracy runs are slow)."""
    raw = yaml.safe_load(src.read_text())
    raw["data"]["val_images"] = val_images
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def compress(config: Path, point: str, out: Path) -> Path:
    cmd = [str(Path(sys.executable).with_name("edgetune")), "compress", str(config), "--point", point,
           "--out", str(out)]
    log(" ".join(cmd))
    subprocess.run(cmd, check=True, env={**os.environ, "COLUMNS": "120"})
    return out / "model.onnx"


def fingerprint_lines(info) -> list[str]:
    cpu, osi, rt, board = info.cpu, info.os, info.runtime, info.board
    flags = ", ".join(f for f, on in (("dotprod", cpu.dotprod), ("i8mm", cpu.i8mm)) if on) or "none"
    lines = [
        f"name / kind        {info.name} / {info.kind} (detected: {info.detected_kind})",
        f"machine (board)    {board.vendor}: {board.model}" + (f", soc {board.soc}" if board.soc else ""),
        f"CPU                {cpu.model}, arch {cpu.arch}, {cpu.logical_cores} logical cores, "
        f"flags [{' '.join(cpu.features)}] (arm dot-product/i8mm: {flags})",
        f"OS                 {osi.name}, kernel {osi.kernel}, python {osi.python}",
        f"runtime            {rt.name} {rt.version}, providers {', '.join(rt.available_providers)}",
        f"memory             {info.memory_bytes / 2**30:.1f} GiB",
        f"edgetune           {info.edgetune_version} (protocol {info.protocol}), "
        f"agent threads {info.agent.threads}",
    ]
    if cpu.arch == "aarch64" and {"avx2", "fma"} & set(cpu.features):
        lines.append("note               QEMU user mode passes the x86 host's /proc/cpuinfo through: "
                     "the CPU model and flags above describe the host, not an ARM core")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--arm-url", required=True)
    ap.add_argument("--arm-token-file", type=Path, required=True)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--val-images", type=int, default=50)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--tolerance", type=float, default=1e-3)
    ap.add_argument("--arm-versions", default="", help="Versions reported by the aarch64 venv (printed as is).")
    args = ap.parse_args()
    # SIGTERM (check_aarch64.sh cleaning up) unwinds normally: the x86 agent is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from edgetune.config import load_sweep_config
    from edgetune.data import load_data
    from edgetune.device_agents import AgentClient, LatencySpec, make_bundle
    from edgetune.device_agents.local import start_local_agents
    from edgetune.models.heads import head_from_dict

    work = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    cfg_path = small_config(args.config, work / "config.yaml", args.val_images)
    log(f"config {cfg_path}: {args.config.name} with data.val_images = {args.val_images}")

    t = time.monotonic()
    models = {p: compress(cfg_path, p, work / "models" / p) for p in MODELS}
    t_compress = time.monotonic() - t

    cfg = load_sweep_config(cfg_path)
    val = load_data(cfg.data).val
    bundles = {}
    for p, onnx in models.items():
        manifest = json.loads(onnx.with_name("manifest.json").read_text())
        bundles[p] = make_bundle(val, head_from_dict(manifest["head"]), size=int(manifest["input"]["shape"][-1]))
    log(f"dataset bundle: {len(val)} shapes validation images, {len(bundles['fp32'].data) / 2**20:.1f} MiB")

    spec = LatencySpec(**LATENCY)
    arm = AgentClient(args.arm_url, token=args.arm_token_file.read_text().strip(), name="arm64",
                      timeout=120.0, measure_timeout=4 * 3600.0, retries=5)
    info = arm.info()
    if info.cpu.arch != "aarch64":
        print(f"ERROR: the agent at {args.arm_url} reports arch '{info.cpu.arch}', not aarch64: it is not the "
              "emulated agent. Stop what listens on that port and rerun.", file=sys.stderr)
        return 1

    results: dict[str, dict[str, object]] = {}
    t = time.monotonic()
    log("starting an x86 agent from this venv (edgetune.device_agents.local.start_local_agents)")
    with start_local_agents(1, threads=1, name_prefix="x86", workdir=work / "x86-agent",
                            extra_args=("--timeout", "3600")) as agents:
        x86_url = agents.agents[0].url
        fleet_file = work / "fleet.yaml"
        fleet_file.write_text(yaml.safe_dump({"devices": [
            {"name": "x86-0", "url": x86_url, "token_file": str(agents.token_file), "kind": "local-cpu"},
            {"name": "arm64", "url": args.arm_url, "token_file": str(args.arm_token_file), "kind": "local-cpu"},
        ]}, sort_keys=False))
        log(f"edgetune devices --fleet {fleet_file}")
        subprocess.run([str(Path(sys.executable).with_name("edgetune")), "devices", "--fleet", str(fleet_file),
                        "--timeout", "60"], check=False, env={**os.environ, "COLUMNS": "200"})
        with AgentClient(x86_url, token=agents.token, name="x86-0", measure_timeout=3600.0) as x86:
            for p, onnx in models.items():
                for side, client in (("x86", x86), ("aarch64", arm)):
                    log(f"measuring {p} on {side} ({client.url}) with accuracy on {bundles[p].num_images} images")
                    t1 = time.monotonic()
                    m = client.measure(onnx, dataset=bundles[p], latency=spec, timeout_s=3 * 3600.0)
                    results.setdefault(p, {})[side] = m
                    log(f"  {side}: mAP50-95 {m.accuracy['map50_95']:.6f}, runtime {m.runtime.name} "
                        f"{m.runtime.version} ({', '.join(m.runtime.providers_used)}), arch {m.device.cpu.arch}, "
                        f"{time.monotonic() - t1:.0f} s")
    arm.close()
    t_measure = time.monotonic() - t

    print("\naarch64 agent fingerprint (GET /info):")
    for line in fingerprint_lines(info):
        print("  " + line)
    if args.arm_versions:
        print(f"  agent venv         {args.arm_versions}")

    ok = True
    rows = []
    for p in MODELS:
        mx, ma = results[p]["x86"], results[p]["aarch64"]
        if ma.device.cpu.arch != "aarch64" or mx.device.cpu.arch != "x86_64":
            print(f"ERROR: {p}: measured on arch {mx.device.cpu.arch} / {ma.device.cpu.arch}, "
                  "expected x86_64 / aarch64")
            ok = False
        a, b = mx.accuracy["map50_95"], ma.accuracy["map50_95"]
        diff = abs(a - b)
        ok &= diff <= args.tolerance
        rows.append((p, f"{a:.6f}", f"{b:.6f}", f"{diff:.2e}", "ok" if diff <= args.tolerance else "MISMATCH",
                     f"{mx.latency.p50_ms:.2f}", f"{ma.latency.p50_ms:.1f}", str(ma.accuracy_images)))
    head = ("model", "mAP50-95 x86", "mAP50-95 aarch64", "|diff|", f"<= {args.tolerance:g}", "p50 ms x86",
            "p50 ms aarch64 (emulated, meaningless)", "images")
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print()
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(f"\nlatency: {LATENCY['min_runs']} runs after {LATENCY['warmup']} warm-up, 1 thread; the aarch64 "
          "numbers are QEMU user-mode emulation on x86 and say nothing about any ARM device.")
    print(f"controller: compress {t_compress:.0f} s, measurements (both agents) {t_measure:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
