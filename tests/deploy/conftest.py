"""A small real sweep for the deploy tests: one local agent, the builtin det-s on 40 shapes images, fp32 /
int8 precision only (no pruning, no recovery), 3 trials, Optuna and MLflow in sqlite files.

The sweep YAML names the local agent as device ``local`` (url + token file), so ``deploy --to local``
resolves it the way a user's config does. The sweep runs for real once per session (Optuna, the agent's
measurements, MLflow); its compressions go to the session's content-addressed artifact cache
(``sweep_workdir``, shared with the compress and sweep tests, so det-s in fp32 is exported once). The
deploy tests read that cache; the fetch tests use empty workdirs of their own.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

SWEEP = """\
name: deploy-e2e
model: {{source: builtin, name: det-s}}
data: {{source: builtin, name: shapes, val_images: 40, calib_images: 16, train_size: 0}}
space:
  precision: [fp32, int8]
  sparsity: {{kind: channel, ratios: [0.0]}}
recovery: {{steps: 0}}
devices:
  - {{name: local, url: "{url}", kind: local-cpu, token_env: null, token_file: "{token_file}"}}
objectives:
  - {{metric: map50_95, device: local}}
  - {{metric: latency_p50_ms, device: local}}
  - {{metric: size_bytes}}
search: {{sampler: random, trials: 3, seed: 0, storage: "sqlite:///{root}/optuna.db", latency_runs: 20,
         latency_warmup: 3, paired_retakes: 0, latency_min_seconds: 0}}
tracking: {{uri: "sqlite:///{root}/mlflow.db", experiment: deploy-e2e}}
"""


@dataclass
class SweepRun:
    config: Path
    workdir: Path
    root: Path
    agents: object  # LocalAgents
    frame: object  # DataFrame of the trials

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root}/mlflow.db"

    def client(self):
        return self.agents.fleet().client("local-0")


@pytest.fixture(scope="session")
def sweep_run(tmp_path_factory, sweep_workdir, mlflow_db):
    from edgetune.device_agents.local import start_local_agents
    from edgetune.search.wiring import prepare_sweep

    root = tmp_path_factory.mktemp("deploy-sweep")
    shutil.copyfile(mlflow_db, root / "mlflow.db")  # the empty store, made once per session
    agents = start_local_agents(1, threads=1, workdir=root / "agents")
    try:
        spec = agents.specs()[0]
        config = root / "sweep.yaml"
        config.write_text(SWEEP.format(url=spec.url, token_file=spec.token_file, root=root))
        workdir = sweep_workdir
        sweep, space, _ = prepare_sweep(config, workdir=workdir)
        sweep.run(space, trials=3)
        yield SweepRun(config=config, workdir=workdir, root=root, agents=agents, frame=sweep.frame())
    finally:
        agents.stop()
