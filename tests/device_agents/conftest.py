"""Fixtures for the device-agent tests: a real agent process on 127.0.0.1 (session-wide) and the
det-s dataset bundle. Helpers live in ``agent_helpers.py``."""

from __future__ import annotations

import pytest
from agent_helpers import start_agent


@pytest.fixture(scope="session")
def agent(tmp_path_factory):
    """One real agent for the session (queue of 1, 8 MiB artifact cap, its own host lock)."""
    a = start_agent(tmp_path_factory.mktemp("agent") / "agent-main",
                    args=("--queue", "1", "--max-artifact-mb", "8", "--max-dataset-mb", "64"))
    yield a
    a.stop()


@pytest.fixture(scope="session")
def client(agent):
    with agent.client(measure_timeout=300) as c:
        yield c


@pytest.fixture(scope="session")
def det_s_head(det_s):
    return det_s.head


@pytest.fixture(scope="session")
def det_s_bundle(shapes_val, det_s):
    from edgetune.device_agents import make_bundle

    return make_bundle(shapes_val, det_s.head, size=det_s.input_size)
