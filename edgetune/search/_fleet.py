"""The sweep's view of the fleet: health before any work, device kinds and runtimes, the dataset bundles
(one per input size the space offers) uploaded once per device, and leased measurements (one at a time
per device) on the runtime each trial names."""

from __future__ import annotations

from collections.abc import Sequence

from edgetune._logging import get_logger
from edgetune.errors import AgentUnavailable, ConfigError

log = get_logger(__name__)

__all__ = ["SweepFleet"]


class SweepFleet:
    def __init__(self, specs, *, tokens: dict[str, str] | None = None):
        from edgetune.device_agents.fleet import Fleet

        self.specs = list(specs)
        self.fleet = Fleet(self.specs, tokens=tokens)
        self.dataset_hashes: dict[int, str] = {}  # input size -> sha256 of the bundle letterboxed to it
        self.head = None

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

    def check_runtimes(self, runtimes: Sequence[str], devices: Sequence[str] | None = None) -> None:
        """ConfigError naming every device that does not offer each of ``runtimes`` (``space.runtime``)."""
        if not runtimes:
            return
        missing = {}
        for name in devices or self.fleet.names:
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
            for name in self.fleet.names:
                self.dataset_hashes[size] = self.fleet.client(name).upload_dataset(bundle)
            log.info("validation bundle %s (%d images at %d px) on %d device(s)", self.dataset_hashes[size][:12],
                     len(dataset), size, len(self.fleet))
        self.head = head
        return dict(self.dataset_hashes)

    def dataset_for(self, artifact) -> str | None:
        """The bundle letterboxed to the artifact's input size (None: none uploaded for it)."""
        shape = (artifact.manifest.get("input") or {}).get("shape") or []
        return self.dataset_hashes.get(int(shape[-1])) if shape else None

    def measure(self, device: str, artifact, *, latency_runs: int, warmup: int, timeout_s: float,
                runtime: str | None = None):
        with self.fleet.lease(device) as client:
            return client.measure(artifact.onnx_path, dataset=self.dataset_for(artifact),
                                  latency={"warmup": warmup, "min_runs": latency_runs},
                                  runtime=runtime, timeout_s=timeout_s)

    def compare(self, device: str, entries: list[tuple[str, str | None]], *, runs: int, warmup: int,
                timeout_s: float) -> dict:
        """(ONNX path, runtime) -> model-only latency stats, all timed side by side on ``device`` (``POST
        /compare``); runtime None: the device's default."""
        from edgetune.device_agents.protocol import compare_key

        with self.fleet.lease(device) as client:
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
        return {e: c.latency[compare_key(sha, r) if several else sha].model_dump(exclude={"samples_ms"})
                for e, (sha, r) in keyed.items()}

    def close(self) -> None:
        self.fleet.close()
