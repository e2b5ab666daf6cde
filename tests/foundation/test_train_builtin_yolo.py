"""The trainer of the builtin ``yolo11n`` (``edgetune train-builtin --name yolo11n``): a run killed after a
checkpoint and run again resumes from it and ends with exactly the weights of an uninterrupted run; a
checkpoint of another recipe is refused."""

from __future__ import annotations

import dataclasses
import importlib.util

import pytest

if importlib.util.find_spec("ultralytics") is None:  # not imported here: importing it patches PIL
    pytest.skip("the yolo extra (make test installs it)", allow_module_level=True)


def _cfg(steps: int):
    from edgetune.models.builtin.train_yolo import YoloTrainConfig

    # tiny, deterministic (fp32 on one thread): yolov8n at 64 px on 16 images
    return YoloTrainConfig(arch="yolov8n.yaml", steps=steps, batch=2, warmup=2, size=64, scales=(64, 96),
                           full_size_frac=0.25, train_size=16, bf16="off")


def test_resumed_training_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    import torch

    from edgetune.errors import ModelError
    from edgetune.models.builtin.train_yolo import train_yolo

    monkeypatch.setenv("EDGETUNE_CACHE", str(tmp_path / "cache"))
    losses: list[float] = []
    whole = train_yolo(_cfg(6), out=tmp_path / "whole.pt", ckpt_every=2, threads=1,
                       on_step=lambda it, loss: losses.append(loss))
    assert len(losses) == 6 and all(torch.isfinite(torch.tensor(losses)))

    # killed during step 5: the last checkpoint is step 4's
    first = tmp_path / "resumed.pt"
    cut = _cfg(6)

    class Stop(Exception):
        pass

    def stop_at_5(it, loss):
        if it == 5:
            raise Stop

    with pytest.raises(Stop):
        train_yolo(cut, out=first, ckpt_every=2, threads=1, on_step=stop_at_5)
    state = torch.load(str(first) + ".ckpt", map_location="cpu", weights_only=False)
    assert state["step"] == 4
    resumed_steps: list[int] = []
    resumed = train_yolo(cut, out=first, ckpt_every=2, threads=1, on_step=lambda it, loss: resumed_steps.append(it))
    assert resumed_steps == [5, 6]  # went on from the checkpoint, not from scratch
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    with pytest.raises(ModelError, match="another recipe"):
        train_yolo(dataclasses.replace(cut, lr=1e-3), out=first, threads=1)
