"""Mask blur and crop regions exactly as A1111 computes them (issue 8, items 1 and 3).

The blur's oracle is OpenCV called the way A1111's img2img `init` calls it: one
`cv2.GaussianBlur` per axis on the 8-bit mask, kernel length 2·int(2.5σ+0.5)+1, OpenCV's default
border (reflect-101). The crop regions' oracle is numpy: the box of the pixels that are non-zero
in any band.
"""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from modules import masking

SETTINGS = settings(max_examples=150, deadline=None)


def a1111_blur(arr: np.ndarray, blur_x: float, blur_y: float) -> np.ndarray:
    """The oracle: OpenCV's blur, horizontal then vertical, as A1111's img2img applies it."""
    if blur_x > 0:
        arr = cv2.GaussianBlur(arr, (2 * int(2.5 * blur_x + 0.5) + 1, 1), blur_x)
    if blur_y > 0:
        arr = cv2.GaussianBlur(arr, (1, 2 * int(2.5 * blur_y + 0.5) + 1), blur_y)
    return arr


def blurred(arr: np.ndarray, blur_x: float, blur_y: float) -> np.ndarray:
    return np.asarray(masking.blur_mask(Image.fromarray(arr), blur_x, blur_y))


def box_mask(size: int = 64, box: tuple[int, int, int, int] = (16, 16, 32, 40)) -> np.ndarray:
    arr = np.zeros((size, size), dtype=np.uint8)
    x1, y1, x2, y2 = box
    arr[y1:y2, x1:x2] = 255
    return arr


# --- item 1: the blur, bit for bit ----------------------------------------------------------------
def test_kernel_wider_than_the_mask_mirrors_like_opencv():
    """2×3 mask, blur 4: the 21-tap kernel is reflected back and forth over 3 columns and 2 rows.
    The float blur this replaces gave [[42, 42, 42], [43, 43, 43]], off by up to 26;
    the values are OpenCV's (4.10 and 5.1 agree)."""
    arr = np.zeros((2, 3), dtype=np.uint8)
    arr[0, 1] = 255
    assert blurred(arr, 4, 4).tolist() == [[64, 68, 64], [60, 63, 60]]
    assert np.array_equal(blurred(arr, 4, 4), a1111_blur(arr, 4, 4))


def test_fixed_point_rounding_of_a_64px_mask():
    """Where the float blur rounds 0.5-ish values up, OpenCV's fixed-point sum gives 0 (row 6)."""
    out = blurred(box_mask(), 4, 4)
    assert out[6, 14:18].tolist() == [0, 0, 1, 1] and out[6, 31:34].tolist() == [1, 0, 0]
    assert np.array_equal(out, a1111_blur(box_mask(), 4, 4))


@pytest.mark.parametrize("blur", [1, 2, 3, 4, 8, 16, 32, 64])
@pytest.mark.parametrize("size", [64, 96, 130])
def test_box_masks_of_64_px_and_more_match_opencv(size, blur):
    arr = box_mask(size, (size // 4, size // 5, size // 2, size - 7))
    for bx, by in ((blur, blur), (blur, 0), (0, blur), (blur, blur / 2)):
        assert np.array_equal(blurred(arr, bx, by), a1111_blur(arr, bx, by)), (bx, by)


def test_golden_mask_blur_matches_opencv():
    """The mask of the inpainting goldens (blur 2) — 40 of its pixels moved by one level."""
    mask = masking.create_binary_mask(Image.open(os.path.join(os.path.dirname(__file__), "golden/inputs/mask.png")))
    arr = np.asarray(mask)
    assert np.array_equal(blurred(arr, 2, 2), a1111_blur(arr, 2, 2))


def test_blur_of_zero_is_the_mask_itself_and_an_rgb_mask_is_read_as_luminance():
    arr = box_mask(16, (2, 3, 9, 12))
    assert np.array_equal(blurred(arr, 0, 0), arr)
    rgb = Image.fromarray(arr).convert("RGB")
    assert np.array_equal(np.asarray(masking.blur_mask(rgb, 3, 1)), a1111_blur(arr, 3, 1))
    assert masking.blur_mask(rgb, 3, 1).mode == "L"


masks = st.tuples(st.integers(1, 80), st.integers(1, 80)).flatmap(
    lambda hw: st.one_of(
        hnp.arrays(np.uint8, hw),
        hnp.arrays(np.uint8, hw, elements=st.sampled_from([0, 255])),
    ))
blurs = st.one_of(st.integers(0, 64), st.floats(0, 40, allow_nan=False).map(lambda v: round(v * 4) / 4))


@SETTINGS
@given(arr=masks, blur_x=blurs, blur_y=blurs)
def test_blur_equals_opencv_called_the_a1111_way(arr, blur_x, blur_y):
    assert np.array_equal(blurred(arr, blur_x, blur_y), a1111_blur(arr, blur_x, blur_y))


# --- item 3: crop regions -------------------------------------------------------------------------
def numpy_box(arr: np.ndarray) -> tuple[int, int, int, int] | None:
    """(x1, y1, x2, y2) of the pixels non-zero in any band; None when there are none."""
    selected = arr != 0 if arr.ndim == 2 else (arr != 0).any(axis=2)
    ys, xs = np.nonzero(selected)
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_blank_mask_gives_a1111s_inverted_box():
    assert masking.get_crop_region(Image.new("L", (1, 1))) == (1, 1, 0, 0)
    assert masking.get_crop_region(np.zeros((1, 1), dtype=np.uint8)) == (1, 1, 0, 0)
    assert masking.get_crop_region(Image.new("L", (40, 30)), 8) == (32, 22, 8, 8)
    assert masking.get_crop_region(Image.new("L", (40, 30)), 100) == (0, 0, 40, 30)
    assert masking.get_crop_region_v2(Image.new("L", (40, 30)), 8) is None


def test_crop_region_v2_takes_arrays_and_every_band():
    arr = np.zeros((6, 8), dtype=np.uint8)
    arr[2, 3] = 1
    assert masking.get_crop_region_v2(arr) == (3, 2, 4, 3)
    assert masking.get_crop_region(arr, 1) == (2, 1, 5, 4)
    rgb = Image.new("RGB", (8, 6))
    rgb.putpixel((5, 4), (1, 0, 0))  # black once converted to L, but not blank
    assert masking.get_crop_region_v2(rgb) == (5, 4, 6, 5)
    assert masking.get_crop_region_v2(np.asarray(rgb)) == (5, 4, 6, 5)
    assert masking.get_crop_region(rgb) == (5, 4, 6, 5)


def test_crop_region_of_arrays_pillow_has_no_mode_for():
    """An int64 array (what np.array makes of Python ints) fails in A1111's Image.fromarray;
    Serena reads it as "non-zero" (the meaning of A1111's older array-based helper)."""
    arr = np.zeros((5, 7), dtype=np.int64)
    arr[1:3, 2] = 300
    assert masking.get_crop_region_v2(arr) == (2, 1, 3, 3)
    assert masking.get_crop_region(np.zeros((5, 7), dtype=np.int64), 2) == (5, 3, 2, 2)


crop_masks = st.tuples(st.integers(1, 48), st.integers(1, 48), st.sampled_from([None, 3])).flatmap(
    lambda shape: hnp.arrays(np.uint8, shape[:2] if shape[2] is None else shape,
                             elements=st.sampled_from([0, 0, 0, 0, 1, 7, 255])))


@SETTINGS
@given(arr=crop_masks, pad=st.integers(0, 64), as_array=st.booleans())
def test_crop_regions_are_a1111s(arr, pad, as_array):
    mask = arr if as_array else Image.fromarray(arr)
    height, width = arr.shape[:2]
    box = numpy_box(arr)
    if box is None:
        expected_v2 = None
        expected = (max(width - pad, 0), max(height - pad, 0), min(pad, width), min(pad, height))
    else:
        x1, y1, x2, y2 = box
        expected_v2 = expected = (max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, width), min(y2 + pad, height))
    assert masking.get_crop_region_v2(mask, pad) == expected_v2
    assert masking.get_crop_region(mask, pad) == expected
