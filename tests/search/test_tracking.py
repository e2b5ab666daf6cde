"""The MLflow tracker on a real sqlite store: parent/child runs, resume reconciliation, read-only use."""

from __future__ import annotations

import pytest

from edgetune.search.tracking import TRIAL_TAG, Tracker


@pytest.fixture
def uri(tmp_path):
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_parent_is_reused_and_children_are_logged_once(uri, tmp_path):
    t = Tracker(uri=uri, experiment="exp", sweep="s1")
    t.log_sweep_config("name: s1\n", {"sampler": "tpe"})
    rid = t.log_trial(0, params={"trial_number": 0}, metrics={"map50_95.local": 0.8}, tags={"pareto": "false"},
                      json_artifacts={"config.json": {"precision": {"a": "int8"}}})
    t.log_sweep_metrics(0, {"hypervolume": 0.1})
    again = Tracker(uri=uri, experiment="exp", sweep="s1")
    assert again.parent_id == t.parent_id
    children = again.child_runs()
    assert list(children) == [0] and children[0].info.run_id == rid
    run = again.client.get_run(rid)
    assert run.data.metrics["map50_95.local"] == 0.8 and run.data.tags[TRIAL_TAG] == "0"
    assert run.info.status == "FINISHED"
    assert [f.path for f in again.client.list_artifacts(rid)] == ["config.json"]
    assert "sweep.yaml" in [f.path for f in again.client.list_artifacts(t.parent_id)]
    other = Tracker(uri=uri, experiment="exp", sweep="s2")
    assert other.parent_id != t.parent_id and other.child_runs() == {}


def test_reconcile_deletes_half_logged_children(uri):
    t = Tracker(uri=uri, experiment="exp", sweep="s")
    t.log_trial(0, params={}, metrics={}, tags={}, json_artifacts={})
    # a child a killed process left RUNNING
    t.client.create_run(t.experiment_id, tags={"mlflow.parentRunId": t.parent_id, TRIAL_TAG: "1"})
    assert t.reconcile() == {0}
    assert list(t.child_runs()) == [0]


def test_readonly_does_not_create(uri):
    with pytest.raises(LookupError):
        Tracker(uri=uri, experiment="nothing", sweep="s", readonly=True)
