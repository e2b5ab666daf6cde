"""The model sources shipped with edgetune: ``builtin``, ``python``, ``onnx``."""

from __future__ import annotations

import hashlib
import importlib
from pathlib import Path

from edgetune._paths import sha256_file
from edgetune.errors import ModelError
from edgetune.models._registry import LoadedModel, ModelSource, register_source
from edgetune.models.heads import ClassifyHead, DetectHead

__all__ = ["BUILTIN_MODELS", "builtin_weights_path", "load_state_dict", "sha256_file"]

WEIGHTS_DIR = Path(__file__).parent / "weights"

# name -> (architecture, input size, classes, sha256 of the committed weights). ``family: ultralytics``: an
# Ultralytics architecture (its yaml) whose weights are a state dict (fp16) trained by `edgetune train-builtin`;
# it needs the yolo extra.
BUILTIN_MODELS: dict[str, dict] = {
    "det-s": {"arch": "det-s", "input_size": 256, "dataset": "shapes", "num_classes": 6,
              "sha256": "4a7d2ad9d1311387bf36d0a20d1f2103a1223c4c1dc9bef31245d31048b42f6f"},
    "yolo11n": {"arch": "yolo11n.yaml", "family": "ultralytics", "input_size": 256, "dataset": "shapes",
                "num_classes": 6, "sha256": "58e4bf4e70c6b8104919a8b734f34373c7f040d9b24fe0a619063d2f5052ec16"},
    # the NMS-free YOLO26n (`edgetune train-builtin --name yolo26n`; scored with its one-to-one head, no NMS)
    "yolo26n": {"arch": "yolo26n.yaml", "family": "ultralytics", "input_size": 256, "dataset": "shapes",
                "num_classes": 6, "sha256": "244f30d21b4da4cd8d8ef397a2e2fde57f33f3daf0c0e5ebb6e5466811c0aa5d"},
}


def builtin_weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.pt"


def _head(task: str, class_names, category_ids) -> DetectHead | ClassifyHead:
    cls = DetectHead if task == "detect" else ClassifyHead
    return cls(num_classes=len(class_names), category_ids=tuple(category_ids))


def load_state_dict(module, weights: Path, what: str) -> None:
    import torch

    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"weights file '{weights}' cannot be read as a torch state dict ({exc}).") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:4]
        raise ModelError(
            f"weights '{weights}' do not fit {what}: {' '.join(first)} Check that the factory builds the "
            "architecture the weights were trained with (same sizes and number of classes)."
        ) from exc


@register_source("builtin")
class BuiltinSource(ModelSource):
    requires = ("name",)

    def load(self, spec, *, class_names, category_ids) -> LoadedModel:
        from edgetune.models.builtin.det import build_detector
        from edgetune.models.builtin.task import BuiltinDetectAdapter

        if spec.name not in BUILTIN_MODELS:
            raise ModelError(f"unknown builtin model {spec.name!r}; builtin models: {', '.join(BUILTIN_MODELS)}.")
        info = BUILTIN_MODELS[spec.name]
        if len(class_names) != info["num_classes"]:
            raise ModelError(
                f"builtin model '{spec.name}' was trained on {info['num_classes']} classes (builtin "
                f"'{info['dataset']}'), but the dataset has {len(class_names)}. Use data: {{source: builtin, "
                f"name: {info['dataset']}}} or bring your own model (source: python)."
            )
        weights = builtin_weights_path(spec.name)
        if info["sha256"] is None:
            raise ModelError(f"builtin model '{spec.name}' is not shipped yet: train it with `edgetune train-builtin "
                             f"--name {spec.name}` and load the result as source: ultralytics, name: {info['arch']}, "
                             f"weights: {spec.name}.pt.")
        if not weights.is_file():
            raise ModelError(f"weights of builtin model '{spec.name}' are missing at '{weights}'. Reinstall "
                             f"edgetune or retrain them: edgetune train-builtin --name {spec.name}")
        digest = sha256_file(weights)
        if digest != info["sha256"]:
            raise ModelError(
                f"weights of builtin model '{spec.name}' at '{weights}' have sha256 {digest[:16]}..., expected "
                f"{info['sha256'][:16]}...: the file is corrupt or was replaced. Restore it from git."
            )
        if info.get("family") == "ultralytics":
            from edgetune.models.ultralytics_yolo import build_from_yaml, loaded_model

            model = build_from_yaml(info["arch"], info["num_classes"])
            load_state_dict(model, weights, f"builtin '{spec.name}'")
            return loaded_model(model.float(), spec.name, what=f"builtin '{spec.name}'",
                                size=spec.input_size or info["input_size"], digest=digest,
                                category_ids=category_ids)
        module = build_detector(info["arch"], num_classes=info["num_classes"], input_size=info["input_size"])
        load_state_dict(module, weights, f"builtin '{spec.name}'")
        return LoadedModel(spec.name, module.eval(), _head("detect", class_names, category_ids),
                           spec.input_size or info["input_size"], digest, adapter=BuiltinDetectAdapter())


@register_source("python")
class PythonSource(ModelSource):
    """``factory: pkg.module:fn`` returns an ``nn.Module``; ``weights`` is a state-dict file."""

    requires = ("factory", "input_size", "task")

    def load(self, spec, *, class_names, category_ids) -> LoadedModel:
        mod_name, _, fn_name = spec.factory.partition(":")
        if not mod_name or not fn_name:
            raise ModelError(f"`model.factory` {spec.factory!r} must look like 'package.module:function'.")
        try:
            mod = importlib.import_module(mod_name)
        except ImportError as exc:
            raise ModelError(
                f"`model.factory` {spec.factory!r}: module '{mod_name}' does not import ({exc}). Make it "
                "importable (pip install -e your package, or set PYTHONPATH)."
            ) from exc
        fn = getattr(mod, fn_name, None)
        if not callable(fn):
            raise ModelError(f"`model.factory` {spec.factory!r}: '{mod_name}' has no callable '{fn_name}'.")
        try:
            module = fn(**spec.kwargs)
        except Exception as exc:
            raise ModelError(f"`model.factory` {spec.factory!r} raised {type(exc).__name__}: {exc}") from exc
        digest = hashlib.sha256(spec.factory.encode()).hexdigest()
        if spec.weights:
            weights = Path(spec.weights)
            if not weights.is_file():
                raise ModelError(f"`model.weights` '{weights}' does not exist. Fix the path.")
            load_state_dict(module, weights, f"factory '{spec.factory}'")
            digest = sha256_file(weights)
        from edgetune.models._rewrite import split_chunked_outputs

        split_chunked_outputs(module.eval(), spec.input_size)  # chunked conv outputs -> separate convs (exact)
        return LoadedModel(spec.factory, module.eval(), _head(spec.task, class_names, category_ids),
                           spec.input_size, digest)


def _input_size(proto, path: Path, asked: int | None) -> int:
    """The square input size an ONNX graph takes: its static height and width (``asked``, the config's
    ``model.input_size``, must equal them: an ONNX file cannot be resized), or ``asked`` where they are
    dynamic."""
    dims = list(proto.graph.input[0].type.tensor_type.shape.dim) if proto.graph.input else []
    hw = [d.dim_value or None for d in dims[2:]] if len(dims) == 4 else []
    fixed = sorted({d for d in hw if d})
    shape = "x".join(str(d.dim_value or d.dim_param or "?") for d in dims)
    if len(fixed) > 1:
        raise ModelError(f"'{path}' takes a {shape} input, which is not square; edgetune feeds square images "
                         "(size x size, letterboxed). Export the model with a square or a dynamic height and width.")
    if asked is not None and fixed and asked != fixed[0]:
        raise ModelError(
            f"`model.input_size` {asked} does not match '{path}', whose graph takes a fixed {shape} input "
            f"({fixed[0]} px; edgetune cannot resize an ONNX file). Remove `model.input_size` (it is read from "
            f"the graph) or set it to {fixed[0]}; only a graph exported with a dynamic height and width takes "
            "any size."
        )
    size = asked or (fixed[0] if fixed else None)
    if not size:
        raise ModelError(f"cannot read the input size of '{path}' (input {shape or 'without a shape'}); set "
                         "`model.input_size`.")
    return size


@register_source("onnx")
class OnnxSource(ModelSource):
    """An ONNX file: precision search only (it cannot be pruned)."""

    requires = ("path", "task")

    def load(self, spec, *, class_names, category_ids) -> LoadedModel:
        import onnx

        path = Path(spec.path)
        if not path.is_file():
            raise ModelError(f"`model.path` '{path}' does not exist. Fix the path.")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:
            raise ModelError(f"'{path}' is not a readable ONNX model ({exc}).") from exc
        size = _input_size(proto, path, spec.input_size)
        head = _head(spec.task, class_names, category_ids)
        if spec.task == "detect":  # an end-to-end (NMS-free) export outputs (N, K, 6): read it off the graph
            from dataclasses import replace

            from edgetune.models.heads import layout_of

            out = [d.dim_value or d.dim_param for d in proto.graph.output[0].type.tensor_type.shape.dim]
            head = replace(head, layout=layout_of(out, len(class_names)))
        return LoadedModel(path.stem, None, head, int(size), sha256_file(path), onnx_path=path)
