"""What the device ran against what the config asked, per layer (``Measurement.realised_precision``): real
det-s int8 artifacts measured on a real agent offering onnxruntime and OpenVINO. The int8 placed for
OpenVINO (no Q/DQ on Conv outputs) leaves onnxruntime no QLinearConv to fuse for some asked-int8 convs:
they run in float there, and the record and the front say so; OpenVINO runs every asked one in int8."""

from __future__ import annotations

import optuna
import pytest

from edgetune.device_agents.runtimes import get_runtime

pytestmark = pytest.mark.skipif(get_runtime("openvino").info().error is not None,
                                reason="openvino is not importable here (pip install 'edgetune[openvino]')")

LATENCY = {"min_runs": 5, "min_seconds": 0, "warmup": 1, "end_to_end": False}


@pytest.fixture(scope="module")
def measured(det_s, shapes_calib, sweep_workdir, tmp_path_factory):
    from edgetune.compress import compress
    from edgetune.device_agents.local import start_local_agents
    from edgetune.spaces import SpaceSpec, build_space

    space = build_space(det_s, SpaceSpec(precision=["fp32", "int8"], keep={"precision": {"fp32": ["first", "last"]}},
                                         targets=["local-cpu"]))
    arts = {p: compress(det_s, space.baseline("int8-uniform", p), calib=shapes_calib,
                        workdir=sweep_workdir / "artifacts") for p in ("ort", "openvino")}
    out = {}
    with start_local_agents(1, threads=1, runtime="ort,openvino",
                            workdir=tmp_path_factory.mktemp("agents")) as agents, \
            agents.fleet().client("local-0") as c:
        for placed, runtime in (("openvino", "ort"), ("openvino", "openvino"), ("ort", "ort")):
            out[placed, runtime] = (arts[placed], c.measure(arts[placed].onnx_path, latency=LATENCY, runtime=runtime))
    return out


def test_each_runtime_reports_the_precision_every_weighted_layer_ran_in(measured):
    from edgetune.search.runner import asked_int8, realised_report

    for (placed, runtime), (art, m) in measured.items():
        asked = asked_int8(art)
        assert m.realised_precision is not None and set(m.realised_precision) == set(asked), (placed, runtime)
        report = realised_report(asked, m.realised_precision)
        assert report["int8_asked"] == sum(asked.values()) > 50
        assert sum(report["counts"].values()) == len(asked)
    art, m = measured["openvino", "openvino"]
    ov = realised_report(asked_int8(art), m.realised_precision)
    assert ov["asked_not_run"] == [] and ov["int8_run"] >= ov["int8_asked"]
    art, m = measured["openvino", "ort"]
    ort = realised_report(asked_int8(art), m.realised_precision)
    # onnxruntime fuses DQ -> Conv -> Q into QLinearConv; without the Q after the conv there is nothing to fuse
    assert ort["asked_not_run"] and ort["int8_run"] < ort["int8_asked"]
    assert set(ort["counts"]) <= {"int8", "float"}


def test_the_record_and_the_front_show_a_layer_that_ran_in_float_though_int8_was_asked(measured, tmp_path):
    from edgetune.search._cli import front_table
    from edgetune.search.paired import realised_lines
    from edgetune.search.records import RECORD_ATTR, TrialRecord, trials_frame
    from edgetune.search.runner import asked_int8, realised_report

    trials = []
    for n, key in enumerate([("ort", "ort"), ("openvino", "ort"), ("openvino", "openvino")]):
        art, m = measured[key]
        rep = realised_report(asked_int8(art), m.realised_precision)
        rec = TrialRecord(runtime=key[1], label=f"int8 placed for {key[0]} on {key[1]}", artifact_hash=art.hash,
                          values={"latency_p50_ms@local": m.latency.p50_ms, "size_bytes": 1e6 - n},
                          realised={"local": rep})
        trial = optuna.trial.create_trial(values=[m.latency.p50_ms, 1e6 - n], user_attrs={RECORD_ATTR: rec.model_dump()})
        trial.number = n
        trials.append(trial)
    keys = ["latency_p50_ms@local", "size_bytes"]
    df = trials_frame(trials, keys, ranks={0: 0, 1: 0, 2: 0})
    assert TrialRecord.of(trials[1]).realised["local"]["asked_not_run"]  # kept with the trial
    assert bool(df.loc[1, "int8_mismatch"]) and not bool(df.loc[2, "int8_mismatch"])
    lines = realised_lines(df)
    assert any(line.startswith("precision as run, #1: local: int8 asked on ") and "ran in float" in line
               for line in lines)
    assert not any(line.startswith("precision as run, #2:") for line in lines)
    from rich.console import Console

    console = Console(width=100, record=True)
    console.print(front_table(df, keys, ["min", "min"], title="t"))
    text = console.export_text()
    row = next(line for line in text.splitlines() if line.strip().startswith("1 "))
    assert "[int8 not as" in row and text.count("[int8 not as") == 1, text  # trial 1 only (labels wrap)
