"""The measurement child process: ``python -m edgetune.device_agents._worker JOB_DIR``.

One model per fresh process: it reads ``JOB_DIR/job.json`` (written by the agent, never by the
network), pins itself to the agent's CPUs, loads the model with fixed intra-op threads, times it
model-only (with a power monitor where the board has a sensor), paired with a reference when the request
names one (the two in turns, ``_paired``), and end-to-end, records peak RSS and the
model's own memory (the RSS the runtime session added: after load, and after the model-only loop; the
runtime library is imported and the dataset bundle read BEFORE the session is created, so neither counts),
reads the throttling flags after the timed loop, computes accuracy on the dataset bundle, and writes
``JOB_DIR/result.json`` atomically. Any failure becomes
``{"ok": false, "error": {...}}`` with the runtime's error text; a crash or a kill leaves no result and
the agent reports how the process ended. The process dies with its parent (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path

__all__ = ["main", "forked", "run_job", "run_compare"]


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _limit_memory(max_bytes: int | None) -> None:
    if max_bytes:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


def _peak_rss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _rss_bytes() -> int | None:
    """The current resident set size (``/proc/self/statm``); None where it cannot be read (not Linux)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _growth(after: int | None, before: int | None) -> int | None:
    return None if after is None or before is None else max(0, after - before)


def _pin(job: dict) -> None:
    """Run on the agent's CPUs (``--cpus``)."""
    cpus = job.get("cpus") or []
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def run_job(job: dict) -> dict:
    """Measure as ``job`` says; returns the child's part of a Measurement (a dict)."""
    _pin(job)

    import numpy as np

    from edgetune.device_agents._stats import latency_stats
    from edgetune.device_agents._timing import end_to_end_step, synthetic_images, time_loop
    from edgetune.device_agents.probes import temperatures, throttle_state
    from edgetune.device_agents.probes.power import pick_power_monitor
    from edgetune.device_agents.protocol import MeasureRequest, RuntimeUsed
    from edgetune.device_agents.runtimes import get_runtime
    from edgetune.errors import MeasurementFailed
    from edgetune.models.heads import head_from_dict

    req = MeasureRequest.model_validate(job["request"])
    spec = req.latency
    threads = int(spec.threads or job["threads"])
    warnings: list[str] = []
    path = Path(job["artifact_path"])
    sensors = job.get("sensor_root") or "/"
    runtime = get_runtime(job["runtime"])
    runtime_info = runtime.info()  # imports the runtime's library now: its memory is not the model's
    bundle = None
    if job.get("dataset_path"):  # read before the session too: the bundle's memory is not the model's
        from edgetune.device_agents.bundle import read_bundle

        bundle = read_bundle(job["dataset_path"])
    baseline_rss = _peak_rss_bytes()
    rss_before = _rss_bytes()
    t0 = time.perf_counter()
    session = _load(runtime, path, threads=threads, providers=req.providers, cache_dir=Path(job["cache_dir"]),
                    batch=spec.batch)
    load_s = time.perf_counter() - t0
    rss_loaded = _rss_bytes()
    model_batch = session.input_shape[0] if session.input_shape and session.input_shape[0] > 0 else None
    if model_batch is not None and model_batch != spec.batch:
        raise MeasurementFailed(f"the model has a fixed batch of {model_batch} but the latency spec asks for "
                                f"batch {spec.batch}; set latency.batch={model_batch} or export a dynamic batch.")
    shape = session.shape_for(spec.batch)
    size = int(shape[-1])

    if bundle is not None and bundle.size != size:
        raise MeasurementFailed(f"the dataset bundle was letterboxed to {bundle.size} px but the model input is "
                                f"{size} px; rebuild the bundle with size={size}.")
    if bundle is not None and len(bundle.ids) >= spec.batch:
        from edgetune.data import to_input

        x = to_input(bundle.images[: spec.batch])
    else:
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
    x = np.ascontiguousarray(x.astype(session.input_dtype, copy=False))
    run = session.run
    try:
        out = run(x)
    except Exception as exc:  # the runtime's error text is what the user needs
        raise MeasurementFailed(f"{runtime.name} failed to run the model: {exc}") from exc

    rss_first = _rss_bytes()
    monitor = pick_power_monitor(root=sensors, interval_ms=spec.power_sample_ms)
    if monitor is not None:
        monitor.start()
    samples = time_loop(lambda: run(x), spec)
    power = monitor.stop(runs=len(samples)) if monitor is not None else None
    rss_run = max((r for r in (rss_first, _rss_bytes()) if r is not None), default=None)
    peak_rss = _peak_rss_bytes()
    throttling_after = throttle_state(root=sensors, vcgencmd=True)  # vcgencmd exists on Raspberry Pi OS only
    paired = _paired(run, x, req, job, threads=threads, warnings=warnings) if req.reference else None

    head = bundle.head if bundle is not None else (head_from_dict(req.head) if req.head else None)
    e2e = None
    if spec.end_to_end and head is not None:
        images = bundle.raw if bundle is not None and bundle.raw else synthetic_images()
        step = end_to_end_step(run, head, images, size=size, batch=spec.batch, dtype=session.input_dtype)
        e2e = latency_stats(time_loop(step, spec), keep_samples=spec.keep_samples)
    elif spec.end_to_end:
        warnings.append("end-to-end latency skipped: no dataset bundle and no head spec in the request")

    accuracy, n_acc = None, 0
    if bundle is not None and req.accuracy:
        from edgetune.device_agents.bundle import evaluate_bundle

        accuracy = evaluate_bundle(_batched(run, model_batch, session.input_dtype), bundle,
                                   batch=model_batch or spec.batch)
        n_acc = len(bundle.ids)
    realised = _realised(session, path, warnings)
    session.close()
    return {
        "runtime": RuntimeUsed(name=runtime.name, version=runtime_info.version or "",
                               providers_requested=list(req.providers or runtime.default_providers()),
                               providers_used=list(session.providers_used), detail=session.detail).model_dump(),
        "threads": threads, "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [],
        "batch": spec.batch, "input_shape": list(shape), "output_shape": list(np.shape(out)),
        "latency": latency_stats(samples, keep_samples=spec.keep_samples).model_dump(),
        "end_to_end": e2e.model_dump() if e2e else None, "paired": paired,
        "peak_rss_bytes": peak_rss, "baseline_rss_bytes": baseline_rss,
        "model_rss_bytes": _growth(rss_loaded, rss_before), "run_rss_bytes": _growth(rss_run, rss_before),
        "power": power.model_dump() if power else None, "accuracy": accuracy, "accuracy_images": n_acc,
        "session_load_s": load_s, "temperatures_after_c": temperatures(root=sensors),
        "throttling_after": throttling_after, "realised_precision": realised, "warnings": warnings,
    }


def _realised(session, path: Path, warnings: list[str]) -> dict[str, str] | None:
    """The precision each weighted node of the model ran in, as the runtime reports it (after the timed
    loops: nothing here is timed); None where the runtime does not say."""
    import onnx

    from edgetune.device_agents.protocol import WEIGHTED_OPS

    try:
        layers = [n.name for n in onnx.load(str(path), load_external_data=False).graph.node
                  if n.op_type in WEIGHTED_OPS and n.name]
        return session.realised_precision(layers) if layers else None
    except Exception as exc:  # a report about the run, never a reason to lose the measurement
        warnings.append(f"the realised precision per layer could not be read: {type(exc).__name__}: {exc}")
        return None


PAIRED_BURST = 5  # timed runs per turn in a paired loop (as POST /compare's default)


def _paired(run, x, req, job: dict, *, threads: int, warnings: list[str]) -> dict | None:
    """The model (``run`` on ``x``, already warm) and the request's reference, loaded now, timed in turns
    (``time_interleaved``); a reference that cannot take the model's batch is skipped with a warning."""
    import numpy as np

    from edgetune.device_agents._stats import latency_stats, paired_ratio
    from edgetune.device_agents._timing import time_interleaved
    from edgetune.device_agents.protocol import PairedLatency
    from edgetune.device_agents.runtimes import get_runtime
    from edgetune.errors import MeasurementFailed

    name = req.reference_runtime or job["runtime"]
    runtime = get_runtime(name)
    batch = int(x.shape[0])
    ref = _load(runtime, Path(job["reference_path"]), threads=threads,
                providers=req.providers if name == job["runtime"] else None, cache_dir=Path(job["cache_dir"]),
                batch=batch)
    try:
        ref_batch = ref.input_shape[0] if ref.input_shape and ref.input_shape[0] > 0 else None
        if ref_batch is not None and ref_batch != batch:
            warnings.append(f"paired timing skipped: the reference has a fixed batch of {ref_batch}, the model is "
                            f"timed at batch {batch}")
            return None
        shape = tuple(ref.shape_for(batch))
        y = x if tuple(x.shape) == shape else np.random.default_rng(0).random(shape, dtype=np.float32)
        y = np.ascontiguousarray(y.astype(ref.input_dtype, copy=False))
        try:
            ref.run(y)
        except Exception as exc:
            raise MeasurementFailed(f"{runtime.name} failed to run the reference {req.reference[:12]}: {exc}") from exc
        for _ in range(req.latency.warmup):
            ref.run(y)
        samples = time_interleaved({"model": lambda: run(x), "reference": lambda: ref.run(y)},
                                   runs=req.paired_runs, burst=PAIRED_BURST)
    finally:
        ref.close()
    m, r = samples["model"], samples["reference"]
    ratio, low, high = paired_ratio(m, r, burst=PAIRED_BURST)
    return PairedLatency(
        reference=req.reference, reference_runtime=runtime.name, runs=req.paired_runs, burst=PAIRED_BURST,
        model=latency_stats(m, keep_samples=False), reference_latency=latency_stats(r, keep_samples=False),
        ratio_p50=ratio,
        ratio_p90=float(np.percentile(m, 90) / np.percentile(r, 90)), ratio_ci95_low=low, ratio_ci95_high=high,
    ).model_dump()


def _load(runtime, path: Path, **kw):
    """A runtime session of one stored artifact. Every file a worker is given came through the agent's
    upload check (``_onnx_check.check_upload``: self-contained ONNX only, nothing else is stored), so it is
    not parsed again here: that would import onnx (~1 s) in every measurement process. onnxruntime >= 1.24
    also refuses external-data paths that leave the model's folder."""
    return runtime.load(path, **kw)


def run_compare(job: dict) -> dict:
    """``POST /compare``: load every artifact, warm each up, time them interleaved (``time_interleaved``)."""
    _pin(job)

    import numpy as np

    from edgetune.device_agents._stats import latency_stats, paired_ratio
    from edgetune.device_agents._timing import time_interleaved
    from edgetune.device_agents.protocol import CompareRequest, RuntimeUsed
    from edgetune.device_agents.runtimes import get_runtime
    from edgetune.errors import MeasurementFailed

    req = CompareRequest.model_validate(job["request"])
    threads = int(req.threads or job["threads"])
    names = list(req.runtimes) if req.runtimes is not None else [job["runtime"]] * len(req.artifacts)
    runtimes = {n: get_runtime(n) for n in dict.fromkeys(names)}
    # providers name one runtime's devices: with several runtimes, each takes its own default
    providers = req.providers if len(runtimes) == 1 else None
    fns, used = {}, {}
    sessions = []
    for key, sha, name in zip(req.keys(), req.artifacts, names, strict=True):
        runtime = runtimes[name]
        session = _load(runtime, Path(job["artifact_paths"][sha]), threads=threads, providers=providers,
                        cache_dir=Path(job["cache_dir"]), batch=1)
        sessions.append(session)
        x = np.random.default_rng(0).random(session.shape_for(1), dtype=np.float32).astype(session.input_dtype)
        x = np.ascontiguousarray(x)
        try:
            session.run(x)
        except Exception as exc:
            raise MeasurementFailed(f"{runtime.name} failed to run artifact {sha[:12]}: {exc}") from exc
        fns[key] = functools.partial(session.run, x)
        used[key] = RuntimeUsed(name=runtime.name, version=runtime.info().version or "",
                                providers_requested=list(providers or runtime.default_providers()),
                                providers_used=list(session.providers_used), detail=session.detail).model_dump()
    for fn in fns.values():
        for _ in range(req.warmup):
            fn()
    samples = time_interleaved(fns, runs=req.runs, burst=req.burst)
    for session in sessions:
        session.close()
    first = used[req.keys()[0]]
    base = samples[req.keys()[0]]
    return {
        "ratios": {k: paired_ratio(v, base, burst=req.burst) for k, v in samples.items()},
        "artifacts": list(req.artifacts),
        "latency": {k: latency_stats(v, keep_samples=req.keep_samples).model_dump() for k, v in samples.items()},
        "runs": req.runs, "burst": req.burst, "threads": threads,
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [],
        "runtime": {**first, "providers_used": sorted({p for u in used.values() for p in u["providers_used"]})},
        "runtimes": used if req.runtimes is not None else {}, "warnings": [],
    }


def _batched(run, model_batch: int | None, dtype):
    """A forward that pads a short last batch to a model's fixed batch size and drops the padding."""
    import numpy as np

    def forward(x):
        x = x.astype(dtype, copy=False)
        n = x.shape[0]
        if model_batch is None or n == model_batch:
            return run(np.ascontiguousarray(x))
        pad = np.zeros((model_batch - n, *x.shape[1:]), x.dtype)
        return run(np.ascontiguousarray(np.concatenate([x, pad])))[:n]

    return forward


def _write(job_dir: Path, payload: dict) -> None:
    tmp = job_dir / "result.json.tmp"
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, job_dir / "result.json")


def forked(job_dir: str) -> None:
    """Entry of a measurement process forked by the agent's fork server (``server._jobs``): the same job
    as ``python -m edgetune.device_agents._worker JOB_DIR``, in a process of its own session (a timeout
    kills its group), stderr to ``JOB_DIR/stderr.log``, exit status :func:`main`'s. Its parent is the fork
    server, which ends with the agent; the check that the agent is alive replaces main's parent check."""
    os.setsid()
    fd = os.open(os.path.join(job_dir, "stderr.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 2)
    os.close(fd)
    sys.exit(main([job_dir], forked=True))


def _end_with(pid: int) -> None:
    """Kill this process's group when process ``pid`` (the agent) ends: a thread blocked on a pidfd (Linux
    5.3+; no wake-ups while the agent lives), else polling once a second. PR_SET_PDEATHSIG only watches
    the parent, here the fork server, which may outlive the agent by a while."""
    import select
    import threading

    def watch() -> None:
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])
        else:
            while _agent_alive(pid, forked=True):
                time.sleep(1.0)
        os.killpg(0, signal.SIGKILL)

    threading.Thread(target=watch, name="end-with-agent", daemon=True).start()


def main(argv: list[str] | None = None, *, forked: bool = False) -> int:
    _die_with_parent()
    job_dir = Path((argv or sys.argv[1:])[0])
    job = json.loads((job_dir / "job.json").read_text())
    if job.get("agent_pid") and not _agent_alive(int(job["agent_pid"]), forked=forked):
        return 1  # the agent died before PR_SET_PDEATHSIG was armed: nobody wants this result
    if forked and job.get("agent_pid"):
        _end_with(int(job["agent_pid"]))
    _limit_memory(job.get("max_memory_bytes"))
    try:
        if job.get("task") == "predict":  # a deployed model on one uploaded image (deployments router)
            from edgetune.device_agents._predict import run_predict

            payload = {"ok": True, "result": run_predict(job)}
        elif job.get("task") == "compare":  # several artifacts timed side by side (POST /compare)
            payload = {"ok": True, "result": run_compare(job)}
        else:
            payload = {"ok": True, "result": run_job(job)}
    except MemoryError:
        payload = {"ok": False, "error": {"type": "MeasurementFailed",
                                          "message": "the model ran out of memory in the measurement process"}}
    except Exception as exc:
        from edgetune.errors import EdgetuneError

        message = str(exc) if isinstance(exc, EdgetuneError) else f"{type(exc).__name__}: {exc}"
        payload = {"ok": False, "error": {"type": "MeasurementFailed", "message": message,
                                          "traceback": traceback.format_exc(limit=8)}}
    _write(job_dir, payload)
    return 0


def _agent_alive(pid: int, *, forked: bool) -> bool:
    from edgetune._paths import pid_alive

    return pid_alive(pid) if forked else os.getppid() == pid


if __name__ == "__main__":
    sys.exit(main())
