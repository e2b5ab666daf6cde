"""The sweep's view of the fleet: health before any work, device kinds and runtimes, the dataset bundles
(one per input size the space offers) uploaded once per device, leased measurements (one at a time
per device) on the runtime each trial names, and outages: :meth:`SweepFleet.recover` waits (bounded)
for a device that stopped answering and puts back the bundles a restarted agent lost."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from edgetune._logging import get_logger
from edgetune.errors import AgentError, AgentUnavailable, ConfigError

log = get_logger(__name__)

__all__ = ["SweepFleet", "bundle_dir"]


def bundle_dir(workdir: Path) -> Path:
    """Where a sweep keeps its validation bundles (under its workdir, which Ray workers share)."""
    return Path(workdir) / "bundles"


OutageListener = Callable[[str, "float | None"], None]  # (device, down since (epoch s) | None: back)


class SweepFleet:
    """``bundle_dir``: where the validation bundles are kept, so that an agent restarted without them gets
    them again (a folder the Ray workers share, e.g. the sweep's workdir; None: kept in memory)."""

    def __init__(self, specs, *, tokens: dict[str, str] | None = None, bundle_dir: Path | None = None):
        from edgetune.device_agents.fleet import Fleet

        self.specs = list(specs)
        # a device with a ``pool`` is several agents: each a member of the fleet; trials lease a free one
        self.members = {d.name: [m.name for m in d.members()] for d in self.specs}
        tokens = dict(tokens or {})
        for d in self.specs:
            if d.name in tokens:
                tokens.update({m: tokens[d.name] for m in self.members[d.name]})
        self.fleet = Fleet([m for d in self.specs for m in d.members()], tokens=tokens)
        self._free = threading.Condition()
        self._last_used: dict[str, float] = {}  # pool member -> when its last measurement ended
        self._out: set[str] = set()  # pool members set aside after they stopped answering
        self.dataset_hashes: dict[int, str] = {}  # input size -> sha256 of the bundle letterboxed to it
        self.head = None
        self.bundle_dir = Path(bundle_dir) if bundle_dir is not None else None
        self._bundles: dict[str, bytes] = {}  # sha256 -> bundle bytes (when there is no bundle_dir)
        self._down: dict[str, float] = {}  # device -> when it was first seen down (epoch s)
        self._outage_lock = threading.Lock()
        self._listeners: list[OutageListener] = []

    @classmethod
    def from_specs(cls, specs, **kw) -> SweepFleet:
        return cls(specs, **kw)

    def check_health(self) -> None:
        """Raise AgentUnavailable naming every device that does not answer, and how to fix it."""
        bad = {name: res for name, res in self.fleet.health().items() if isinstance(res, Exception)}
        if bad:
            lines = [f"'{n}' at {self.fleet[n].spec.url}: {e}" for n, e in bad.items()]
            raise AgentUnavailable(
                "device agent(s) not reachable: " + "; ".join(lines) + ". Start the agent on the device "
                "(`edgetune agent serve ...`) or fix `devices:` (url, token_env).")

    def tokens(self) -> dict[str, str]:
        """Device name -> the token its client sends (for remote workers that measure through this fleet)."""
        return self.fleet.tokens()

    def kinds(self) -> list[str]:
        return sorted({self.fleet.kind(n) for n in self.fleet.names})

    def pool_size(self, device: str) -> int:
        """How many agents measure ``device``'s trials (1 unless it has a ``pool``)."""
        return len(self.members.get(device, [device]))

    def check_runtimes(self, runtimes: Sequence[str], devices: Sequence[str] | None = None) -> None:
        """ConfigError naming every device that does not offer each of ``runtimes`` (``space.runtime``)."""
        if not runtimes:
            return
        missing = {}
        names = [m for d in devices for m in self.members.get(d, [d])] if devices else self.fleet.names
        for name in names:
            offered = self.fleet[name].info().offered_runtimes
            lacking = [r for r in runtimes if r not in offered]
            if lacking:
                missing[name] = (lacking, offered)
        if missing:
            lines = [f"'{n}' offers {', '.join(o)}, not {', '.join(lack)}" for n, (lack, o) in missing.items()]
            raise ConfigError(f"`space.runtime` asks for {', '.join(runtimes)}, but " + "; ".join(lines) + ". Start each "
                              f"agent with --runtime {','.join(runtimes)} (and pip install \"edgetune[openvino]\" for "
                              "openvino), or drop the runtimes it lacks from `space.runtime`.")

    def upload_dataset(self, dataset, *, head, input_sizes: Sequence[int]) -> dict[int, str]:
        """Build the validation bundle once per input size and upload each to every device (skipped where
        present): trials exported at another resolution are scored on the same images, letterboxed to it."""
        from edgetune.device_agents.bundle import make_bundle

        for size in dict.fromkeys(int(s) for s in input_sizes):
            bundle = make_bundle(dataset, head, size=size)
            self._keep(bundle)
            for name in self.fleet.names:
                self.dataset_hashes[size] = self.fleet.client(name).upload_dataset(bundle)
            log.info("validation bundle %s (%d images at %d px) on %d device(s)", self.dataset_hashes[size][:12],
                     len(dataset), size, len(self.fleet))
        self.head = head
        return dict(self.dataset_hashes)

    def _keep(self, bundle) -> None:
        if self.bundle_dir is None:
            self._bundles[bundle.sha256] = bundle.data
        elif not (path := self.bundle_dir / f"{bundle.sha256}.npz").is_file():
            self.bundle_dir.mkdir(parents=True, exist_ok=True)
            bundle.save(path)

    def _bundle(self, sha: str) -> bytes | Path | None:
        if sha in self._bundles:
            return self._bundles[sha]
        path = self.bundle_dir / f"{sha}.npz" if self.bundle_dir is not None else None
        return path if path is not None and path.is_file() else None

    # -- outages ---------------------------------------------------------------------------------------
    def watch(self, listener: OutageListener) -> None:
        """Call ``listener(device, since)`` when a device is found down (``since``: when it was first seen
        down, epoch seconds) and ``listener(device, None)`` when it answers again."""
        self._listeners.append(listener)

    def _notify(self, device: str, since: float | None) -> None:
        for listener in self._listeners:
            try:
                listener(device, since)
            except Exception:  # a display problem must not fail a trial
                log.exception("outage listener failed")

    def _answers(self, device: str) -> bool:
        try:
            self.fleet.client(device).health(timeout=5.0)
        except AgentError as exc:  # down, or a proxy in front of it answering 5xx while it restarts
            if isinstance(exc, AgentUnavailable) or getattr(exc, "status_code", 0) >= 500:
                return False
            raise
        return True

    def recover(self, device: str, error: Exception, *, wait_s: float, first_delay: float = 1.0,
                max_delay: float = 30.0) -> float:
        """After ``error`` (the device did not answer, or lost what was uploaded to it): wait until ``device``
        answers ``/health`` again, polling with exponential backoff (``first_delay`` doubled up to
        ``max_delay``), then upload again the validation bundles a restarted agent no longer has. The wait is
        bounded by ``wait_s`` counted from when the device was first seen down, shared by every trial that
        needs it (a device given up on fails the next trials at once, until it answers again). Returns the
        seconds waited; raises AgentUnavailable (the device, since when, the setting to raise) past the bound.
        For a pool, the member that failed (the error names it): while other members answer, it is set aside
        (its trials go to them, 0 s waited); when it is the last, it is waited for like a single device."""
        member = getattr(error, "edgetune_member", None)
        if (member and member != device) or len(self.members.get(device, [device])) > 1:
            member = member or device
            pool = next((d for d, ms in self.members.items() if member in ms), device)
            others = [m for m in self.members.get(pool, []) if m != member and m not in self._out]
            if others and not self._answers(member):
                with self._free:
                    self._out.add(member)
                    self._free.notify_all()
                log.warning("pool member %s (%s) of device %s does not answer (%s): its trials go to the other "
                            "%d member(s) for the rest of the sweep", member, self.fleet[member].spec.url, pool,
                            error, len(others))
                return 0.0
            device = member
        t0 = time.monotonic()
        while True:
            self._wait_until_up(device, error, wait_s=wait_s, first_delay=first_delay, max_delay=max_delay)
            try:
                self._restore(device)
            except AgentUnavailable as exc:  # down again while the bundles were checked: wait again
                error = exc
                continue
            return time.monotonic() - t0

    def _wait_until_up(self, device: str, error: Exception, *, wait_s: float, first_delay: float,
                       max_delay: float) -> None:
        if not self._answers(device):
            with self._outage_lock:
                since = self._down.setdefault(device, time.time())
            url = self.fleet[device].spec.url
            log.warning("waiting for device %s (%s), down since %s, for up to %.0f s: %s", device, url,
                        time.strftime("%H:%M:%S", time.localtime(since)), max(0.0, since + wait_s - time.time()), error)
            self._notify(device, since)
            delay = first_delay
            while True:
                left = since + wait_s - time.time()
                if left <= 0:
                    raise AgentUnavailable(
                        f"device '{device}' ({url}) has not answered since "
                        f"{time.strftime('%H:%M:%S', time.localtime(since))} ({time.time() - since:.0f} s; the sweep "
                        f"waits up to `search.outage_wait_s` = {wait_s:g} s): {error}. Restart its agent (`edgetune agent "
                        "serve ...`) and rerun the sweep: it resumes and measures the failed trials again.") from error
                time.sleep(min(delay, left, max_delay))
                delay *= 2
                if self._answers(device):
                    break
        with self._outage_lock:
            since = self._down.pop(device, None)
        if since is not None:
            log.warning("device %s answers again (down for %.0f s); its trials go on", device, time.time() - since)
            self._notify(device, None)

    def _restore(self, device: str) -> None:
        """Upload again each validation bundle the agent lost (an agent restarted on a fresh workdir)."""
        client = self.fleet.client(device)
        for size, sha in self.dataset_hashes.items():
            if client.has_dataset(sha):
                continue
            source = self._bundle(sha)
            if source is None:
                raise AgentError(f"device '{device}' no longer has the validation bundle {sha[:12]} ({size} px) and "
                                 "this process keeps no copy of it (it was uploaded by the sweep's driver); rerun the "
                                 "sweep: it resumes and uploads it again.")
            log.warning("device %s lost the validation bundle %s (%d px): uploading it again", device, sha[:12], size)
            client.upload_dataset(source)

    def dataset_for(self, artifact) -> str | None:
        """The bundle letterboxed to the artifact's input size (None: none uploaded for it)."""
        shape = (artifact.manifest.get("input") or {}).get("shape") or []
        return self.dataset_hashes.get(int(shape[-1])) if shape else None

    def measure(self, device: str, artifact, *, latency_runs: int, warmup: int, timeout_s: float,
                runtime: str | None = None, power_sample_ms: int | None = None, min_seconds: float = 1.0,
                reference: tuple[Path, str | None] | None = None):
        """Measure ``artifact`` on ``device``; ``reference`` (ONNX path, runtime): the model it is timed in
        turns with, ``latency_runs`` runs each, in the same request (``Measurement.paired``)."""
        latency = {"warmup": warmup, "min_runs": latency_runs, "min_seconds": min_seconds}
        if power_sample_ms is not None:
            latency["power_sample_ms"] = power_sample_ms
        ref, ref_runtime = reference if reference is not None else (None, None)
        with self._lease(device) as member:
            try:
                return self.fleet.client(member).measure(
                    artifact.onnx_path, dataset=self.dataset_for(artifact), latency=latency, runtime=runtime,
                    timeout_s=timeout_s, reference=ref, reference_runtime=ref_runtime, paired_runs=latency_runs)
            except AgentError as exc:  # recover() waits for this agent, not for the pool's first
                exc.edgetune_member = member
                raise

    @contextlib.contextmanager
    def _lease(self, device: str) -> Iterator[str]:
        """Hold a free agent of ``device`` (itself, or any member of its pool) for one measurement: the one
        free longest ago first, so that a pool's members share the trials; waits while all are busy."""
        members = self.members.get(device, [device])
        if len(members) == 1:
            with self.fleet.lease(device):
                yield device
            return
        with self._free:
            while True:
                live = [m for m in members if m not in self._out] or members
                free = [m for m in live if not self.fleet[m].lock.locked()]
                if free:
                    member = min(free, key=lambda m: self._last_used.get(m, 0.0))
                    self.fleet[member].lock.acquire()
                    break
                self._free.wait(timeout=1.0)
        try:
            yield member
        finally:
            with self._free:
                self._last_used[member] = time.monotonic()
                self.fleet[member].lock.release()
                self._free.notify_all()

    def compare(self, device: str, entries: list[tuple[str, str | None]], *, runs: int, warmup: int,
                timeout_s: float) -> dict:
        """(ONNX path, runtime) -> model-only latency stats, all timed side by side on ``device`` (``POST
        /compare``); runtime None: the device's default."""
        from edgetune.device_agents.protocol import compare_key

        with self._lease(device) as member:  # a pool: one member (not one set aside) times them all
            client = self.fleet.client(member)
            shas = {path: client.upload_artifact(path) for path, _ in entries}
            default = client.info().runtime.name
            keyed = {(p, r): (shas[p], r or default) for p, r in entries}
            distinct = list(dict.fromkeys(keyed.values()))
            if len(distinct) < 2:
                raise ValueError("side-by-side timing needs at least two distinct (model, runtime) pairs")
            several = len({r for _, r in distinct}) > 1
            c = client.compare([s for s, _ in distinct], runs=runs, warmup=warmup, timeout_s=timeout_s,
                               runtimes=[r for _, r in distinct] if several else None,
                               runtime=None if several else distinct[0][1])
        out = {}
        for e, (sha, r) in keyed.items():
            key = compare_key(sha, r) if several else sha
            out[e] = c.latency[key].model_dump(exclude={"samples_ms"})
            if key in c.ratios:  # agents before protocol 1.5 give none: the check then uses the pooled medians
                out[e]["ratio"] = list(c.ratios[key])
        return out

    def close(self) -> None:
        self.fleet.close()
