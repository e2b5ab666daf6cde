"""Paired timing under load: does the front a sweep reports agree with the side-by-side check at its end?

Runs a sweep (default ``configs/demo.yaml``) with a local agent while CPU-bound burner processes load the
box in phases (``--burn-on`` s at full load on every core, ``--burn-off`` s idle, repeating), so the device's
speed changes from trial to trial, as on a shared machine. Then compares, on the fp32 baseline and the front
members (everything the side-by-side check at the end timed), two orders against the side-by-side one:

- **paired**: what the sweep ranks on, each trial's ratio to fp32 timed in turns in its own request x the
  anchor (``search.paired_timing``, the default),
- **own**: each trial's own timing loop (``own_latency_p50_ms``): what the sweep ranked on before pairing.

For each: Kendall's tau against the side-by-side order (1: the same order), the pairs it puts the other way
round, and where the "fastest within 1 point of fp32" it would suggest ranks side by side. It also prints how
far fp32's own median moved during the sweep (the drift the pairing takes out).

    nice -n 5 .venv/bin/python benchmarks/bench_paired.py [--config configs/demo.yaml] [--workdir /tmp/paired]
        [--trials 40] [--burners 2] [--burn-on 20] [--burn-off 20] [--burn-cpus 1] [--analyze-only]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_compress import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _burn(on_s: float, off_s: float, seed: int, cpus: list[int] | None) -> None:
    """Full load for ``on_s`` seconds, idle for ``off_s``, forever (a phase offset per burner), on ``cpus``
    (None: wherever the scheduler puts it)."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    time.sleep(seed * on_s / 2)
    x = 1.0001
    while True:
        end = time.monotonic() + on_s
        while time.monotonic() < end:
            for _ in range(10_000):
                x = (x * x) % 7.0 + 1.0001
        time.sleep(off_s)


def analyze(config: Path) -> dict:
    from edgetune.search.front import accuracy_key, latency_key
    from edgetune.search.side_by_side import order_check
    from edgetune.search.wiring import load_front

    df, keys, _, _ = load_front(config)
    lat, acc = latency_key(keys), accuracy_key(keys)
    dev = lat.split("@")[1]
    sbs, own = f"sbs_{lat}", f"own_latency_p50_ms@{dev}"
    timed = df[df[sbs].notna()].copy() if sbs in df.columns else df.iloc[0:0]
    if len(timed) < 2:
        raise SystemExit("the sweep has no side-by-side check of two or more points (side_by_side_runs: 0?)")
    fp32 = timed[timed["baseline"] == "fp32"].iloc[0]
    close = timed[(timed[acc] >= fp32[acc] - 0.01) & (timed["baseline"] != "fp32")]
    sbs_rank = {int(n): i + 1 for i, n in enumerate(timed.sort_values(sbs)["trial"])}
    out: dict = {"device": dev, "points": len(timed)}
    for name, col in (("paired", lat), ("own", own)):
        # the sweep's own check (Kendall tau; pairs reversed beyond both timings' 95% CIs), on this column's order
        (check,) = order_check(timed.assign(**{lat: timed[col]}), [lat])
        fastest = int(close.loc[close[col].idxmin(), "trial"]) if len(close) else None
        out[name] = {"tau": check["tau"], "fastest_within_1pt": fastest, "its_side_by_side_rank": sbs_rank.get(fastest)}
    out["paired"]["reversed_beyond_noise"] = order_check(timed, keys)[0]["contradictions"]
    out["sbs_fastest_within_1pt"] = int(close.loc[close[sbs].idxmin(), "trial"]) if len(close) else None
    refs = df[f"ref_latency_p50_ms@{dev}"].dropna() if f"ref_latency_p50_ms@{dev}" in df else []
    out["fp32_own_p50_range_ms"] = [round(float(refs.min()), 3), round(float(refs.max()), 3)] if len(refs) else None
    out["table"] = [{"trial": int(r["trial"]), "label": r["label"], "paired_ms": round(float(r[lat]), 3),
                     "own_ms": round(float(r[own]), 3) if r.get(own) == r.get(own) else None,
                     "side_by_side_ms": round(float(r[sbs]), 3)} for _, r in timed.sort_values(sbs).iterrows()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "demo.yaml")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/edgetune-bench-paired"))
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--burners", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--burn-on", type=float, default=20.0)
    ap.add_argument("--burn-off", type=float, default=20.0)
    ap.add_argument("--burn-cpus", default=None, help="pin the burners to these CPUs, e.g. 1 (the local agent's "
                    "core: the hardest case, time slices shared with the measured model)")
    ap.add_argument("--analyze-only", action="store_true")
    args = ap.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load(args.config.read_text())
    cfg["search"]["storage"] = f"sqlite:///{args.workdir / 'optuna.db'}"
    cfg["tracking"]["uri"] = f"sqlite:///{args.workdir / 'mlflow.db'}"
    config = args.workdir / "sweep.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    if not args.analyze_only:
        cpus = [int(c) for c in args.burn_cpus.split(",")] if args.burn_cpus else None
        burners = [mp.Process(target=_burn, args=(args.burn_on, args.burn_off, i, cpus), daemon=True)
                   for i in range(args.burners)]
        for b in burners:
            b.start()
        t0 = time.time()
        try:
            cmd = [str(Path(sys.executable).parent / "edgetune"), "search", str(config), "--local",
                   "--workdir", str(args.workdir / "work")] + (["--trials", str(args.trials)] if args.trials else [])
            subprocess.run(cmd, check=True, cwd=ROOT)
        finally:
            for b in burners:
                b.terminate()
        print(f"sweep: {time.time() - t0:.0f} s with {args.burners} burner(s) {args.burn_on:g} s on / "
              f"{args.burn_off:g} s off" + (f" on cpu(s) {args.burn_cpus}" if args.burn_cpus else ""))
    result = analyze(config)
    result["machine"] = machine()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
