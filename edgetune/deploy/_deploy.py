"""``deploy``: pick a trial of a sweep, push its artifact to a device, verify it there, register it.

1. resolve the point (``trial=`` or a ``pick=`` rule) from the sweep's records;
2. fetch the artifact (sweep cache, MLflow front, or a rebuild) and check its hashes;
3. push it to the agent's deployment slot (``PUT /deployments/{name}``; verified and versioned there);
4. re-measure it on the device with the sweep's bundle and latency settings; on the same runtime the mAP
   must match the sweep's within 1e-4, else the previous version is restored and DeployError is raised;
5. register it in the MLflow model registry with the alias ``<device>-production``;
6. report where the model lives on the device and how an application loads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgetune._logging import get_logger
from edgetune.deploy._rule import noise_ties, parse_rule, pick
from edgetune.deploy._sweep import SweepRecords, TrialPoint, load_sweep
from edgetune.errors import ConfigError, DeployError

log = get_logger(__name__)

__all__ = ["DeployReport", "deploy", "resolve_point", "how_to_load"]


@dataclass
class DeployReport:
    sweep: str
    point: TrialPoint
    device: str
    url: str
    source: str  # cache | mlflow | rebuilt
    artifact: object  # Artifact
    result: object  # DeployResult
    verification: object  # Verification
    registration: object | None  # Registration
    tracking_uri: str = ""
    notes: list[str] = field(default_factory=list)  # e.g. other trials the --pick rule cannot tell apart

    @property
    def deployment(self):
        return self.result.deployment


def resolve_point(records: SweepRecords, *, trial: int | None, rule: str | None) -> TrialPoint:
    if (trial is None) == (rule is None):
        raise ConfigError("name the point to deploy with exactly one of --trial N or --pick RULE "
                          "(e.g. --pick 'max map50_95 where latency_p50_ms@pi <= 40').")
    if trial is not None:
        return records.trial(trial)
    if rule.strip().lower() in SUGGESTIONS:
        return records.trial(suggested_trial(records, rule.strip().lower()))
    parsed = parse_rule(rule, devices=records.device_names)
    return pick(parsed, records.complete(), baseline=records.baseline_values(), sweep=f"sweep '{records.name}'")


SUGGESTIONS = ("fastest", "knee", "smallest")


def suggested_trial(records: SweepRecords, kind: str) -> int:
    """The trial ``edgetune search`` / ``front`` suggest as ``kind`` (fastest within 1 accuracy point of fp32,
    the knee, the smallest that meets the constraints): the same choice, made by the same code
    (``edgetune.search.front.suggestions``) on the sweep's records."""
    from edgetune.search.front import suggestions
    from edgetune.search.wiring import load_front

    df, keys, goals, _ = load_front(records.config_path)
    picks = {p["kind"]: p for p in suggestions(df, keys, goals)}
    if kind not in picks:
        have = ", ".join(f"{k} (trial {p['trial']})" for k, p in picks.items()) or "none"
        raise DeployError(f"--pick {kind}: sweep '{records.name}' has no {kind} suggestion (it suggests: {have}); "
                          "pick by rule (--pick 'max map50_95 where ...') or deploy a trial with --trial N.")
    return int(picks[kind]["trial"])


def pick_notes(records: SweepRecords, point: TrialPoint, rule: str | None) -> list[str]:
    """What a user should know about a --pick choice: the trials it beat by less than the noise."""
    if rule is None or rule.strip().lower() in SUGGESTIONS:
        return []
    parsed = parse_rule(rule, devices=records.device_names)
    ties = noise_ties(parsed, point, records.complete(), baseline=records.baseline_values())
    if not ties:
        return []
    mine = point.values[parsed.key]
    ties = sorted(ties, key=lambda p: (abs(p.values[parsed.key] - mine), p.number))
    listed = ", ".join(f"{p.number} ({p.label}: {p.values[parsed.key]:.4g})" for p in ties[:4])
    more = f" and {len(ties) - 4} more" if len(ties) > 4 else ""
    return [f"--pick chose trial {point.number} ({mine:.4g}) by {parsed.key}, but {len(ties)} other trial(s) are "
            f"within the measurement noise of it on that value, nearest first: {listed}{more}. The choice between "
            "them is luck: compare them on the other columns of `edgetune front` and deploy one with --trial N."]


def _labels(val) -> dict[str, str]:
    return {str(c): n for c, n in zip(val.category_ids, val.class_names, strict=False)}


def deploy(*, sweep: str | Path, to: str, trial: int | None = None, rule: str | None = None, name: str | None = None,
           workdir: str | Path = ".edgetune", fleet: str | Path | None = None, register: bool = True,
           rebuild: bool = True) -> DeployReport:
    """Deploy one trial of ``sweep`` (its YAML) to device ``to``; see the module docstring for the steps."""
    from edgetune.deploy._fetch import fetch_artifact
    from edgetune.deploy._registry import register_deployment
    from edgetune.deploy._sweep import agent_client, resolve_device
    from edgetune.deploy._verify import sweep_bundle, verify_on_device
    from edgetune.search.runner import device_fingerprint

    records = load_sweep(sweep)
    cfg = records.cfg
    point = resolve_point(records, trial=trial, rule=rule)
    notes = pick_notes(records, point, rule)
    spec = resolve_device(to, cfg=cfg, fleet=fleet)
    name = name or cfg.name
    art, source = fetch_artifact(records, point, workdir=workdir, rebuild=rebuild)
    log.info("trial %d (%s): artifact %s from %s", point.number, point.label, art.hash[:12], source)
    bundle, val = sweep_bundle(cfg, art.manifest)
    runtime = point.record.runtime  # the runtime the sweep measured this trial on: deployed with it
    manifest = {**art.manifest, "deployment": {"sweep": cfg.name, "trial": point.number, "label": point.label,
                                               "device": to, "labels": _labels(val), "sweep_values": point.values,
                                               "runtime": runtime}}
    sha = art.manifest["onnx_sha256"]
    with agent_client(spec, measure_timeout=cfg.search.measure_timeout_s + 120) as client:
        _check_runtime(client, runtime, point=point, device=to)
        result = client.deploy(name, art.onnx_path, manifest=manifest, sha256=sha)
        dep = result.deployment
        log.info("pushed to %s: '%s' v%d (%s)", to, name, dep.active, "new" if result.created else "unchanged")
        verification, m = verify_on_device(client, sha, bundle=bundle, cfg=cfg, point=point, device=to,
                                           runtime=runtime)
        if not verification.ok:
            raise DeployError(_failed(verification, client, result, name))
    fingerprint = device_fingerprint(m.model_dump(exclude={"latency": {"samples_ms"}, "end_to_end": {"samples_ms"}}))
    registration = None
    if register:
        try:
            registration = register_deployment(cfg=cfg, point=point, artifact=art, model_name=name, device=to,
                                               deployment=dep, verification=verification, fingerprint=fingerprint)
        except Exception as exc:  # the device side is done: say so, and how to finish
            raise DeployError(f"'{name}' v{dep.active} is deployed and verified on '{to}', but registering it in MLflow "
                              f"({cfg.tracking.uri}) failed: {type(exc).__name__}: {exc}. Fix the tracking store and run "
                              "the same deploy again (pushing the active bytes again changes nothing on the device).") from exc
    return DeployReport(sweep=cfg.name, point=point, device=to, url=spec.url, source=source, artifact=art,
                        result=result, verification=verification, registration=registration,
                        tracking_uri=cfg.tracking.uri, notes=notes)


def _check_runtime(client, runtime: str | None, *, point, device: str) -> None:
    """DeployError before anything is pushed when the device does not offer the trial's runtime."""
    if runtime is None:
        return
    offered = client.info().offered_runtimes
    if runtime not in offered:
        raise DeployError(f"trial {point.number} was measured on the {runtime} runtime, but '{device}' offers "
                          f"{', '.join(offered)}; restart its agent with --runtime {','.join((*offered, runtime))} "
                          "(the deployment keeps the runtime it was chosen on). Nothing was pushed.")


def _failed(v, client, result, name: str) -> str:
    diffs = ", ".join(f"{k}: sweep {a['sweep']:.6f} vs device {a['device']:.6f}" for k, a in v.accuracy.items())
    text = (f"verification failed on '{v.device}': on the same runtime ({v.runtime_device}) the accuracy differs from "
            f"the sweep's by {v.max_accuracy_diff:.3g} (> {v.tolerance:g}): {diffs}. ")
    if result.created and result.previous is not None:
        client.rollback(name, version=result.previous)
        return text + f"'{name}' was rolled back to v{result.previous}; nothing was registered."
    return text + (f"'{name}' v{result.deployment.active} stays on the device (there is no earlier version to restore); "
                   "nothing was registered. Check the device's runtime and the model.")


def _detect_output(head: dict) -> str:
    n, layout = head.get("num_classes"), head.get("layout", "xywh_scores")
    if layout == "xyxy_score_class":
        return "(1, detections, 6): x1, y1, x2, y2, score, class"
    boxes = "x1, y1, x2, y2" if layout.startswith("xyxy") else "cx, cy, w, h"
    return f"(1, 4 + {n}, anchors): {boxes}, class scores" + (" (top-k, no NMS)" if layout == "xyxy_scores" else "")


def how_to_load(*, path: str, manifest: dict, runtime: str = "ort", registry_uri: str | None = None,
                url: str | None = None, name: str | None = None) -> str:
    """How an application loads the model: a runnable snippet (text for the CLI and the export README).
    ``path`` is the model file; its ``manifest.json`` is beside it."""
    inp, head = manifest.get("input") or {}, manifest.get("head") or {}
    shape = inp.get("shape", [1, 3, "S", "S"])
    size = shape[-1]
    manifest_path = str(Path(path).with_name("manifest.json"))
    lines = [
        '  # pip install "edgetune[agent]" (numpy, onnxruntime, pillow; no torch)',
        "  import json, numpy as np, onnxruntime as ort",
        "  from PIL import Image",
        "  from edgetune.data import letterbox, to_input, unletterbox",
        "  from edgetune.models.heads import decode_detections, head_from_dict",
        f'  head = head_from_dict(json.load(open("{manifest_path}"))["head"])',
        f'  sess = ort.InferenceSession("{path}", providers=["CPUExecutionProvider"])',
        '  image = np.asarray(Image.open("photo.jpg").convert("RGB"))',
        f"  x, meta = letterbox(image, {size})",
        f'  out = sess.run(None, {{"{inp.get("name", "images")}": to_input(x[None])}})[0]',
    ]
    if runtime.startswith("openvino"):  # the same file, read by OpenVINO (what the sweep measured)
        lines[0] = '  # pip install "edgetune[agent,openvino]" (numpy, openvino, pillow; no torch)'
        lines[1] = "  import json, numpy as np, openvino as ov"
        lines[6] = (f'  model = ov.Core().compile_model("{path}", "CPU", {{"INFERENCE_PRECISION_HINT": "f32", '
                    '"PERFORMANCE_HINT": "LATENCY"})')
        lines[9] = "  out = model(to_input(x[None]))[0]"
    if head.get("kind") == "detect":
        lines += ["  boxes, scores, classes = decode_detections(out[0], head)",
                  "  keep = scores >= 0.25  # the head's own threshold is low, for mAP",
                  "  boxes, scores, classes = unletterbox(boxes[keep], meta), scores[keep], classes[keep]"]
    lines += [f"  # the model: input {inp.get('dtype', 'float32')} {list(shape)} {inp.get('layout', 'NCHW')} "
              f"{inp.get('color', 'RGB')} in {inp.get('range', [0, 1])}, letterboxed with pad {inp.get('pad_value', 114)};"
              + (f" output {_detect_output(head)}" if head.get("kind") == "detect" else " output (1, classes)")]
    if runtime.startswith("tensorrt"):
        lines.append("  # TensorRT: build an engine on the board first (`edgetune export` writes build_engine.sh).")
    if registry_uri and name:
        lines.append(f"  # from the registry: mlflow.artifacts.download_artifacts('models:/{name}@<device>-production') "
                     f"with MLFLOW_TRACKING_URI={registry_uri}")
    if url and name:
        lines.append(f'  # try it: curl -H "Authorization: Bearer $TOKEN" -F image=@photo.jpg {url}/deployments/{name}/predict')
    return "\n".join(lines)
