"""Helpers that write datasets in the formats users bring (imported by test modules and conftests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

__all__ = ["export_yolo", "write_yaml"]


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
