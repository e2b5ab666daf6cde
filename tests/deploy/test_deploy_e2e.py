"""Issue 6 end to end, after a small real sweep against a local agent (see conftest): deploy by rule,
verify on the device, register (version + alias), predict on an image, roll back, list; a rule that
matches nothing exits non-zero with the candidates; corrupted bytes are refused and nothing is replaced;
the artifact comes from the cache, MLflow or a rebuild; export writes the deployable folder."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from edgetune.deploy import deploy, how_to_load, load_sweep
from edgetune.errors import AgentError

NAME = "shapes-det"
RULE = "max map50_95 where latency_p50_ms@local <= 1000 and size_bytes <= 2e6"

pytestmark = pytest.mark.slow  # they share one real 3-trial sweep (~40 s to build)


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "edgetune.cli", *args], capture_output=True, text=True, timeout=300,
                          env=env)


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def expected_pick(df) -> int:
    ok = df[(df["state"] == "COMPLETE") & (df["size_bytes"] <= 2e6) & (df["latency_p50_ms@local"] <= 1000)]
    return int(ok.sort_values(["map50_95@local", "trial"], ascending=[False, True]).iloc[0]["trial"])


def reference_detections(onnx_path, image, head, threshold):
    """The deployed model run here with onnxruntime (1 thread, like the agent) and the same numpy head."""
    import onnxruntime as ort

    from edgetune.data._preprocess import letterbox, to_input, unletterbox
    from edgetune.models.heads import decode_detections

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    boxed, meta = letterbox(image, 256)
    out = sess.run(None, {sess.get_inputs()[0].name: to_input(boxed[None])})[0]
    boxes, scores, classes = decode_detections(out[0], head)
    keep = scores >= threshold
    return unletterbox(boxes[keep], meta), scores[keep], classes[keep]


def test_deploy_by_rule_verify_register_predict_rollback_list(sweep_run, tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from PIL import Image

    from edgetune.data.shapes import shapes_split
    from edgetune.models.heads import head_from_dict

    df = sweep_run.frame
    rep = deploy(sweep=sweep_run.config, to="local", rule=RULE, name=NAME, workdir=sweep_run.workdir)
    assert rep.point.number == expected_pick(df) and rep.source == "cache"
    row = df[df["trial"] == rep.point.number].iloc[0]

    # verified on the device: same runtime, same mAP as the sweep, latency reported
    v = rep.verification
    assert v.compared and v.same_runtime and v.ok and v.runtime_device.startswith("ort ")
    assert abs(v.accuracy["map50_95@local"]["device"] - row["map50_95@local"]) <= 1e-4
    assert v.accuracy["map50_95@local"]["sweep"] == row["map50_95@local"]
    lat = v.latency["latency_p50_ms@local"]
    assert lat["sweep"] == row["own_latency_p50_ms@local"] and lat["device"] > 0  # the trial's own timing, as here
    print(f"\nverification: mAP diff {v.max_accuracy_diff:.2g}, p50 {lat['sweep']:.3f} -> {lat['device']:.3f} ms")

    # on the device: v1 is active and the stable path holds exactly the artifact's bytes
    dep, onnx_sha = rep.deployment, rep.artifact.manifest["onnx_sha256"]
    assert rep.result.created and dep.active == 1 and dep.active_version.sha256 == onnx_sha
    assert sha(dep.current_path) == onnx_sha and dep.active_version.label == rep.point.label

    # registered: the alias points at a version carrying the manifest, device and metrics
    client = MlflowClient(tracking_uri=sweep_run.tracking_uri, registry_uri=sweep_run.tracking_uri)
    mv = client.get_model_version_by_alias(NAME, "local-production")
    assert int(mv.version) == rep.registration.version and mv.run_id == rep.registration.run_id
    assert mv.tags["manifest.onnx_sha256"] == onnx_sha and mv.tags["edgetune.deploy.device"] == "local"
    assert mv.tags["manifest.artifact_hash"] == rep.artifact.hash and "ort" in mv.tags["device.fingerprint"]
    assert float(mv.tags["device.map50_95@local".replace("@", ".")]) == pytest.approx(row["map50_95@local"], abs=1e-4)
    again = deploy(sweep=sweep_run.config, to="local", rule=RULE, name=NAME, workdir=sweep_run.workdir)
    assert not again.result.created and again.registration.version == rep.registration.version  # a no-op
    assert len(client.search_model_versions(f"name = '{NAME}'")) == 1
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sweep_run.tracking_uri)
    import mlflow

    local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{NAME}@local-production", dst_path=str(tmp_path))
    assert sha(os.path.join(local, "model.onnx")) == onnx_sha
    assert json.loads((Path(local) / "manifest.json").read_text())["artifact_hash"] == rep.artifact.hash

    # predict on one image: the agent's detections are the model's, decoded like the sweep's accuracy
    val = shapes_split("val", 40)
    image = val.load_image(3)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    with sweep_run.client() as agent:
        pred = agent.predict(NAME, buf.getvalue(), score_threshold=0.001)
    boxes, scores, classes = reference_detections(rep.artifact.onnx_path, image,
                                                  head_from_dict(rep.artifact.manifest["head"]), 0.001)
    assert pred.version == 1 and (pred.image_width, pred.image_height) == (image.shape[1], image.shape[0])
    assert len(pred.detections) == len(scores) > 0
    np.testing.assert_allclose([d.box_xyxy for d in pred.detections], boxes, atol=0.01)
    np.testing.assert_allclose([d.score for d in pred.detections], scores, atol=1e-4)
    assert [d.label for d in pred.detections] == [val.class_names[c] for c in classes]

    # the snippet printed for application developers runs as printed, on the deployed file
    (tmp_path / "photo.png").write_bytes(buf.getvalue())
    for runtime in ("ort", "openvino"):  # each runtime's snippet, as printed (OpenVINO when the extra is there)
        if runtime == "openvino" and importlib.util.find_spec("openvino") is None:
            continue
        snippet = textwrap.dedent(how_to_load(path=dep.current_path, manifest=rep.artifact.manifest, runtime=runtime))
        run = subprocess.run([sys.executable, "-c", snippet.replace("photo.jpg", str(tmp_path / "photo.png"))
                              + "\nprint(len(scores))"], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, (runtime, run.stderr)
        assert abs(int(run.stdout.split()[-1]) - int((scores >= 0.25).sum())) <= (runtime != "ort"), runtime

    # a second trial through the CLI -> v2, then roll back to v1 (the alias follows), then list
    other = int(df[(df["state"] == "COMPLETE") & (df["trial"] != rep.point.number)].iloc[0]["trial"])
    r = cli("deploy", "--sweep", str(sweep_run.config), "--trial", str(other), "--to", "local", "--name", NAME,
            "--workdir", str(sweep_run.workdir))
    assert r.returncode == 0, r.stderr
    assert f"as '{NAME}' v2" in r.stdout and "verified on local" in r.stdout and dep.current_path in r.stdout
    assert "onnxruntime" in r.stdout and f"models:/{NAME}@local-production" in r.stdout
    second = client.get_model_version_by_alias(NAME, "local-production").version
    assert int(second) == int(mv.version) + 1

    r = cli("deploy", "--rollback", "--to", "local", "--name", NAME, "--sweep", str(sweep_run.config))
    assert r.returncode == 0, r.stderr
    assert "is now v1" in r.stdout and sha(dep.current_path) == onnx_sha
    assert int(client.get_model_version_by_alias(NAME, "local-production").version) == int(mv.version)

    r = cli("deployments", "--device", "local", "--sweep", str(sweep_run.config), "--json")
    assert r.returncode == 0, r.stderr
    (listed,) = [d for d in json.loads(r.stdout) if d["name"] == NAME]
    assert listed["active"] == 1 and [x["version"] for x in listed["versions"]] == [1, 2]
    assert listed["versions"][1]["artifact_hash"] == df[df["trial"] == other].iloc[0]["artifact"]


def test_a_rule_matching_nothing_exits_nonzero_with_the_candidates(sweep_run):
    with sweep_run.client() as agent:
        before = agent.deployments()
    r = cli("deploy", "--sweep", str(sweep_run.config), "--to", "local", "--name", "never",
            "--pick", "max map50_95 where size_bytes <= 1000", "--workdir", str(sweep_run.workdir))
    assert r.returncode == 2
    err = " ".join(r.stderr.split())
    assert "no trial of sweep 'deploy-e2e' satisfies" in err and "3 completed trial(s)" in err
    smallest = int(sweep_run.frame["size_bytes"].min())
    assert "Nearest: trial " in err and f"size_bytes={smallest:,}" in err and "map50_95@local=" in err
    with sweep_run.client() as agent:
        assert agent.deployments() == before


def test_corrupted_bytes_are_refused_and_nothing_is_replaced(sweep_run, tmp_path):
    from edgetune.deploy._fetch import fetch_artifact

    records = load_sweep(sweep_run.config)
    point = records.trial(int(sweep_run.frame[sweep_run.frame["pareto"]].iloc[0]["trial"]))
    art, _ = fetch_artifact(records, point, workdir=sweep_run.workdir)
    with sweep_run.client() as agent:
        agent.deploy("guarded", art.onnx_path, manifest=art.manifest)
        before = agent.deployment("guarded")
        bad = bytearray(art.onnx_bytes)
        bad[len(bad) // 2] ^= 0xFF
        with pytest.raises(AgentError) as err:
            agent.deploy("guarded", bytes(bad), manifest=art.manifest, sha256=art.manifest["onnx_sha256"])
        assert err.value.status_code == 400 and err.value.error_type == "HashMismatch"
        assert "nothing was replaced" in str(err.value)
        assert agent.deployment("guarded") == before
    assert sha(before.current_path) == art.manifest["onnx_sha256"]

    # controller side: a corrupted cached artifact is not used; the MLflow front copy is (hash-checked)
    work = tmp_path / "work"
    (work / "artifacts" / art.hash).mkdir(parents=True)
    (work / "artifacts" / art.hash / "manifest.json").write_text(json.dumps(art.manifest))
    (work / "artifacts" / art.hash / "model.onnx").write_bytes(bytes(bad))
    again, source = fetch_artifact(records, point, workdir=work)
    assert source == "mlflow" and sha(again.onnx_path) == art.manifest["onnx_sha256"]


def test_artifact_from_mlflow_or_rebuilt_from_config(sweep_run, tmp_path):
    from edgetune.deploy._fetch import fetch_artifact

    records = load_sweep(sweep_run.config)
    df = sweep_run.frame
    front = records.trial(int(df[df["pareto"]].iloc[0]["trial"]))
    art, source = fetch_artifact(records, front, workdir=tmp_path / "empty")
    assert source == "mlflow" and art.hash == front.artifact_hash
    assert (tmp_path / "empty" / "artifacts" / art.hash / "model.onnx").is_file()  # now cached

    # no cache and no MLflow store: rebuilt from the trial's config and the source weights, same hashes
    cfg = records.cfg
    blind = dataclasses.replace(records, cfg=cfg.model_copy(update={"tracking": cfg.tracking.model_copy(
        update={"uri": f"sqlite:///{tmp_path / 'none.db'}"})}))
    fp32 = records.trial(int(df[df["baseline"] == "fp32"].iloc[0]["trial"]))
    rebuilt, source = fetch_artifact(blind, fp32, workdir=tmp_path / "rebuild")
    assert source == "rebuilt" and rebuilt.hash == fp32.artifact_hash
    cached = json.loads((sweep_run.workdir / "artifacts" / fp32.artifact_hash / "manifest.json").read_text())
    assert rebuilt.manifest["onnx_sha256"] == cached["onnx_sha256"]


def test_export_writes_the_deployable_folder(sweep_run, tmp_path):
    from edgetune.deploy import export_trial

    df = sweep_run.frame
    trial = int(df[df["pareto"]].iloc[0]["trial"])
    out = tmp_path / "export"
    r = cli("export", "--sweep", str(sweep_run.config), "--trial", str(trial), "--out", str(out),
            "--workdir", str(sweep_run.workdir))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "manifest.json", "model.onnx", "summary.json"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sha(out / "model.onnx") == manifest["onnx_sha256"]
    summary = json.loads((out / "summary.json").read_text())
    row = df[df["trial"] == trial].iloc[0]
    assert summary["devices"]["local"]["map50_95"] == row["map50_95@local"]
    assert summary["values"]["size_bytes"] == row["size_bytes"] and summary["fingerprints"]["local"]["runtime"]
    assert "ort.InferenceSession(\"model.onnx\"" in (out / "README.md").read_text()

    # a sweep whose device is a Jetson also gets the engine build command for the board
    jetson = tmp_path / "jetson.yaml"
    jetson.write_text(sweep_run.config.read_text().replace("kind: local-cpu", "kind: jetson-orin"))
    summary = export_trial(sweep=jetson, out=tmp_path / "jetson", trial=trial, workdir=sweep_run.workdir)
    script = (tmp_path / "jetson" / "build_engine.sh").read_text()
    assert summary["tensorrt_devices"] == ["local"]
    assert summary["build_engine"].startswith("trtexec --onnx=model.onnx --saveEngine=model.engine --stronglyTyped")
    assert summary["build_engine"].removeprefix("trtexec ") in script
    assert os.access(tmp_path / "jetson" / "build_engine.sh", os.X_OK)


def test_pick_a_suggestion_by_name_deploys_what_the_front_suggests(sweep_run):
    from edgetune.deploy import load_sweep, resolve_point
    from edgetune.errors import DeployError
    from edgetune.search.front import suggestions
    from edgetune.search.wiring import load_front

    records = load_sweep(sweep_run.config)
    df, keys, goals, _ = load_front(sweep_run.config)
    picks = {p["kind"]: p["trial"] for p in suggestions(df, keys, goals)}
    assert "smallest" in picks
    for kind in ("fastest", "knee", "smallest"):
        if kind in picks:
            assert resolve_point(records, trial=None, rule=f" {kind.upper()} ").number == picks[kind]
        else:
            with pytest.raises(DeployError, match=f"no {kind} suggestion"):
                resolve_point(records, trial=None, rule=kind)
