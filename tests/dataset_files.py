"""Helpers that write datasets in the formats users bring (imported by test modules and conftests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

__all__ = ["export_yolo", "write_shape_folders", "write_yaml"]


def export_yolo(ds, root: Path, split: str, indices) -> list[Path]:
    """Copy images ``indices`` of a detection Dataset to ``root/images/<split>`` with YOLO labels beside."""
    cls_of = {c: k for k, c in enumerate(ds.category_ids)}
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    files = []
    for i in indices:
        rec = ds.records[i]
        img = root / "images" / split / Path(rec.file).name
        shutil.copyfile(rec.file, img)
        lines = []
        for a in ds.annotations[rec.id]:
            x, y, w, h = a["bbox"]
            lines.append(f"{cls_of[a['category_id']]} {(x + w / 2) / rec.width:.6f} {(y + h / 2) / rec.height:.6f} "
                         f"{w / rec.width:.6f} {h / rec.height:.6f}")
        (root / "labels" / split / f"{img.stem}.txt").write_text("\n".join(lines) + "\n")
        files.append(img)
    return files


def write_yaml(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def write_shape_folders(root: Path, per_class: dict[str, int], *, size: int = 40, seed: int = 0) -> Path:
    """An ImageFolder of the six builtin shape classes: one rotated, scaled, filled or outlined shape per
    ``size`` x ``size`` image on a noisy gradient, ``per_class[split]`` images per class and split (a
    classification task hard enough that cutting a quarter of a small CNN's channels costs accuracy)."""
    import math

    import numpy as np
    from PIL import Image, ImageDraw

    from edgetune.data.shapes import CLASSES, _unit_polygon

    for s, (split, n) in enumerate(per_class.items()):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rng = np.random.default_rng((seed, s, c, i))
                g = np.linspace(0, 1, size)[None, :, None] * rng.uniform(-80, 80, 3)
                base = rng.uniform(40, 215, 3)
                bg = np.clip(base + g + rng.normal(0, 12, (size, size, 3)), 0, 255)
                img = Image.fromarray(bg.astype(np.uint8))
                r = rng.uniform(0.25, 0.45) * size
                cx, cy = rng.uniform(r, size - r, 2)
                a = rng.uniform(-0.35, 0.35)  # upright +- 20 degrees
                rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
                pts = (_unit_polygon(name) * [1.0, rng.uniform(0.75, 1.0)]) @ rot.T * r + [cx, cy]
                fill = tuple(int(v) for v in (255 - base + rng.uniform(-40, 40, 3)).clip(0, 255))  # contrasting
                draw = ImageDraw.Draw(img)
                poly = [tuple(p) for p in pts]
                if rng.uniform() < 0.5:
                    draw.polygon(poly, fill=fill)
                else:
                    draw.polygon(poly, outline=fill, width=max(1, int(r / 5)))
                img.save(root / split / name / f"{i:03d}.png")
    return root
