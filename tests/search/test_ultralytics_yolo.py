"""Ultralytics YOLO11n / YOLOv8n (the ``yolo`` extra, built from their yaml, random weights): the space is
discovered in bounded memory with no importable torchvision, every offered group cuts at 30% and exports
to an ONNX that matches the pruned torch model, and a short sweep on a YOLO-format dataset completes its
pruned trials (recovery: Ultralytics' own loss on the training-mode outputs + distillation) without opening a
socket outside 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
import os
import pickle
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from dataset_files import export_yolo, write_yaml

if importlib.util.find_spec("ultralytics") is None:  # not imported here: importing it patches PIL
    pytest.skip("the yolo extra (make test installs it)", allow_module_level=True)

SPACE_SCRIPT = textwrap.dedent("""
    import json, resource, socket, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # 4 GiB of address space
    class _NoTorchvision:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "torchvision":
                raise ImportError("torchvision is blocked for this test")
    sys.meta_path.insert(0, _NoTorchvision())
    opened = []
    _connect = socket.socket.connect
    def connect(self, address):
        opened.append(str(address))
        return _connect(self, address)
    socket.socket.connect = connect
    from edgetune.config import ModelSpec
    from edgetune.models import load_model
    from edgetune.spaces import SpaceSpec, build_space
    out = {}
    for yaml_name in sys.argv[1:]:
        t = time.time()
        model = load_model(ModelSpec(source="ultralytics", name=yaml_name, input_size=320),
                           class_names=tuple("abcdef"), category_ids=tuple(range(1, 7)))
        space = build_space(model, SpaceSpec(sparsity={"kind": "channel", "ratios": [0.0, 0.3]}))
        offered = [g.name for g in space.groups if "channel:0.3" in space.sparsity_choices[g.name]]
        out[yaml_name] = {"seconds": round(time.time() - t, 1), "layers": len(space.layers),
                          "convs": sum(type(m).__name__ == "Conv2d" for m in model.module.modules()),
                          "groups": len(space.groups), "offered": len(offered), "pins": space.sparsity_pins,
                          "notes": list(space.notes), "digest": model.source_hash,
                          "stage_of": {l.name: l.stage for l in space.layers}}
    out["torchvision_imported"] = "torchvision" in sys.modules
    out["sockets"] = opened
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out))
""")


def test_space_is_bounded_needs_no_torchvision_and_pins_what_cannot_be_cut(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path / "home"), "EDGETUNE_CACHE": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1"}
    for key in ("YOLO_CONFIG_DIR", "YOLO_OFFLINE"):
        env.pop(key, None)
    # the timeout only guards against a hang (the unbounded discovery this replaces grew to 23 GB)
    proc = subprocess.run([sys.executable, "-c", SPACE_SCRIPT, "yolo11n.yaml", "yolov8n.yaml"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    v11, v8 = res["yolo11n.yaml"], res["yolov8n.yaml"]
    # 88 / 64 convs, plus one per chunked cv1 (C3k2 / C2f / C2PSA) split into two
    assert v11["layers"] == v11["convs"] == 88 + 9 and v8["layers"] == v8["convs"] == 64 + 8
    assert v11["offered"] >= 60 and v8["offered"] >= 50
    # the C2PSA attention block is pinned with its reason; only the box branch before DFL cannot be cut
    assert any("attention" in n and "model.model.10.m.0.attn.qkv.conv" in n for n in v11["notes"])
    for pins in (v11["pins"], v8["pins"]):
        assert not any("cv1" in name for name in pins)
        assert pins and all(why.startswith("no channel cut: a test cut") for why in pins.values())
    # tie: stage is one choice per Ultralytics block (model.model.N), not one for the whole network
    assert v11["stage_of"]["model.model.2.cv2.conv"] == "model.model.2"
    assert v11["stage_of"]["model.model.23.cv3.0.0.0.conv"] == "model.model.23"
    assert len(set(v11["stage_of"].values())) == 18  # 24 blocks, 2 Upsample and 4 Concat have no conv
    # a random-init model from a yaml gets the same (seeded) weights at every load, so its key can name them
    assert v11["digest"] != v8["digest"] and len(v11["digest"]) == 64
    assert not res["torchvision_imported"] and res["sockets"] == []
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*"))  # nothing in the home dir


@pytest.mark.parametrize("yaml_name", ["yolo11n.yaml", "yolov8n.yaml"])
def test_every_offered_group_cuts_at_30_percent_and_the_onnx_matches_the_pruned_model(yaml_name, tmp_path):
    import onnx

    from edgetune.compress import RecoverySpec, compress
    from edgetune.config import ModelSpec
    from edgetune.models import load_model
    from edgetune.spaces import CompressionConfig, SpaceSpec, build_space

    model = load_model(ModelSpec(source="ultralytics", name=yaml_name, input_size=128),
                       class_names=tuple("abcdef"), category_ids=tuple(range(1, 7)))
    space = build_space(model, SpaceSpec(sparsity={"kind": "channel", "ratios": [0.0, 0.3]}))
    offered = [g.name for g in space.groups if "channel:0.3" in space.sparsity_choices[g.name]]
    config = CompressionConfig(sparsity={g: {"kind": "channel", "ratio": 0.3} for g in offered})
    calib = np.random.default_rng(0).random((4, 3, 128, 128), dtype=np.float32)
    art = compress(model, config, calib=calib, workdir=tmp_path, recovery=RecoverySpec(steps=0), space=space)
    params = sum(p.numel() for p in model.module.parameters())
    assert art.sizes["params"] < 0.75 * params  # channels were physically removed
    assert art.manifest["max_abs_diff_vs_torch"] < 1e-3  # ONNX (onnxruntime) vs the pruned torch model
    graph = onnx.load_model_from_string(art.onnx_bytes).graph
    assert graph.output[0].name and len(graph.node) > 100


@pytest.mark.slow
def test_the_yolo_walkthrough_from_a_checkpoint_runs_on_loopback_only(tmp_path, shapes_val, make_sweep,
                                                                       local_agent, monkeypatch):
    """docs/yolo.md's steps on a YOLO-format dataset and an Ultralytics training checkpoint (`best.pt`, the
    pickled model as Ultralytics saves it): `eval` scores it, a short sweep completes pruned trials, and
    nothing opens a socket outside 127.0.0.1. (`space --sensitivity` on a YOLO model: test_output_scales.)"""
    import torch
    from typer.testing import CliRunner

    from edgetune.cli import app
    from edgetune.models.ultralytics_yolo import build_from_yaml
    from edgetune.search.records import RECORD_ATTR
    from edgetune.search.wiring import prepare_sweep

    root = tmp_path / "shapes-yolo"
    export_yolo(shapes_val, root, "val", range(24))
    export_yolo(shapes_val, root, "train", range(24, 72))
    data_yaml = write_yaml(root / "data.yaml", {"path": ".", "train": "images/train", "val": "images/val",
                                                "names": dict(enumerate(shapes_val.class_names))})
    best = tmp_path / "runs" / "detect" / "train" / "weights" / "best.pt"
    best.parent.mkdir(parents=True)
    net = build_from_yaml("yolo11n.yaml", len(shapes_val.class_names)).half()
    for p in net.parameters():
        p.requires_grad_(False)  # as Ultralytics saves it
    torch.save({"model": None, "ema": net, "epoch": -1}, best)
    remote: list[str] = []
    connect = socket.socket.connect

    def loopback_only(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            remote.append(str(address))
            raise OSError(f"test: no socket outside 127.0.0.1 ({address})")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    r = CliRunner().invoke(app, ["eval", "--model", f"ultralytics:{best}", "--data", f"yolo:{data_yaml}",
                                 "--input-size", "128", "--val-images", "24", "--runs", "5", "--json"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.output[r.output.index("{"):])
    assert row["val_images"] == 24 and 0.0 <= row["map50_95"] <= 1.0 and 2.5e6 < row["params"] < 2.7e6
    path = make_sweep(tmp_path, name="yolo11n-sweep", trials=3, ratios=(0.0, 0.3), extra={
        "model": {"source": "ultralytics", "weights": str(best), "input_size": 128},
        "data": {"source": "yolo", "path": str(data_yaml), "val_images": 24, "calib_images": 8, "train_size": 48},
        "recovery": {"steps": 4, "batch": 4, "train_images": 48},
    })
    sweep, space, cfg = prepare_sweep(path, workdir=tmp_path / "work", local_agents=local_agent)
    sweep.run(space)
    trials = sweep.study.get_trials()
    errors = [t.user_attrs.get(RECORD_ATTR, {}).get("error") for t in trials]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3, errors
    pruned = [t.user_attrs[RECORD_ATTR] for t in trials if t.user_attrs[RECORD_ATTR]["summary"]["params_kept"] < 0.95]
    assert pruned, "the sweep sampled no pruned trial"
    assert remote == []


def test_a_model_built_from_a_yaml_has_the_same_weights_at_every_load():
    """Random initial weights are seeded, so the cache key of a yaml model (its digest) names one set of weights."""
    import torch

    from edgetune.config import ModelSpec
    from edgetune.models import load_model

    def load():
        return load_model(ModelSpec(source="ultralytics", name="yolov8n.yaml", input_size=64),
                          class_names=tuple("abc"), category_ids=(1, 2, 3))

    torch.manual_seed(123)
    a = load()
    after_load = torch.rand(1)
    b = load()
    assert a.source_hash == b.source_hash
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after_load)  # building the model drew nothing from the global RNG


def test_importing_ultralytics_leaves_pil_and_numpy_as_they_were():
    """Ultralytics replaces PIL's Image.open on import with one that pip-installs a HEIF plugin when a file
    is unreadable; edgetune restores it, so a corrupt image stays a clear DataError and installs nothing."""
    import numpy as np
    from PIL import Image

    from edgetune.models.ultralytics_yolo import import_ultralytics

    before = np.get_printoptions()
    import_ultralytics()
    import ultralytics.utils.patches  # noqa: F401  (the module that patches, imported again: a no-op)

    assert Image.open.__module__ == "PIL.Image" and np.get_printoptions() == before


def test_chunked_cv1_outputs_become_separate_convs_with_identical_outputs():
    """The C3k2 / C2f ``cv1`` conv whose output is chunked in two is rewritten into one conv per half; with
    non-trivial BatchNorm statistics the model's outputs do not change."""
    import torch

    from edgetune.models._rewrite import SplitBlock, split_chunked_outputs
    from edgetune.models.ultralytics_yolo import import_ultralytics, wrap_detection_model

    import_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    module = wrap_detection_model(DetectionModel("yolo11n.yaml", nc=6, verbose=False)).eval()
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        before = module(x)
    done = split_chunked_outputs(module, 128)
    with torch.no_grad():
        after = module(x)
    assert "model.model.2.cv1" in done and len(done) == 9
    assert isinstance(module.model.model[2].cv1, SplitBlock)
    assert torch.allclose(before, after, rtol=1e-5, atol=1e-5)


def test_recovery_loss_is_ultralytics_own_on_the_same_targets():
    """The adapter's supervised loss on edgetune's batch layout (xyxy input pixels, padded with a mask) is
    exactly Ultralytics' ``DetectionModel.loss`` on the batch dict its own dataloader would give (normalised
    xywh per box), per image; with no box at all it is finite; it reaches the weights."""
    import types

    import torch

    from edgetune.config import ModelSpec
    from edgetune.models import load_model
    from edgetune.models.ultralytics_yolo import UltralyticsDetectAdapter

    model = load_model(ModelSpec(source="ultralytics", name="yolov8n.yaml", input_size=64),
                       class_names=tuple("abcdef"), category_ids=tuple(range(1, 7)))
    adapter = model.adapter
    assert isinstance(adapter, UltralyticsDetectAdapter) and adapter.has_loss
    assert adapter.gains == {"box": 7.5, "cls": 0.5, "dfl": 1.5}  # Ultralytics' defaults (no checkpoint args)
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    gt = torch.tensor([[[4.0, 8.0, 30.0, 40.0], [20.0, 20.0, 60.0, 50.0]], [[10.0, 12.0, 26.0, 60.0], [0, 0, 0, 0]]])
    labels, mask = torch.tensor([[1, 4], [2, 0]]), torch.tensor([[True, True], [True, False]])
    module = model.module.train()
    out = adapter.forward(module, x)
    ours = adapter.loss(out, (x, gt, labels, mask))

    det = module.model
    det.args = types.SimpleNamespace(box=7.5, cls=0.5, dfl=1.5)
    xyxy = gt[mask]
    xywh = torch.cat([(xyxy[:, :2] + xyxy[:, 2:]) / 2, xyxy[:, 2:] - xyxy[:, :2]], 1) / 64
    batch = {"img": x, "batch_idx": torch.tensor([0.0, 0.0, 1.0]), "cls": torch.tensor([[1.0], [4.0], [2.0]]),
             "bboxes": xywh}
    theirs, _ = det.loss(batch, out[1])
    assert torch.allclose(ours, theirs.sum() / 2, rtol=1e-5)
    ours.backward()
    assert det.model[0].conv.weight.grad.abs().sum() > 0

    empty = adapter.loss(adapter.forward(module, x), (x, gt, labels, torch.zeros_like(mask)))
    assert torch.isfinite(empty)
    assert out[0].shape == (2, 4 + 6, 84)  # decoded (N, 4 + C, A) for distillation, 8x8 + 4x4 + 2x2 anchors
    assert pickle.loads(pickle.dumps(adapter)).gains == adapter.gains  # picklable after a training forward
