"""The ``ultralytics`` model source: YOLOv8 / YOLO11 detectors (the ``yolo`` extra, AGPL-3.0, never a core
dependency; it runs on the controller only: devices receive ONNX).

- ``weights: best.pt``: a checkpoint written by Ultralytics training (its EMA model when present);
- ``name: yolo11n.yaml`` (a model yaml shipped with Ultralytics) or ``path: my_model.yaml``: the architecture
  built for the dataset's class count, randomly initialised unless ``weights`` is also given (then a plain
  state dict of that architecture).

Ultralytics is imported offline: ``YOLO_OFFLINE=1`` and its settings file in edgetune's cache directory
(never the home directory); nothing is downloaded, and a missing weights file is an error, never a
download. Nothing here imports torchvision: Ultralytics imports it lazily for prediction only, which
edgetune does through onnxruntime.

:func:`wrap_detection_model` wraps the Ultralytics ``DetectionModel`` so that its forward always returns the
decoded ``(N, 4 + C, A)`` tensor (xywh in input pixels, class scores) in eval *and* training mode: in
training mode Ultralytics returns a dict of raw head outputs, which the wrapper decodes with the head's
own ``_inference`` so that distillation sees the same layout as the teacher. Recovery goes through
:class:`UltralyticsDetectAdapter`: Ultralytics' own loss on the raw outputs plus that distillation.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path

from edgetune._paths import cache_dir, sha256_file
from edgetune.errors import CompressionError, ModelError
from edgetune.models._registry import LoadedModel, ModelSource, register_source
from edgetune.models.heads import END2END_LAYOUT, DetectHead
from edgetune.models.tasks import DetectAdapter

__all__ = ["UltralyticsSource", "build_from_yaml", "import_ultralytics", "is_end2end", "keep_output_scales",
           "loaded_model", "output_strides",
           "wrap_detection_model"]

_INSTALL = ('the ultralytics source needs the `yolo` extra: pip install "edgetune[yolo]" torch==<your torch '
            "version> (pinning torch keeps pip from replacing a CPU build by a CUDA one)")


def import_ultralytics():
    """Import ``ultralytics`` offline with its settings in edgetune's cache; a ModelError if it is missing."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    cfg = cache_dir() / "ultralytics"
    cfg.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(cfg))
    import numpy as np
    from PIL import Image

    # Ultralytics patches process-wide state on import; undo what would change edgetune's behaviour: its
    # Image.open retries unreadable files by installing a HEIF plugin (a pip install at run time), and
    # numpy's print options.
    image_open, np_print = Image.open, np.get_printoptions()
    try:
        import ultralytics
        from ultralytics.nn import tasks  # noqa: F401  (the model classes checkpoints unpickle to)
    except ImportError as exc:
        raise ModelError(f"{_INSTALL} ({exc}).") from exc
    finally:
        np.set_printoptions(**np_print)
        Image.open = image_open
    if getattr(Image.open, "__module__", "").startswith("ultralytics"):  # imported before us: their saved original
        from ultralytics.utils import patches

        Image.open = getattr(patches, "_image_open", Image.open)
    return ultralytics


def is_end2end(model) -> bool:
    """Whether an Ultralytics ``DetectionModel`` has the one-to-one (NMS-free) head of YOLOv10 / YOLO26."""
    return getattr(model.model[-1], "one2one_cv2", None) is not None


def _check_head(model, what: str, num_classes: int) -> None:
    head = model.model[-1]
    name = type(head).__name__
    if name != "Detect":
        raise ModelError(f"{what} has a {name} head; the ultralytics source supports detection (Detect) models "
                         "only (segmentation, pose, OBB and classification heads are not supported yet).")
    if is_end2end(model) and int(getattr(head, "reg_max", 16)) != 1:
        raise ModelError(f"{what} has an end-to-end head with distribution-focal boxes (reg_max "
                         f"{int(head.reg_max)}); edgetune supports the end-to-end heads of YOLO26 (reg_max 1).")
    if int(head.nc) != num_classes:
        raise ModelError(f"{what} predicts {int(head.nc)} classes, but the dataset has {num_classes}. Use the "
                         "dataset the model was trained on, or build the architecture from its yaml (`name:`).")


@register_source("ultralytics")
class UltralyticsSource(ModelSource):
    """See the module docstring: ``weights`` (a .pt checkpoint) and/or ``name`` / ``path`` (a model yaml)."""

    requires = ()

    def load(self, spec, *, class_names, category_ids) -> LoadedModel:
        cfg = spec.name or spec.path
        if not cfg and not spec.weights:
            raise ModelError("`model` with source: ultralytics needs `weights` (a .pt checkpoint from Ultralytics "
                             "training) or `name` (a model yaml such as yolo11n.yaml) / `path` (your model yaml).")
        ultralytics = import_ultralytics()
        import torch

        nc = len(class_names)
        weights = Path(spec.weights) if spec.weights else None
        if weights is not None and not weights.is_file():
            raise ModelError(f"`model.weights` '{weights}' does not exist (edgetune never downloads weights). "
                             "Fix the path.")
        if cfg:
            if spec.path and not Path(spec.path).is_file():
                raise ModelError(f"`model.path` '{spec.path}' does not exist. Fix the path, or use `name:` for a "
                                 "yaml shipped with Ultralytics (yolo11n.yaml, yolov8n.yaml, ...).")
            model = build_from_yaml(str(cfg), nc)
            what = f"'{cfg}'"
            if weights is not None:
                from edgetune.models.sources import load_state_dict

                load_state_dict(model, weights, what)
                digest = sha256_file(weights)
            else:
                # seeded initial weights: the same yaml text, class count and Ultralytics version give them
                text = Path(spec.path).read_bytes() if spec.path else str(cfg).encode()
                key = b"ultralytics-init:seed0:%s:%d:" % (ultralytics.__version__.encode(), nc) + text
                digest = hashlib.sha256(key).hexdigest()
        else:
            what = f"checkpoint '{weights}'"
            try:
                ckpt = torch.load(weights, map_location="cpu", weights_only=False)  # Ultralytics pickles the model
            except Exception as exc:
                raise ModelError(f"{what} cannot be read ({type(exc).__name__}: {exc}); it should be a .pt file "
                                 "written by Ultralytics training (runs/detect/train/weights/best.pt).") from exc
            model = (ckpt.get("ema") or ckpt.get("model")) if isinstance(ckpt, dict) else None
            if model is None or not hasattr(model, "model"):
                raise ModelError(f"{what} holds no Ultralytics model (no 'ema' or 'model' entry). Use a .pt file "
                                 "written by Ultralytics training, or `name:` + a state-dict `weights`.")
            model = model.float()
            digest = sha256_file(weights)
        return loaded_model(model, Path(str(cfg or weights)).stem, what=what, size=int(spec.input_size or 640),
                            digest=digest, category_ids=category_ids)


def build_from_yaml(cfg: str, nc: int, *, seed: int = 0):
    """An Ultralytics ``DetectionModel`` built from a model yaml for ``nc`` classes. Its random initial weights
    come from ``seed`` (the global torch RNG is left as it was), so that the same yaml always gives the same
    weights: a cache key made of the yaml and the class count then stands for them."""
    import torch

    import_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            return DetectionModel(cfg, nc=nc, verbose=False)
        except Exception as exc:  # a bad yaml fails in many ways
            raise ModelError(f"Ultralytics cannot build '{cfg}' ({type(exc).__name__}: {exc}). Use a model "
                             "yaml such as yolo11n.yaml or yolov8s.yaml.") from exc


def loaded_model(model, name: str, *, what: str, size: int, digest: str, category_ids) -> LoadedModel:
    """An Ultralytics ``DetectionModel`` as edgetune's :class:`LoadedModel`: checked, wrapped (decoded outputs),
    chunked convs split (prunable), with Ultralytics' own loss for recovery."""
    nc = len(category_ids)
    _check_head(model, what, nc)
    end2end = is_end2end(model)
    if end2end:  # deployed NMS-free: only the one-to-one branch runs (the one-to-many one guides training)
        head = model.model[-1]
        head.cv2 = head.cv3 = None
    for p in model.parameters():
        p.requires_grad_(True)  # checkpoints are saved frozen
    module = wrap_detection_model(model).eval()
    from edgetune.models._rewrite import split_chunked_outputs

    split_chunked_outputs(module, size)  # C2f / C3k2 cv1: separate convs, so that they can be pruned
    spec = (DetectHead(num_classes=nc, category_ids=tuple(category_ids), layout=END2END_LAYOUT) if end2end
            else DetectHead(num_classes=nc, category_ids=tuple(category_ids)))
    return LoadedModel(name, module, spec, size, digest, adapter=UltralyticsDetectAdapter(_loss_gains(model), end2end))


def _loss_gains(model) -> dict[str, float]:
    """The box / cls / dfl gains of Ultralytics' loss: its defaults, overridden by the checkpoint's training
    arguments when it recorded them."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    args = getattr(model, "args", None)
    args = vars(args) if hasattr(args, "__dict__") else dict(args or {})
    return {k: float(args.get(k, DEFAULT_CFG_DICT[k])) for k in ("box", "cls", "dfl")}


class UltralyticsDetectAdapter(DetectAdapter):
    """Recovery of an Ultralytics detector with the loss it was trained with (``v8DetectionLoss``: task-aligned
    assignment, BCE classes, CIoU + DFL boxes, the checkpoint's gains) on the raw training-mode head outputs,
    plus distillation of the fp32 teacher's decoded outputs (:class:`~edgetune.models.tasks.DetectAdapter`).

    ``forward`` returns ``(decoded (N, 4 + C, A), raw head dict or None)``: one student pass feeds both
    losses. The loss is Ultralytics' per-batch sum divided by the batch size (per image, as its trainer
    logs it)."""

    has_loss = True

    def __init__(self, gains: dict[str, float], end2end: bool = False):
        self.gains = dict(gains)
        self.end2end = bool(end2end)
        # training an end-to-end model from scratch (``both_branches``): Ultralytics' own forward (the one-to-many
        # branch on the backbone, the one-to-one branch on detached features) and E2ELoss's weighting, the
        # one-to-many share ``o2m`` decayed by the trainer from 0.8 to 0.1
        self.both_branches = False
        self.o2m = 0.1
        self._trained = None  # weakref to the DetectionModel of the last training-mode forward
        self._crit = (None, None)  # (weakref to its Detect head, its v8DetectionLoss)

    def __getstate__(self):  # picklable (weakrefs are not): the caches are rebuilt on the next forward
        return {"gains": self.gains, "end2end": self.end2end}

    def __setstate__(self, state):
        self.__init__(state["gains"], state.get("end2end", False))

    def forward(self, module, x):
        det = module.model
        if self.end2end and self.both_branches and module.training:
            out = det(x)  # {"one2many": ..., "one2one": ...}
            self._trained = weakref.ref(det)
            return det.model[-1]._inference(out["one2one"]), out
        if self.end2end:  # the one-to-one branch, decoded densely for distillation (see YoloDetector)
            raw = module.raw(x)
            if module.training:
                self._trained = weakref.ref(det)
            return det.model[-1]._inference(raw), (raw if module.training else None)
        out = det(x)
        if isinstance(out, dict):  # training mode: raw "boxes" / "scores" / "feats"
            self._trained = weakref.ref(det)
            return det.model[-1]._inference(out), out
        return (out[0] if isinstance(out, (tuple, list)) else out), None

    def _criteria(self) -> dict:
        """The v8DetectionLoss(es) of the model being trained (rebuilt when the head changes: they read strides,
        classes and reg_max from it): ``o2m`` (one-to-many assignment, top 10) for one-to-many heads and for
        the one-to-many branch of a model trained from scratch, ``o2o`` (one-to-one: top 7, then the best 1,
        as Ultralytics' E2ELoss) for end-to-end heads."""
        import types

        from ultralytics.utils.loss import v8DetectionLoss

        det = self._trained() if self._trained is not None else None
        if det is None:
            raise CompressionError("the Ultralytics loss needs a training-mode forward pass of the model first.")
        head, crit = self._crit
        if head is None or head() is not det.model[-1]:
            view = types.SimpleNamespace(args=types.SimpleNamespace(**self.gains), model=det.model,
                                         parameters=det.parameters, class_weights=None)
            crit = {"o2m": v8DetectionLoss(view)}
            if self.end2end:
                crit["o2o"] = v8DetectionLoss(view, tal_topk=7, tal_topk2=1)
            self._crit = (weakref.ref(det.model[-1]), crit)
        return crit

    def loss(self, out, batch):
        import torch
        from ultralytics.utils.ops import xyxy2xywh

        raw = out[1]
        if raw is None:
            raise CompressionError("the Ultralytics loss needs the training-mode outputs (the model in train() mode).")
        x, gt_boxes, gt_labels, gt_mask = batch
        b, _, h, w = x.shape
        idx = torch.nonzero(gt_mask, as_tuple=False)
        xyxy = gt_boxes[gt_mask]
        scale = xyxy.new_tensor([w, h, w, h])
        targets = {"batch_idx": idx[:, 0].to(xyxy.dtype), "cls": gt_labels[gt_mask].to(xyxy.dtype).view(-1, 1),
                   "bboxes": xyxy2xywh(xyxy) / scale}
        crit = self._criteria()
        if "one2many" in raw:  # both branches of an end-to-end model (training from scratch): E2ELoss's weighting
            total = (self.o2m * crit["o2m"].loss(raw["one2many"], targets)[0]
                     + (1 - self.o2m) * crit["o2o"].loss(raw["one2one"], targets)[0])
        else:
            total, _ = crit["o2o" if self.end2end else "o2m"].loss(raw, targets)
        return total.sum() / b

    def distill(self, s_out, t_out, batch):
        return super().distill(s_out[0], t_out[0], batch)


def wrap_detection_model(model):
    """Wrap an Ultralytics ``DetectionModel`` in :class:`~edgetune.models._yolo_module.YoloDetector`."""
    from edgetune.models._yolo_module import YoloDetector

    return YoloDetector(model)


def output_strides(module) -> tuple[int, ...] | None:
    """The strides of a detector's output scales when it is a wrapped Ultralytics one (else None)."""
    from edgetune.models._yolo_module import output_strides as strides

    return strides(module)


def keep_output_scales(module, strides) -> list[str]:
    """Keep only the output scales of ``strides`` (see ``_yolo_module.keep_output_scales``)."""
    from edgetune.models._yolo_module import keep_output_scales as keep

    return keep(module, strides)
