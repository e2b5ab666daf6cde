"""How much a sweep costs and what it finds, variant against variant, on this machine.

Runs one sweep config (default: the demo) once per variant, each in a fresh process, fresh Optuna storage,
MLflow store and workdir (the machine-wide export cache and the datasets are shared, as a user's are), with
local agents started here, and prints per variant: wall time, trials complete / skipped, the time split
(compression / device / screening / framework), the hypervolume of the feasible front against the fp32
baseline as reference point (the sweep's own metric), the fastest point within 1 accuracy point of fp32
(its paired speed-up over fp32), and the screen's report (the latency predictor's held-out error, what the
rule skipped or would have skipped, false skips).

Variants (``--variants``, comma separated):
  ``base``       the config as it is (``search.screen`` as configured, shadow by default)
  ``screen-on``  ``search.screen: on``: candidates predicted out of reach are not measured
  ``pool2``      the device served by a pool of two local agents (trials two at once), no host lock: the two
                 agents measure at the same time on their own cores while the controller compresses
  ``overlap``    ``search.overlap: on`` (compression of the next trial while the current one is measured)

Each sweep's own side-by-side check runs as configured; wall times are single runs (say so when quoting
them), the ratios and the hypervolume come from the sweep's paired timings.

    nice -n 10 .venv/bin/python benchmarks/bench_search.py [configs/demo.yaml] [--variants base,pool2] [--trials 40]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_compress import machine  # noqa: E402

VARIANTS = ("base", "screen-on", "pool2", "overlap")


def variant_config(cfg: dict, variant: str, out: Path, trials: int | None) -> dict:
    cfg = json.loads(json.dumps(cfg))
    cfg["name"] = f"{cfg['name']}-{variant}"
    search = cfg.setdefault("search", {})
    search["storage"] = f"sqlite:///{out / 'optuna.db'}"
    if trials:
        search["trials"] = trials
    cfg["tracking"] = {"uri": f"sqlite:///{out / 'mlflow.db'}", "experiment": cfg["name"]}
    if variant == "screen-on":
        search["screen"] = "on"
    elif variant == "overlap":
        search["overlap"] = "on"
    elif variant == "pool2":
        dev = cfg["devices"][0]
        dev["pool"] = ["http://127.0.0.1:1"]  # replaced by the second local agent's URL
    return cfg


def run_one(config: Path, variant: str, out: Path, trials: int | None) -> dict:
    """One variant's sweep in this process (called in a fresh one by :func:`main`)."""
    from edgetune.device_agents.local import start_local_agents
    from edgetune.search.front import fastest_close_to_fp32, sweep_hypervolume
    from edgetune.search.wiring import agents_needed, prepare_sweep

    out.mkdir(parents=True, exist_ok=True)
    cfg = variant_config(yaml.safe_load(config.read_text()), variant, out, trials)
    path = out / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    from edgetune.config import load_sweep_config

    runtimes = ",".join(load_sweep_config(path).space.runtime) or "ort"
    extra = ("--no-host-lock",) if variant == "pool2" else ()
    t0 = time.time()
    with start_local_agents(agents_needed(load_sweep_config(path)), threads=1, workdir=out / "agents",
                            runtime=runtimes, extra_args=extra) as agents:
        sweep, space, scfg = prepare_sweep(path, workdir=out / "work", local_agents=agents)
        sweep.run(space)
    wall = time.time() - t0
    trials_ = sweep.study.get_trials(deepcopy=False)
    df = sweep.frame()
    best = fastest_close_to_fp32(df, sweep.keys)
    return {"variant": variant, "wall_s": round(wall, 1),
            "complete": sum(t.state.name == "COMPLETE" for t in trials_),
            "skipped": sum(t.state.name == "PRUNED" for t in trials_),
            "split": sweep.time_split(),
            "hypervolume": sweep_hypervolume(trials_, sweep.keys, sweep.goals, sweep.baseline_values()),
            "fastest_within_1pt": None if best is None else {k: best[k] for k in best if k in (
                "trial", "label", "speedup", "accuracy", "side_by_side")},
            "screen": sweep.screen_summary()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", nargs="?", default="configs/demo.yaml", type=Path)
    ap.add_argument("--variants", default="base,pool2")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path(".bench-search"))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        res = run_one(a.config, a.one, a.out / a.one, a.trials)
        print("RESULT " + json.dumps(res, default=str))
        return
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variant(s) {', '.join(bad)}; variants: {', '.join(VARIANTS)}")
    print(f"machine: {machine()}")
    results = []
    for v in variants:
        cmd = [sys.executable, __file__, str(a.config), "--one", v, "--out", str(a.out)]
        if a.trials:
            cmd += ["--trials", str(a.trials)]
        print(f"== {v}: {' '.join(cmd)}", flush=True)
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if out.returncode != 0 or line is None:
            print(out.stdout[-3000:], out.stderr[-3000:])
            raise SystemExit(f"variant {v} failed (exit {out.returncode})")
        res = json.loads(line[len("RESULT "):])
        results.append(res)
        print(json.dumps(res, indent=1), flush=True)
    print("\n| variant | wall | complete / skipped | compression / device / screen / framework | hypervolume "
          "| fastest within 1 pt |")
    print("|---|---|---|---|---|---|")
    for r in results:
        s = r["split"] or {}
        f = r["fastest_within_1pt"] or {}
        print(f"| {r['variant']} | {r['wall_s'] / 60:.1f} min | {r['complete']} / {r['skipped']} | "
              f"{s.get('compress_pct')} / {s.get('device_pct')} / {s.get('screen_pct')} / {s.get('framework_pct')} % | "
              f"{r['hypervolume']:.4g} | {f.get('label', '-')} {f.get('speedup', '')} |")


if __name__ == "__main__":
    main()
