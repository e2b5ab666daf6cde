"""The builtin ``shapes`` detection dataset: procedural, deterministic from a seed, written as real COCO.

Six classes of filled or outlined, rotated, aspect-jittered shapes from ~10 px to ~120 px on 256x256
images with textured backgrounds (gradients, low- and high-frequency noise, stripes), line and dot
distractors, partial overlaps (no object hides more than 35% of another) and slight blur. Every image is drawn from its own RNG seeded by
(seed, split, index), so any split of any size is reproducible, and it is written once to the cache
dir as JPEG files + ``instances_<split>.json`` so the COCO loader is what reads it.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

from edgetune._logging import get_logger
from edgetune._paths import atomic_write_bytes, cache_dir
from edgetune.data._base import Dataset
from edgetune.data.coco import load_coco

__all__ = ["CLASSES", "IMAGE_SIZE", "generate_split", "shapes_split"]

log = get_logger(__name__)

VERSION = 2
IMAGE_SIZE = 256
CLASSES = ("circle", "square", "triangle", "star", "hexagon", "cross")
SPLIT_SALT = {"train": 11, "val": 22, "calib": 33}
MIN_SIZE, MAX_SIZE = 12.0, 120.0
MAX_COVER = 0.35  # an object may hide at most this fraction of another's box (none is painted over)


def _unit_polygon(cls: str) -> np.ndarray:
    """Vertices of a class's outline in unit coordinates (radius ~1)."""
    if cls == "circle":
        t = np.linspace(0, 2 * math.pi, 40, endpoint=False)
        return np.stack([np.cos(t), np.sin(t)], 1)
    if cls == "square":
        return np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * 0.8
    if cls == "triangle":
        t = np.array([90, 210, 330]) * math.pi / 180
        return np.stack([np.cos(t), np.sin(t)], 1)
    if cls == "star":
        t = np.arange(10) * math.pi / 5 + math.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, 0.42)
        return np.stack([r * np.cos(t), r * np.sin(t)], 1)
    if cls == "hexagon":
        t = np.arange(6) * math.pi / 3
        return np.stack([np.cos(t), np.sin(t)], 1)
    if cls == "cross":
        a = 0.3
        return np.array(
            [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]],
            float,
        )
    raise KeyError(cls)


_POLYS = {c: _unit_polygon(c) for c in CLASSES}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    from PIL import Image

    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = (np.cos(ang) * xx + np.sin(ang) * yy)
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    # low-frequency colour blobs
    g = int(rng.integers(3, 9))
    low = rng.normal(0, rng.uniform(10, 45), (g, g, 3)).astype(np.float32)
    low = np.stack([np.asarray(Image.fromarray(low[..., k]).resize((size, size), Image.BICUBIC)) for k in range(3)], -1)
    img = img + low
    kind = rng.integers(0, 3)
    if kind == 1:  # stripes
        period = rng.uniform(6, 30)
        sang = rng.uniform(0, math.pi)
        s = np.sin((np.cos(sang) * xx + np.sin(sang) * yy) * size * 2 * math.pi / period)
        img = img + (s * rng.uniform(8, 30))[..., None]
    elif kind == 2:  # checker
        p = int(rng.integers(8, 32))
        ch = ((np.arange(size)[:, None] // p + np.arange(size)[None, :] // p) % 2) * 2 - 1
        img = img + (ch * rng.uniform(6, 22))[..., None]
    img = img + rng.normal(0, rng.uniform(2, 14), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _cover(a: np.ndarray, b: np.ndarray) -> float:
    """Largest fraction of either box that the other one overlaps."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return inter / max(smaller, 1e-9)


def _contrasting_colour(rng: np.random.Generator, ref: np.ndarray) -> tuple[int, int, int]:
    for _ in range(20):
        c = rng.integers(0, 256, 3)
        if np.abs(c.astype(float) - ref).sum() >= 150:
            return tuple(int(v) for v in c)
    return tuple(int(v) for v in (255 - ref).clip(0, 255))


def draw_image(rng: np.random.Generator, size: int = IMAGE_SIZE) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """One image and its objects as (class index, [x, y, w, h])."""
    from PIL import Image, ImageDraw, ImageFilter

    bg = _background(rng, size)
    im = Image.fromarray(bg)
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 14))):  # line distractors
        p = rng.uniform(0, size, 4)
        draw.line([tuple(p[:2]), tuple(p[2:])], fill=tuple(int(v) for v in rng.integers(0, 256, 3)),
                  width=int(rng.integers(1, 4)))
    for _ in range(int(rng.integers(4, 30))):  # dot distractors
        x, y, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(1, 3.5)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))

    objects: list[tuple[int, list[float]]] = []
    boxes: list[np.ndarray] = []
    for _ in range(int(rng.integers(1, 9))):
        cls = int(rng.integers(0, len(CLASSES)))
        for _attempt in range(15):
            s = math.exp(rng.uniform(math.log(MIN_SIZE), math.log(MAX_SIZE)))
            aspect = math.exp(rng.uniform(-0.22, 0.22))
            rot = rng.uniform(0, 2 * math.pi)
            poly = _POLYS[CLASSES[cls]] * np.array([aspect, 1 / aspect]) * (s / 2)
            R = np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]])
            poly = poly @ R.T
            lo, hi = poly.min(0), poly.max(0)
            cx = rng.uniform(-lo[0], size - hi[0]) if hi[0] - lo[0] < size else size / 2
            cy = rng.uniform(-lo[1], size - hi[1]) if hi[1] - lo[1] < size else size / 2
            pts = poly + np.array([cx, cy])
            box = np.array([*pts.min(0), *pts.max(0)]).clip(0, size)
            if box[2] - box[0] < 4 or box[3] - box[1] < 4:
                continue
            if any(_cover(box, b) > MAX_COVER for b in boxes):
                continue
            break
        else:
            continue
        x0, y0, x1, y1 = (int(v) for v in box.round())
        ref = np.asarray(im)[max(y0, 0) : max(y1, y0 + 1), max(x0, 0) : max(x1, x0 + 1)].reshape(-1, 3).mean(0)
        colour = _contrasting_colour(rng, ref)
        flat = [tuple(p) for p in pts]
        if s >= 24 and rng.uniform() < 0.3:  # outlined (tiny shapes are always filled)
            w = max(2, int(round(s / rng.uniform(10, 20))))
            draw.line(flat + [flat[0]], fill=colour, width=w, joint="curve")
        else:
            draw.polygon(flat, fill=colour)
        boxes.append(box)
        objects.append((cls, [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]))
    if rng.uniform() < 0.3:
        im = im.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.9))))
    return np.asarray(im), objects


def generate_split(root: Path, split: str, n: int, *, seed: int = 0) -> Path:
    """Write ``n`` images of ``split`` under ``root`` in COCO format; returns the annotation file."""
    from PIL import Image

    img_dir = root / split
    img_dir.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    ann_id = 1
    for i in range(n):
        rng = np.random.default_rng([seed, SPLIT_SALT[split], i, VERSION])
        pixels, objects = draw_image(rng)
        fname = f"{i:06d}.jpg"
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=92)
        atomic_write_bytes(img_dir / fname, buf.getvalue())  # a reader never sees a half-written image
        image_id = i + 1
        images.append({"id": image_id, "file_name": fname, "width": IMAGE_SIZE, "height": IMAGE_SIZE})
        for cls, bbox in objects:
            annotations.append({"id": ann_id, "image_id": image_id, "category_id": cls + 1, "bbox": bbox,
                                "area": bbox[2] * bbox[3], "iscrowd": 0})
            ann_id += 1
    gt = {
        "info": {"description": f"edgetune builtin shapes v{VERSION}, seed {seed}, split {split}"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)],
    }
    ann_file = root / "annotations" / f"instances_{split}.json"
    atomic_write_bytes(ann_file, json.dumps(gt).encode())  # written last: marks the split complete
    return ann_file


def shapes_split(split: str, n: int, *, seed: int = 0, root: Path | None = None) -> Dataset:
    """The ``split`` of the shapes dataset with ``n`` images, generated into the cache on first use."""
    if split not in SPLIT_SALT:
        raise KeyError(f"unknown shapes split {split!r}; expected one of {sorted(SPLIT_SALT)}")
    root = root or cache_dir() / "datasets" / f"shapes-v{VERSION}-seed{seed}-{split}{n}"
    ann_file = root / "annotations" / f"instances_{split}.json"
    if not ann_file.is_file():
        log.info("generating builtin shapes %s split (%d images) in %s", split, n, root)
        generate_split(root, split, n, seed=seed)
    return load_coco(ann_file, root / split, name=f"shapes-{split}")
