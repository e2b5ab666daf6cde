"""A pool of devices of one kind (``devices[].pool``) shares one sweep's trials: as many trials run at once as
the pool has agents, each measured on a free member and timed in turns with fp32 on that same member (so the
members' latencies stay comparable: ratio x the device's anchor). Eight local agents share this machine's two
cores: the test checks the scheduling (every trial accounted for once, several members used), not speed."""

from __future__ import annotations

import pytest

from edgetune.device_agents import DeviceSpec
from edgetune.search.records import RECORD_ATTR
from edgetune.search.tracking import Tracker
from edgetune.search.wiring import agents_needed, prepare_sweep

pytestmark = pytest.mark.slow

MEMBERS = 8
TRIALS = 8


def test_pool_members_are_named_after_the_device_and_bad_urls_are_refused():
    spec = DeviceSpec(name="pi", url="http://pi-1:8765/", kind="rpi5", pool=("http://pi-2:8765", "http://pi-3:8765/"))
    assert [(m.name, m.url, m.pool) for m in spec.members()] == [
        ("pi", "http://pi-1:8765", ()), ("pi~2", "http://pi-2:8765", ()), ("pi~3", "http://pi-3:8765", ())]
    assert all(m.kind == "rpi5" for m in spec.members())
    with pytest.raises(ValueError, match="pool URLs must start with http"):
        DeviceSpec(name="pi", url="http://pi-1:8765", pool=("pi-2:8765",))


def test_a_sweep_over_a_pool_of_eight_agents_runs_every_trial_once(tmp_path, make_sweep, sweep_workdir):
    from edgetune.device_agents.local import start_local_agents

    extra = {"devices": [{"name": "pi", "url": "http://127.0.0.1:1", "kind": "local-cpu",
                          "pool": [f"http://127.0.0.1:{i}" for i in range(2, MEMBERS + 1)]}],
             "objectives": [{"metric": "map50_95", "device": "pi"}, {"metric": "latency_p50_ms", "device": "pi"},
                            {"metric": "size_bytes"}]}
    path = make_sweep(tmp_path, name="pool", trials=TRIALS, ratios=(0.0,), extra=extra)
    with start_local_agents(MEMBERS, threads=1, workdir=tmp_path / "agents", extra_args=("--no-host-lock",)) as agents:
        sweep, space, cfg = prepare_sweep(path, workdir=sweep_workdir, local_agents=agents)
        assert agents_needed(cfg) == MEMBERS and sweep.hooks.parallel_trials() == MEMBERS
        sweep.run(space)
    trials = sweep.study.get_trials()
    records = [t.user_attrs[RECORD_ATTR] for t in trials]
    assert [t.number for t in trials] == list(range(TRIALS))
    assert all(t.state.name == "COMPLETE" for t in trials), [r.get("error") for r in records]
    members = [r["fingerprints"]["pi"]["name"] for r in records]
    assert set(members) <= {f"local-{i}" for i in range(MEMBERS)} and len(set(members)) >= 2, members
    anchor = sweep.study.user_attrs["paired_anchor"]["pi"]["p50"]
    for r in records:  # each timed against fp32 on its own member: one scale for the whole pool
        v = r["values"]
        assert v["latency_p50_ms@pi"] == pytest.approx(v["latency_ratio@pi"] * anchor)
    runs = Tracker(uri=cfg.tracking.uri, experiment=cfg.tracking.experiment, sweep=cfg.name, readonly=True).child_runs()
    assert sorted(runs) == list(range(TRIALS))  # each trial logged once


def test_a_pool_member_that_stops_answering_is_set_aside_while_the_others_answer(local_agent):
    """``SweepFleet.recover`` for a pool: the member named by the error does not answer, another does: no
    wait, the member is set aside and the next lease goes to the other; the last member is waited for."""
    from edgetune.errors import AgentUnavailable
    from edgetune.search._fleet import SweepFleet

    live = local_agent.specs()[0]
    spec = live.model_copy(update={"name": "pi", "pool": ("http://127.0.0.1:9",)})  # nothing listens on :9
    fleet = SweepFleet([spec])
    try:
        err = AgentUnavailable("connection refused")
        err.edgetune_member = "pi~2"
        assert fleet.recover("pi", err, wait_s=30) == 0.0
        with fleet._lease("pi") as a, fleet.fleet.lease("pi~2", timeout=1):
            assert a == "pi"  # the set-aside member is not leased even when it is the free one
        err = AgentUnavailable("connection refused")
        err.edgetune_member = "pi"
        fleet.recover("pi", err, wait_s=30)  # pi answers: not set aside, only its bundles are checked
        assert "pi" not in fleet._out
        with pytest.raises(AgentUnavailable, match="has not answered"):
            fleet._out.clear()
            fleet._out.add("pi")
            err.edgetune_member = "pi~2"
            fleet.recover("pi", err, wait_s=0.5, first_delay=0.1)  # the last member: waited for, bounded
    finally:
        fleet.close()
