"""The sweep's view of the fleet: health before any work, device kinds, the dataset bundle uploaded once
per device, and leased measurements (one at a time per device)."""

from __future__ import annotations

from edgetune._logging import get_logger
from edgetune.errors import AgentUnavailable

log = get_logger(__name__)

__all__ = ["SweepFleet"]


class SweepFleet:
    def __init__(self, specs, *, tokens: dict[str, str] | None = None):
        from edgetune.device_agents.fleet import Fleet

        self.specs = list(specs)
        self.fleet = Fleet(self.specs, tokens=tokens)
        self.dataset_hash: str | None = None
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

    def upload_dataset(self, dataset, *, head, input_size: int) -> str:
        """Build the validation bundle once and upload it to every device (skipped where present)."""
        from edgetune.device_agents.bundle import make_bundle

        bundle = make_bundle(dataset, head, size=input_size)
        for name in self.fleet.names:
            self.dataset_hash = self.fleet.client(name).upload_dataset(bundle)
        self.head = head
        log.info("validation bundle %s (%d images) on %d device(s)", (self.dataset_hash or "")[:12], len(dataset),
                 len(self.fleet))
        return self.dataset_hash

    def measure(self, device: str, artifact, *, latency_runs: int, warmup: int, timeout_s: float):
        with self.fleet.lease(device) as client:
            return client.measure(artifact.onnx_path, dataset=self.dataset_hash,
                                  latency={"warmup": warmup, "min_runs": latency_runs},
                                  timeout_s=timeout_s)

    def compare(self, device: str, onnx_paths: list[str], *, runs: int, warmup: int, timeout_s: float) -> dict:
        """ONNX path -> model-only latency stats, all timed side by side on ``device`` (``POST /compare``)."""
        with self.fleet.lease(device) as client:
            shas = {p: client.upload_artifact(p) for p in onnx_paths}
            distinct = list(dict.fromkeys(shas.values()))
            if len(distinct) < 2:
                raise ValueError("side-by-side timing needs at least two distinct models")
            c = client.compare(distinct, runs=runs, warmup=warmup, timeout_s=timeout_s)
        return {p: c.latency[sha].model_dump(exclude={"samples_ms"}) for p, sha in shas.items()}

    def close(self) -> None:
        self.fleet.close()
