"""The typed trial record: what Optuna stores, read back (old records included), and its MLflow keys."""

from __future__ import annotations

from types import SimpleNamespace

from edgetune.search.records import RECORD_ATTR, TrialRecord


def trial(attrs: dict):
    return SimpleNamespace(user_attrs=attrs)


def test_a_record_round_trips_through_the_user_attrs_and_keeps_unknown_fields():
    rec = TrialRecord(baseline=None, params={"runtime": "openvino"}, runtime="openvino", artifact_hash="ab" * 32,
                      values={"map50_95@local": 0.87, "size_bytes": 2.8e6}, constraints={"map50_95 >= 0.8": -0.07},
                      feasible=True, fingerprints={"local": {"cpu": "AMD EPYC", "latency_ci95_ms": [5.9, 6.1]}})
    stored = {**rec.attr(), "from_a_newer_edgetune": {"x": 1}}
    back = TrialRecord.of(trial({RECORD_ATTR: stored}))
    assert back.values == rec.values and back.runtime == "openvino" and back.measured and back.feasible
    assert back.attr()["from_a_newer_edgetune"] == {"x": 1}  # kept, not dropped


def test_an_enqueued_baseline_is_named_before_its_record_exists_and_a_failed_trial_says_why():
    empty = TrialRecord.of(trial({"baseline": "fp32"}))
    assert empty.baseline == "fp32" and not empty.measured and empty.name(0) == "fp32"
    failed = TrialRecord.of(trial({RECORD_ATTR: {"error": "measurement on 'pi' failed: timeout"}}))
    assert failed.error.startswith("measurement") and failed.feasible is None and failed.name(7) == "trial 7"


def test_mlflow_keys_are_made_in_one_place():
    rec = TrialRecord(baseline="int8-uniform@openvino", values={"latency_p50_ms@local": 6.0}, summary={"params_kept": 1.0},
                      constraints={"c": 0.5}, feasible=False, label="int8-uniform on openvino",
                      fingerprints={"local": {"cpu": "x"}})
    params, metrics, tags, files = rec.mlflow(number=3, state="COMPLETE", sampler="tpe")
    assert params == {"trial_number": 3, "sampler": "tpe", "baseline": "int8-uniform@openvino", "params_kept": 1.0}
    assert metrics == {"latency_p50_ms.local": 6.0, "constraint_0": 0.5}  # '@' is not allowed in MLflow keys
    assert tags["feasible"] == "false" and tags["baseline"] == "int8-uniform@openvino" and "error" not in tags
    assert tags["device.local"] == '{"cpu": "x"}' and files["config.json"]["constraints"] == {"c": 0.5}


def test_a_refined_trial_names_its_source_in_mlflow():
    params, *_ = TrialRecord(refined_from=12, values={"size_bytes": 1.0}).mlflow(number=40, state="COMPLETE",
                                                                                 sampler="tpe")
    assert params["refined_from"] == 12
