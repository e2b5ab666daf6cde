"""A small real sweep: a local agent process over HTTP, sqlite Optuna storage, sqlite MLflow store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgetune.search.records import RECORD_ATTR
from edgetune.search.tracking import Tracker
from edgetune.search.wiring import load_front, prepare_sweep

TRIALS = 4
SBS_RUNS = 30

pytestmark = pytest.mark.slow  # they share one real 4-trial sweep (~1 min to build)


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory, local_agent, sweep_workdir, make_sweep):
    tmp = tmp_path_factory.mktemp("sweep")
    path = make_sweep(tmp, name="e2e", trials=TRIALS, sbs_runs=SBS_RUNS, search={"screen": "shadow"})
    sweep, space, cfg = prepare_sweep(path, workdir=sweep_workdir, local_agents=local_agent)
    sweep.run(space)
    sweep.test_space = space  # for the last test, which runs one trial more
    return path, sweep, cfg


def test_every_trial_is_in_storage_with_the_baselines(finished_sweep):
    _, sweep, _ = finished_sweep
    trials = sweep.study.get_trials()
    assert len(trials) == TRIALS
    assert [t.user_attrs.get("baseline") for t in trials[:2]] == ["fp32", "int8-uniform"]
    assert all(t.state.name == "COMPLETE" for t in trials), [t.user_attrs.get(RECORD_ATTR, {}).get("error") for t in trials]
    fp32, int8 = (t.user_attrs[RECORD_ATTR]["values"] for t in trials[:2])
    assert int8["size_bytes"] <= 0.3 * fp32["size_bytes"]  # measured, not assumed
    assert fp32["map50_95@local"] > 0 and fp32["latency_p50_ms@local"] > 0


def test_every_trial_is_timed_in_turns_with_fp32_and_ranked_on_ratio_times_anchor(finished_sweep):
    """``search.paired_timing`` (on by default): each trial's latency objective is its paired ratio to fp32 in its
    own request times the anchor (fp32's p50 in the first paired measurement); its own timing is kept."""
    _, sweep, _ = finished_sweep
    trials = sweep.study.get_trials()
    anchor = sweep.study.user_attrs["paired_anchor"]["local"]
    fp32 = trials[0].user_attrs[RECORD_ATTR]
    assert anchor["trial"] == 0 and fp32["values"]["latency_ratio@local"] == 1.0
    assert anchor["p50"] == fp32["values"]["own_latency_p50_ms@local"] == fp32["values"]["latency_p50_ms@local"]
    for t in trials[1:]:
        rec = t.user_attrs[RECORD_ATTR]
        v, fp = rec["values"], rec["fingerprints"]["local"]
        assert v["latency_p50_ms@local"] == pytest.approx(v["latency_ratio@local"] * anchor["p50"])
        assert v["own_latency_p50_ms@local"] > 0 and v["ref_latency_p50_ms@local"] > 0
        low, high = fp["paired_ratio_ci95"]
        assert low <= v["latency_ratio@local"] <= high and fp["paired_runs"] == 10
        assert t.values[1] == v["latency_p50_ms@local"]  # what Optuna ranks on


def test_reported_front_is_non_dominated(finished_sweep):
    path, sweep, _ = finished_sweep
    df, keys, goals, _ = load_front(path)
    feasible = df[(df["state"] == "COMPLETE") & (df["feasible"])]
    pts = np.array([[-r[k] if g == "max" else r[k] for k, g in zip(keys, goals, strict=True)]
                    for _, r in feasible.iterrows()])
    brute = [not any(np.all(q <= p) and np.any(q < p) for q in pts) for p in pts]
    assert list(feasible["pareto"]) == brute
    assert df["pareto"].sum() >= 1
    infeasible = df[(df["state"] == "COMPLETE") & (~df["feasible"].astype(bool))]
    assert not infeasible["pareto"].any()


def test_mlflow_has_one_child_per_trial_with_objectives_and_config(finished_sweep):
    _, sweep, cfg = finished_sweep
    tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.name, sweep=cfg.name, readonly=True)
    children = tracker.child_runs()
    assert sorted(children) == list(range(TRIALS))
    df = sweep.frame()
    for number, run in children.items():
        assert run.info.status == "FINISHED"
        for k in ("map50_95.local", "latency_p50_ms.local", "size_bytes"):
            assert k in run.data.metrics
        files = {f.path for f in tracker.client.list_artifacts(run.info.run_id)}
        assert "config.json" in files
        local = tracker.client.download_artifacts(run.info.run_id, "config.json")
        config = json.loads(Path(local).read_text())["config"]
        assert "precision" in config and "sparsity" in config
        on_front = bool(df.loc[df["trial"] == number, "pareto"].iloc[0])
        assert run.data.tags["pareto"] == ("true" if on_front else "false")
        if on_front:
            model_files = {f.path for f in tracker.client.list_artifacts(run.info.run_id, "model")}
            assert "model/model.onnx" in model_files and "model/manifest.json" in model_files
    assert any(r.data.tags.get("baseline") == "fp32" for r in children.values())
    labels = {n: df.loc[df["trial"] == n, "label"].iloc[0] for n in children}
    assert all(r.info.run_name == f"trial-{n} {labels[n]}" for n, r in children.items())  # named by what was done


def test_parent_run_holds_the_front_reports(finished_sweep):
    _, sweep, cfg = finished_sweep
    tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.name, sweep=cfg.name, readonly=True)
    files = {f.path for f in tracker.client.list_artifacts(tracker.parent_id)}
    assert {"pareto.csv", "pareto.html", "pareto.png", "sweep.yaml"} <= files
    front_dirs = {f.path for f in tracker.client.list_artifacts(tracker.parent_id, "front")}
    assert front_dirs  # front members' ONNX + manifest
    metrics = tracker.client.get_run(tracker.parent_id).data.metrics
    assert metrics["hypervolume"] > 0 and metrics["n_complete"] == TRIALS
    html = Path(tracker.client.download_artifacts(tracker.parent_id, "pareto.html")).read_text()
    assert "plotly" in html.lower() and "Pareto front" in html
    parent = tracker.client.get_run(tracker.parent_id).data
    df = sweep.frame()
    for k in ("map50_95.local", "latency_p50_ms.local", "size_bytes"):  # each best names the trial it comes from
        n = int(parent.tags[f"best_{k}.trial"])
        assert df.loc[df["trial"] == n, k.replace(".local", "@local")].iloc[0] == pytest.approx(parent.metrics[f"best_{k}"])
    note = parent.tags["mlflow.note.content"]  # the run's description in the UI
    url = tracker.review_url("http://127.0.0.1:5000")  # the saved view of the front (the review test opens it)
    assert url == f"http://127.0.0.1:5000/#/experiments/{tracker.experiment_id}/runs?viewStateShareKey=edgetune-e2e-front"
    assert f"]({url.removeprefix('http://127.0.0.1:5000/')})" in note  # a link inside the UI: from any host
    for _, row in df[df["pareto"]].iterrows():
        assert f"| {row['trial']} | {row['label']} |" in note
        assert f"edgetune deploy {sweep.config_path} --trial {row['trial']} --device local" in note
    assert "Suggestions:" in note and "**smallest**: trial" in note
    assert "- side by side at the end (local, " in note  # the check of the paired front's order


def test_front_is_timed_again_side_by_side_with_fp32(finished_sweep):
    path, sweep, cfg = finished_sweep
    sbs = sweep.study.user_attrs["side_by_side"]
    assert sbs["n"] == SBS_RUNS
    df, _, _, _ = load_front(path)
    fp32 = int(df.loc[df["baseline"] == "fp32", "trial"].iloc[0])
    timed = {int(n) for n in sbs["values"]}
    assert sbs["baseline_trial"] == fp32
    assert timed == {fp32} | set(df.loc[df["pareto"], "trial"])
    for n, vals in sbs["values"].items():
        low, high = sbs["ci95"][n]["local"]
        assert 0 < low <= vals["latency_p50_ms@local"] <= high
        row = df[df["trial"] == int(n)].iloc[0]
        assert row["sbs_latency_p50_ms@local"] == vals["latency_p50_ms@local"]
    tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.name, sweep=cfg.name, readonly=True)
    children = tracker.child_runs()
    ref = sbs["values"][str(fp32)]["latency_p50_ms@local"]
    for n in timed:
        m = children[n].data.metrics
        assert m["sbs_latency_p50_ms.local"] == pytest.approx(sbs["values"][str(n)]["latency_p50_ms@local"])
        assert m["sbs_speedup.local"] == pytest.approx(ref / m["sbs_latency_p50_ms.local"])
    assert all("sbs_speedup.local" not in r.data.metrics for n, r in children.items() if n not in timed)


def test_front_cli_reprints_and_writes_csv(finished_sweep, tmp_path):
    import subprocess
    import sys

    path, _, _ = finished_sweep
    out = tmp_path / "front.csv"
    r = subprocess.run([sys.executable, "-m", "edgetune.cli", "front", "--config", str(path), "--csv", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Pareto front of 'e2e'" in r.stdout
    assert "timed in turns with fp32" in r.stdout  # speed-ups from the paired timings ...
    assert "side by side at the end (local, " in r.stdout  # ... and the side-by-side check of their order
    import pandas as pd

    df = pd.read_csv(out)
    assert len(df) == TRIALS and df["pareto"].iloc[0]
    assert df.loc[df["pareto"], "sbs_latency_p50_ms@local"].notna().all()
    # every column of the table, as numbers: speed-up and size against fp32, ties, the pick names
    fp32 = df[df["baseline"] == "fp32"].iloc[0]
    assert fp32["speedup@local"] == 1.0 and fp32["size_vs_fp32"] == 1.0
    front = df[df["pareto"]]
    assert front["speedup_paired@local"].all() and front["speedup@local"].gt(0).all()
    assert not front["speedup_side_by_side@local"].any()  # paired: the side-by-side timing is the check
    assert {"fastest", "knee", "smallest"} >= set(" ".join(df["pick"].fillna("")).split()) != set()
    assert "ties" in df.columns
    r = subprocess.run([sys.executable, "-m", "edgetune.cli", "front", str(path), "--json", "--all"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert len(rows) == TRIALS and {"speedup@local", "pick", "latency_ratio@local"} <= set(rows[0])


def _chromium() -> str | None:
    import shutil

    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def test_the_review_link_opens_the_front_in_the_mlflow_ui(finished_sweep, tmp_path):
    """The link the sweep prints, opened in headless Chromium against a real `mlflow server`: the front
    members as flat rows with their objectives, speed-up, runtime and label as columns; one click on the
    links above them opens the chart of all trials (a point each, the front in its colour) or the parent
    run's summary (the front table and pareto.png). `make browser` installs Chromium."""
    import re
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from edgetune.search.tracking import FRONT_COLOR, OTHER_COLOR

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium on this machine (`make browser` installs Debian's)")
    _, sweep, cfg = finished_sweep
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", cfg.tracking.uri,
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=open(tmp_path / "mlflow.log", "w"),  # noqa: SIM115
                              # no job consumers (huey processes importing MLflow again): the review needs none
                              env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
                                   "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
                                   "MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS": "false"})
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(240):  # a hang detector, not a timing: the server imports MLflow first
            try:
                if urllib.request.urlopen(base, timeout=2).status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail(f"mlflow server did not answer: {(tmp_path / 'mlflow.log').read_text()[-2000:]}")
        df = sweep.frame()
        front = df[df["pareto"]]
        names = [f"trial-{r['trial']} {r['label']}" for _, r in front.iterrows()]
        plotted = df[(df["state"] == "COMPLETE") & df["map50_95@local"].notna() & df["latency_p50_ms@local"].notna()]
        url = sweep.tracker.review_url(base)
        assert url == f"{base}/#/experiments/{sweep.tracker.experiment_id}/runs?viewStateShareKey=edgetune-e2e-front"
        red, grey = ("rgb({}, {}, {})".format(*(int(c[i:i + 2], 16) for i in (1, 3, 5))) for c in (FRONT_COLOR, OTHER_COLOR))
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 2800, "height": 1100})  # the grid renders the columns in view
            page.goto(url)
            for name in names:  # flat rows: no parent row to expand
                page.wait_for_selector(f"text={name}", timeout=180_000)
            page.wait_for_selector(".ag-header-cell[col-id='tags.`label`']", timeout=180_000)
            headers = {h.get_attribute("col-id") for h in page.query_selector_all(".ag-header-cell")}
            shown = page.inner_text("body")

            with page.context.expect_page() as tab:  # one click: all trials, the chart view
                page.get_by_role("link", name="all trials as a scatter").click()
            charts = tab.value
            charts.wait_for_selector(".js-plotly-plot .scatterlayer .point", timeout=180_000)
            first = charts.locator(".js-plotly-plot").first  # the first chart: mAP against p50
            charts.wait_for_function("n => document.querySelector('.js-plotly-plot')"
                                     ".querySelectorAll('.scatterlayer .point').length >= n", arg=len(plotted),
                                     timeout=180_000)
            fills = first.locator(".scatterlayer .point").evaluate_all("ps => ps.map(p => getComputedStyle(p).fill)")
            axes = first.inner_text()

            with page.context.expect_page() as tab:  # one click: the parent run's summary
                page.get_by_role("link", name=f"summary: run sweep-{cfg.name}").click()
            summary = tab.value
            plot = summary.locator("img[src^='get-artifact?path=pareto.png']")
            plot.wait_for(state="attached", timeout=180_000)
            summary.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=plot.element_handle(),
                                      timeout=180_000)
            note = summary.inner_text("body")
            browser.close()
        assert re.search(rf"\b{len(names)} matching runs?\b", shown), shown[:3000]  # the front members, nothing else
        assert {"metrics.`map50_95.local`", "metrics.`latency_p50_ms.local`", "metrics.`speedup.local`",
                "metrics.`size_bytes`", "tags.`fingerprint.local.runtime`", "tags.`label`"} <= headers, headers
        assert len(fills) == len(plotted) and fills.count(red) == len(front) and set(fills) <= {red, grey}, fills
        assert "latency_p50_ms.local" in axes and "map50_95.local" in axes
        assert "Pareto front" in note and all(str(r["label"]) in note for _, r in front.iterrows())
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_each_trial_says_where_its_time_went_and_the_sweep_sums_it(finished_sweep):
    """``record.timing``: getting the artifact, the measurement requests and the agent's own job; the sweep's
    split of the trials' time (compression / device / framework) is logged on the parent run."""
    _, sweep, cfg = finished_sweep
    for t in sweep.study.get_trials():
        timing = t.user_attrs[RECORD_ATTR]["timing"]
        assert set(timing) == {"compress_s", "screen_s", "retake_s", "measure_s", "device_s"}
        assert 0 < timing["device_s"] <= timing["measure_s"]
    split = sweep.time_split()
    assert split["trials"] == TRIALS
    parts = ("compress_pct", "device_pct", "screen_pct", "retake_pct", "framework_pct")
    assert sum(split[k] for k in parts) == pytest.approx(100, abs=0.5)
    tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.name, sweep=cfg.name, readonly=True)
    parent = tracker.client.get_run(tracker._parent())
    assert parent.data.metrics["time_framework_pct"] == split["framework_pct"]


def test_the_screen_keeps_its_evidence_and_skips_what_cannot_meet_the_constraints(finished_sweep):
    """``search.screen`` (shadow by default): every trial's record holds the graph features and the rung (the
    artifact's mAP through onnxruntime on this machine), and the parent run the predictor's held-out error.
    Screen on: a sampled candidate whose optimistic point misses a constraint is skipped, never measured:
    Optuna PRUNED, MLflow status tag ``skipped`` with ``skip_reason``. Runs last: it adds a trial to the
    module's sweep."""
    from edgetune.objectives.constraints import parse_constraint

    _, sweep, cfg = finished_sweep
    for t in sweep.study.get_trials():
        rec = t.user_attrs[RECORD_ATTR]
        assert rec["screen"]["features"]["gmacs_fp32"] + rec["screen"]["features"]["gmacs_int8"] > 0
        assert abs(rec["screen"]["rung"]["map50_95"] - rec["values"]["map50_95@local"]) < 0.05
        assert rec["screen"]["skip"] is None or not rec["screen"]["applied"]
    sweep.screen.mode, sweep.screen.min_trials = "on", 3
    sweep.screen.constraints = [parse_constraint("map50_95 >= 2 * baseline.map50_95", devices=["local"],
                                                 where="test")]
    sweep.run(sweep.test_space, trials=TRIALS + 1)
    last = sweep.study.get_trials()[-1]
    rec = last.user_attrs[RECORD_ATTR]
    assert last.state.name == "PRUNED" and not rec["values"] and rec["timing"]["device_s"] == 0
    assert rec["screen"]["skip"].startswith("cannot meet `map50_95 >= 2 * baseline.map50_95`")
    tracker = Tracker(uri=cfg.tracking.uri, experiment=cfg.name, sweep=cfg.name, readonly=True)
    run = tracker.child_runs()[last.number]
    assert run.data.tags["status"] == "skipped" and run.data.tags["skip_reason"] == rec["screen"]["skip"]
    assert not any(k.startswith("map50_95") for k in run.data.metrics)  # nothing shown as measured
    parent = tracker.client.get_run(tracker._parent())
    assert parent.data.metrics["screen_skipped"] == 1
