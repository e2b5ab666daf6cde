"""letterbox -> unletterbox maps boxes back to the original pixels, on non-square images."""

from __future__ import annotations

import numpy as np
import pytest

from edgetune.data import letterbox, to_input, unletterbox
from edgetune.data._preprocess import PAD_VALUE

SIZES = [(333, 97), (97, 333), (640, 480), (50, 200), (256, 256), (300, 171)]


def _half_crossings(profile: np.ndarray) -> tuple[float, float]:
    """Sub-pixel positions (pixel edges at integers) where a bright bar on black crosses half its height."""
    half = profile.max() / 2
    i = int(np.argmax(profile > half))
    left = i - 0.5 + (half - profile[i - 1]) / (profile[i] - profile[i - 1])
    j = len(profile) - 1 - int(np.argmax(profile[::-1] > half))
    right = j + 0.5 + (profile[j] - half) / (profile[j] - profile[j + 1])
    return left, right


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_box_round_trip(w, h):
    size = 256
    _, meta = letterbox(np.zeros((h, w, 3), np.uint8), size)
    rng = np.random.default_rng(w * h)
    xy0 = rng.uniform(0, 0.6, (50, 2)) * (w, h)
    boxes = np.concatenate([xy0, xy0 + rng.uniform(0.05, 0.4, (50, 2)) * (w, h)], 1)
    inp = boxes.copy()
    inp[:, [0, 2]] = inp[:, [0, 2]] * meta.scale_x + meta.pad_x
    inp[:, [1, 3]] = inp[:, [1, 3]] * meta.scale_y + meta.pad_y
    assert inp.min() >= 0 and inp.max() <= size
    np.testing.assert_allclose(unletterbox(inp, meta), boxes, atol=0.5)


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_drawn_rectangle_maps_back(w, h):
    """The pixels agree with the meta: a rectangle found in the letterboxed image maps back onto itself."""
    size = 256
    img = np.zeros((h, w, 3), np.uint8)
    x0, y0, x1, y1 = round(w * 0.3), round(h * 0.25), round(w * 0.75), round(h * 0.8)
    img[y0:y1, x0:x1] = 255
    out, meta = letterbox(img, size)
    assert out.shape == (3, size, size) and out.dtype == np.uint8
    ch = out[0].astype(np.float64)
    cx, cy = (x0 + x1) / 2 * meta.scale + meta.pad_x, (y0 + y1) / 2 * meta.scale + meta.pad_y
    left, right = _half_crossings(ch[int(cy)])
    top, bottom = _half_crossings(ch[:, int(cx)])
    back = unletterbox(np.array([[left, top, right, bottom]]), meta)[0]
    err = np.abs(back - [x0, y0, x1, y1])
    assert err.max() <= 0.5  # original pixels
    assert err.max() * meta.scale <= 0.1  # input pixels: only interpolation and uint8 rounding remain
    # padding: exactly the area outside the resized image holds PAD_VALUE
    if meta.pad_y >= 1:
        assert (out[:, : int(meta.pad_y)] == PAD_VALUE).all()
    if meta.pad_x >= 1:
        assert (out[:, :, : int(meta.pad_x)] == PAD_VALUE).all()


def test_unletterbox_clips_to_the_image():
    _, meta = letterbox(np.zeros((100, 200, 3), np.uint8), 128)
    back = unletterbox(np.array([[-10.0, 0.0, 300.0, 128.0]]), meta)
    assert back.tolist() == [[0.0, 0.0, 200.0, 100.0]]


def test_to_input_scales_to_unit_range():
    x = to_input(np.array([[[[0, 255, 51]]]], np.uint8))
    assert x.dtype == np.float32 and x.ravel().tolist() == pytest.approx([0.0, 1.0, 0.2])
