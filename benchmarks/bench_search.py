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
  ``one-agent``  ``search.overlap: off``: one trial after the other (``pool2``'s baseline when the config
                 overlaps)
  ``tpe`` / ``nsga2`` / ``random`` / ``gp``   that ``search.sampler`` (``+screen``: with ``search.screen: on``,
                 e.g. ``nsga2+screen``)

``--reference N`` first runs the config with the random sampler for N trials (e.g. 400; same seed as the
config, so the ``random`` variant is its first trials) as the reference front, then reports each variant's hypervolume as a share of the reference front's, and how many of the
reference's random trials (in their order) reach the variant's hypervolume. Hypervolumes are computed as the
sweep computes its own: each run's objectives divided by its own fp32 baseline (latency: the paired ratio),
reference point 0 for accuracy and 1.1 for latency and size; the feasible trials only.

Each sweep's own side-by-side check runs as configured; wall times are single runs (say so when quoting
them), the ratios and the hypervolume come from the sweep's paired timings.

    .venv/bin/python benchmarks/bench_search.py [configs/demo.yaml] [--variants base,pool2] [--trials 40]
    .venv/bin/python benchmarks/bench_search.py --reference 400 --variants tpe,nsga2,random,tpe+screen,nsga2+screen
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

VARIANTS = ("base", "screen-on", "pool2", "overlap", "one-agent")
SAMPLERS = ("tpe", "nsga2", "random", "gp")


def check_variant(v: str) -> None:
    name, _, extra = v.partition("+")
    if v == "reference" or (name in VARIANTS and not extra) or (name in SAMPLERS and extra in ("", "screen")):
        return
    raise SystemExit(f"unknown variant {v!r}; variants: {', '.join(VARIANTS)}, a sampler ({', '.join(SAMPLERS)}) "
                     "optionally with +screen")


def variant_config(cfg: dict, variant: str, out: Path, trials: int | None) -> dict:
    cfg = json.loads(json.dumps(cfg))
    cfg["name"] = f"{cfg['name']}-{variant.replace('+', '-')}"
    search = cfg.setdefault("search", {})
    search["storage"] = f"sqlite:///{out / 'optuna.db'}"
    if trials:
        search["trials"] = trials
    cfg["tracking"] = {"uri": f"sqlite:///{out / 'mlflow.db'}", "experiment": cfg["name"]}
    name, _, extra = variant.partition("+")
    if variant == "reference":
        search["sampler"] = "random"
    elif name in SAMPLERS:
        search["sampler"] = name
        if extra == "screen":
            search["screen"] = "on"
    if variant == "screen-on":
        search["screen"] = "on"
    elif variant == "overlap":
        search["overlap"] = "on"
    elif variant == "one-agent":
        search["overlap"] = "off"
    elif variant == "pool2":
        dev = cfg["devices"][0]
        dev["pool"] = ["http://127.0.0.1:1"]  # replaced by the second local agent's URL
    return cfg


def run_one(config: Path, variant: str, out: Path, trials: int | None) -> dict:
    """One variant's sweep in this process (called in a fresh one by :func:`main`)."""
    from edgetune.device_agents.local import start_local_agents
    from edgetune.search.front import _feasible, _matrix, fastest_close_to_fp32, sweep_hypervolume
    from edgetune.search.wiring import agents_needed, isolate_for_overlap, prepare_sweep

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
        isolate_for_overlap(load_sweep_config(path), agents)  # as `edgetune search --local` does
        sweep, space, scfg = prepare_sweep(path, workdir=out / "work", local_agents=agents)
        sweep.run(space)
    wall = time.time() - t0
    trials_ = sweep.study.get_trials(deepcopy=False)
    df = sweep.frame()
    best = fastest_close_to_fp32(df, sweep.keys)
    base = sweep.baseline_values() or {}
    rows, mat = _matrix(_feasible(trials_), sweep.keys)
    points = [[int(t.number), *(float(v) / abs(base[k]) if base.get(k) else float(v)
                                for k, v in zip(sweep.keys, row, strict=True))]
              for t, row in zip(rows, mat.tolist(), strict=True)]
    return {"variant": variant, "wall_s": round(wall, 1),
            "complete": sum(t.state.name == "COMPLETE" for t in trials_),
            "skipped": sum(t.state.name == "PRUNED" for t in trials_),
            "split": sweep.time_split(),
            "hypervolume": sweep_hypervolume(trials_, sweep.keys, sweep.goals, sweep.baseline_values()),
            "fastest_within_1pt": None if best is None else {k: best[k] for k in best if k in (
                "trial", "label", "speedup", "accuracy", "side_by_side")},
            "screen": sweep.screen_summary(), "goals": list(sweep.goals), "points": points}


def normalised_hv(points: list, goals: list[str], *, below: int | None = None) -> float:
    """Hypervolume of ``points`` ([trial, objectives divided by fp32's]) of trials numbered below ``below``."""
    from edgetune.objectives.pareto import hypervolume

    pts = [p[1:] for p in points if below is None or p[0] < below]
    return hypervolume(pts, goals, [1.0] * len(goals)) if pts else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config", nargs="?", default="configs/demo.yaml", type=Path)
    ap.add_argument("--variants", default="base,pool2")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path(".bench-search"))
    ap.add_argument("--reference", type=int, default=None, help="first run a random sweep of this many trials as "
                    "the reference front (e.g. 400)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        res = run_one(a.config, a.one, a.out / a.one, a.trials)
        print("RESULT " + json.dumps(res, default=str))
        return
    variants = [v.strip() for v in a.variants.split(",") if v.strip()]
    for v in variants:
        check_variant(v)
    if a.reference:
        variants = ["reference", *variants]
    print(f"machine: {machine()}")
    results = []
    for v in variants:
        cmd = [sys.executable, __file__, str(a.config), "--one", v, "--out", str(a.out)]
        if v == "reference":
            cmd += ["--trials", str(a.reference)]
        elif a.trials:
            cmd += ["--trials", str(a.trials)]
        print(f"== {v}: {' '.join(cmd)}", flush=True)
        out = subprocess.run(cmd, capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if out.returncode != 0 or line is None:
            print(out.stdout[-3000:], out.stderr[-3000:])
            raise SystemExit(f"variant {v} failed (exit {out.returncode})")
        res = json.loads(line[len("RESULT "):])
        results.append(res)
        (a.out / f"{v}.json").write_text(json.dumps(res, indent=1))
        print(json.dumps({k: x for k, x in res.items() if k != "points"}, indent=1), flush=True)
    print("\n| variant | wall | complete / skipped | compression / device / screen / framework | hypervolume "
          "| fastest within 1 pt |")
    print("|---|---|---|---|---|---|")
    for r in results:
        s = r["split"] or {}
        f = r["fastest_within_1pt"] or {}
        print(f"| {r['variant']} | {r['wall_s'] / 60:.1f} min | {r['complete']} / {r['skipped']} | "
              f"{s.get('compress_pct')} / {s.get('device_pct')} / {s.get('screen_pct')} / {s.get('framework_pct')} % | "
              f"{r['hypervolume']:.4g} | {f.get('label', '-')} {f.get('speedup', '')} |")
    if a.reference:
        reference_table(results)


def reference_table(results: list[dict]) -> None:
    """Each variant's hypervolume against the reference front's, and the random trials that match it."""
    ref = results[0]
    goals, n_ref = ref["goals"], max((p[0] for p in ref["points"]), default=0) + 1
    hv_ref = normalised_hv(ref["points"], goals)
    if hv_ref <= 0:
        print("\nreference: no feasible point beats fp32; no hypervolume to compare with")
        return
    curve = [normalised_hv(ref["points"], goals, below=k) for k in range(1, n_ref + 1)]
    print(f"\nreference: {ref['complete']} random trials, hypervolume {hv_ref:.4g}")
    print("| variant | trials | hypervolume | share of the reference | random trials to match |")
    print("|---|---|---|---|---|")
    for r in results[1:]:
        hv = normalised_hv(r["points"], goals)
        n = r["complete"] + r["skipped"]
        k = next((i + 1 for i, h in enumerate(curve) if h >= hv), None)
        match = f"{k} ({k / n:.1f}x)" if k else f"not within its {ref['complete'] + ref['skipped']}"
        print(f"| {r['variant']} | {n} | {hv:.4g} | {hv / hv_ref:.1%} | {match} |")


if __name__ == "__main__":
    main()
