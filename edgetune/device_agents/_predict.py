"""One prediction with a deployed model, in the measurement child process (``task: predict`` jobs).

The uploaded image is decoded here, not in the agent (a malformed or oversized image only kills this
process), letterboxed to the model's input, run on the device's runtime, and decoded with the same numpy
head as the sweep's accuracy (decode + NMS, boxes mapped back to the image's pixels).
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["run_predict", "MAX_IMAGE_PIXELS", "IMAGE_FORMATS"]

MAX_IMAGE_PIXELS = 64_000_000  # ~8000 x 8000
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "WEBP")


def _read_image(path: Path):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from edgetune.errors import MeasurementFailed

    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise MeasurementFailed(f"the image is {img.width}x{img.height} pixels; at most {MAX_IMAGE_PIXELS} "
                                        "pixels are accepted. Resize it first.")
            return np.ascontiguousarray(np.asarray(img.convert("RGB"), np.uint8))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError) as exc:
        why = str(exc).replace(f"'{path}'", "").replace(str(path), "").strip() or type(exc).__name__
        raise MeasurementFailed(f"the uploaded file is not a readable {'/'.join(IMAGE_FORMATS)} image ({why}).") from exc


def run_predict(job: dict) -> dict:
    """Detections (or top classes) of the model at ``job['artifact_path']`` on ``job['image_path']``."""
    import os

    cpus = job.get("cpus") or []
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    import numpy as np

    from edgetune.data import letterbox, to_input, unletterbox
    from edgetune.device_agents.runtimes import get_runtime
    from edgetune.errors import MeasurementFailed
    from edgetune.models.heads import DetectHead, decode_detections, head_from_dict, topk

    image = _read_image(Path(job["image_path"]))
    head = head_from_dict(job["head"])
    runtime = get_runtime(job["runtime"])
    session = runtime.load(Path(job["artifact_path"]), threads=int(job["threads"]), providers=None,
                           cache_dir=Path(job["cache_dir"]), batch=1)
    size = int(session.shape_for(1)[-1])
    boxed, meta = letterbox(image, size)
    x = np.ascontiguousarray(to_input(boxed[None]).astype(session.input_dtype, copy=False))
    t0 = time.perf_counter()
    try:
        out = np.asarray(session.run(x))
    except Exception as exc:
        raise MeasurementFailed(f"{runtime.name} failed to run the deployed model: {exc}") from exc
    ms = (time.perf_counter() - t0) * 1e3
    session.close()
    labels = {int(k): str(v) for k, v in (job.get("labels") or {}).items()}
    result = {"image_width": int(image.shape[1]), "image_height": int(image.shape[0]), "input_size": size,
              "inference_ms": ms, "runtime": f"{runtime.name} {runtime.info().version or ''}".strip(),
              "detections": [], "top_classes": None}
    if isinstance(head, DetectHead):
        boxes, scores, classes = decode_detections(out[0], head)
        keep = scores >= float(job["score_threshold"])
        boxes, scores, classes = unletterbox(boxes[keep], meta), scores[keep], classes[keep]
        for b, s, c in zip(boxes.tolist(), scores.tolist(), classes.tolist(), strict=True):
            cat = int(head.category_ids[c]) if c < len(head.category_ids) else int(c)
            result["detections"].append({"box_xyxy": [round(v, 2) for v in b], "score": round(float(s), 5),
                                         "class_index": int(c), "category_id": cat, "label": labels.get(cat)})
    else:
        logits = np.asarray(out, np.float32).reshape(1, -1)
        cats = [int(head.category_ids[i]) if i < len(head.category_ids) else int(i) for i in range(logits.shape[1])]
        result["top_classes"] = [{"class_index": int(i), "score": float(logits[0, i]), "category_id": cats[i],
                                  "label": labels.get(cats[i])} for i in topk(logits, 5)[0]]
    return result
