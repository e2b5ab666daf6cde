"""Letterbox preprocessing and its inverse box transform (numpy + PIL; shared with the agent)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LetterboxMeta", "letterbox", "to_input", "unletterbox", "PAD_VALUE"]

PAD_VALUE = 114


@dataclass(frozen=True)
class LetterboxMeta:
    """How an image was fitted into the square input: ``input_x = orig_x * scale_x + pad_x`` (same for y).

    ``scale`` is the aspect-preserving factor; the resized image has whole pixels, so its exact per-axis
    factors ``scale_x`` / ``scale_y`` differ from it by up to half an input pixel over the image.
    """

    scale: float
    pad_x: float
    pad_y: float
    orig_w: int
    orig_h: int

    @property
    def scale_x(self) -> float:
        return max(1, round(self.orig_w * self.scale)) / self.orig_w

    @property
    def scale_y(self) -> float:
        return max(1, round(self.orig_h * self.scale)) / self.orig_h


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, LetterboxMeta]:
    """Resize HxWx3 uint8 keeping aspect ratio, pad to ``size`` x ``size``; returns (3, S, S) uint8."""
    h, w = image.shape[:2]
    scale = min(size / w, size / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    if (nw, nh) != (w, h):
        from PIL import Image

        image = np.asarray(Image.fromarray(image).resize((nw, nh), Image.BILINEAR))
    canvas = np.full((size, size, 3), PAD_VALUE, np.uint8)
    px, py = (size - nw) // 2, (size - nh) // 2
    canvas[py : py + nh, px : px + nw] = image
    return np.ascontiguousarray(canvas.transpose(2, 0, 1)), LetterboxMeta(scale, px, py, w, h)


def to_input(batch_u8: np.ndarray) -> np.ndarray:
    """uint8 (N, 3, S, S) -> float32 in [0, 1], the model's input."""
    return batch_u8.astype(np.float32) * np.float32(1.0 / 255.0)


def unletterbox(boxes_xyxy: np.ndarray, meta: LetterboxMeta) -> np.ndarray:
    """Map boxes from input pixels back to original-image pixels, clipped to the image."""
    out = boxes_xyxy.astype(np.float32).copy()
    out[:, [0, 2]] = (out[:, [0, 2]] - meta.pad_x) / meta.scale_x
    out[:, [1, 3]] = (out[:, [1, 3]] - meta.pad_y) / meta.scale_y
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, meta.orig_w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, meta.orig_h)
    return out
