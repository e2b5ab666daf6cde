"""Backend conformance: every registered backend (``search.backends``) runs the same 3 trials of the same
sweep to the same records: params, artifact hashes, states, the values that do not depend on timing, and
one MLflow child run per trial. A newly registered backend gets this suite by registering."""

from __future__ import annotations

import importlib.util

import pytest

from edgetune.search.backends import available_backends
from edgetune.search.records import RECORD_ATTR
from edgetune.search.tracking import Tracker
from edgetune.search.wiring import prepare_sweep

TRIALS = 3
NEEDS = {"ray": "ray"}  # backend -> the module it needs installed

pytestmark = pytest.mark.slow


def _timing(key: str) -> bool:
    """Values that vary from one run to the next: latencies, memory (the process's and the model's), power."""
    return "latency" in key or key.startswith(("peak_mem", "model_mem", "run_mem", "energy", "power"))


def run_backend(backend: str, tmp_path, make_sweep, local_agent, workdir, monkeypatch, search=None) -> dict:
    if backend == "ray":
        import tempfile

        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        monkeypatch.setenv("EDGETUNE_RAY_TMP", tempfile.mkdtemp(prefix="etray", dir="/tmp"))  # sockets: < 108 bytes
    path = make_sweep(tmp_path, name=f"conf-{backend}", trials=TRIALS, backend=backend, search=search)
    if backend == "ray":
        path.write_text(path.read_text().replace("storage:", "concurrency: 2\n  storage:"))
    sweep, space, cfg = prepare_sweep(path, workdir=workdir, local_agents=local_agent)
    try:
        sweep.run(space)
    finally:
        if backend == "ray":
            import ray

            ray.shutdown()
    records, screened = {}, {}
    for t in sweep.study.get_trials():
        rec = t.user_attrs.get(RECORD_ATTR) or {}
        records[t.number] = {"state": t.state.name, "params": t.params, "baseline": rec.get("baseline"),
                             "artifact": rec.get("artifact_hash"), "error": rec.get("error"),
                             "values": {k: v for k, v in (rec.get("values") or {}).items() if not _timing(k)},
                             "timed": sorted(k for k in rec.get("values") or {} if _timing(k)),
                             "kind": (rec.get("fingerprints") or {}).get("local", {}).get("kind")}
        screened[t.number] = bool((rec.get("screen") or {}).get("rung"))
    runs = Tracker(uri=cfg.tracking.uri, experiment=cfg.tracking.experiment, sweep=cfg.name, readonly=True).child_runs()
    return {"records": records, "runs": {n: r.info.status for n, r in runs.items()}, "screened": screened}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, make_sweep, local_agent, sweep_workdir):
    mp = pytest.MonkeyPatch()
    try:
        return run_backend("local", tmp_path_factory.mktemp("local"), make_sweep, local_agent, sweep_workdir, mp)
    finally:
        mp.undo()


@pytest.mark.parametrize("backend", available_backends())
def test_backend_gives_the_same_records(backend, reference, tmp_path, make_sweep, local_agent, sweep_workdir,
                                        monkeypatch):
    if backend in NEEDS and importlib.util.find_spec(NEEDS[backend]) is None:
        pytest.skip(f"backend {backend!r} needs {NEEDS[backend]} (pip install 'edgetune[{backend}]')")
    got = reference if backend == "local" else run_backend(backend, tmp_path, make_sweep, local_agent, sweep_workdir,
                                                           monkeypatch)
    records = got["records"]
    assert sorted(records) == list(range(TRIALS))
    assert all(r["state"] == "COMPLETE" for r in records.values()), {n: r["error"] for n, r in records.items()}
    assert {r["baseline"] for r in records.values()} >= {"fp32", "int8-uniform"}
    assert all(r["kind"] == "local-cpu" and "latency_p50_ms@local" in r["timed"] for r in records.values())
    assert records == reference["records"]  # params, artifacts, accuracy and size values: identical
    assert got["runs"] == {n: "FINISHED" for n in range(TRIALS)}  # one MLflow child run per trial


def test_overlapped_trials_give_the_same_records(reference, tmp_path, make_sweep, local_agent, sweep_workdir,
                                                 monkeypatch):
    """``search.overlap: on`` (the demo's: the next trial compressed, and its screen evidence computed, while
    the current one is measured) runs the same trials to the same records, each with its evidence."""
    got = run_backend("local", tmp_path, make_sweep, local_agent, sweep_workdir, monkeypatch,
                      search={"overlap": "on", "screen": "shadow"})
    assert got["records"] == reference["records"]
    assert got["screened"] == dict.fromkeys(range(TRIALS), True) and not any(reference["screened"].values())
    assert got["runs"] == {n: "FINISHED" for n in range(TRIALS)}
