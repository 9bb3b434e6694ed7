"""Inpainting mask helpers: binary mask, per-axis blur, crop regions, fill, overlay, latent mask."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from modules import errors, masking


def square_mask(size=64, box=(16, 16, 32, 40)) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, box)
    return mask


def test_binary_mask_from_luminance_keeps_grey_levels():
    """A1111 rounds only a mask taken from the alpha channel; a luminance mask keeps its grey levels."""
    mask = Image.fromarray(np.array([[0, 128, 129, 255]], dtype=np.uint8)).convert("RGB")
    assert np.array(masking.create_binary_mask(mask)).tolist() == [[0, 128, 129, 255]]
    assert np.array(masking.create_binary_mask(mask, round=False)).tolist() == [[0, 128, 129, 255]]


def test_binary_mask_from_alpha_rounds_at_128():
    rgba = Image.fromarray(np.array([[[0, 0, 0, a] for a in (0, 128, 129, 255)]], dtype=np.uint8), mode="RGBA")
    assert np.array(masking.create_binary_mask(rgba)).tolist() == [[0, 0, 255, 255]]
    assert np.array(masking.create_binary_mask(rgba, round=False)).tolist() == [[0, 128, 129, 255]]


def test_binary_mask_uses_alpha_when_present():
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (0, 0, 0, 255))
    assert np.array(masking.create_binary_mask(rgba)).tolist() == [[0, 255]]


def test_binary_mask_rejects_non_images():
    with pytest.raises(errors.InvalidImage, match="str"):
        masking.create_binary_mask("not an image")


def test_blur_kernel_size_is_a1111s():
    assert masking.blur_kernel_size(4) == 2 * int(2.5 * 4 + 0.5) + 1 == 21
    assert [masking.blur_kernel_size(s) for s in (0.5, 1, 2, 64)] == [3, 7, 11, 321]


def test_blur_is_per_axis():
    mask = square_mask()
    only_x = np.array(masking.blur_mask(mask, 4, 0), dtype=int)
    only_y = np.array(masking.blur_mask(mask, 0, 4), dtype=int)
    original = np.array(mask, dtype=int)
    # Horizontal blur leaves rows outside the square untouched, vertical blur columns.
    assert (only_x[:16] == 0).all() and (only_x[40:] == 0).all()
    assert (only_y[:, :16] == 0).all() and (only_y[:, 32:] == 0).all()
    assert (only_x[20, 12:16] > 0).all() and not np.array_equal(only_x, original)
    assert (only_y[12:16, 20] > 0).all()


def test_blur_preserves_a_constant_mask():
    flat = Image.new("L", (16, 16), 200)
    assert (np.array(masking.blur_mask(flat, 3, 3)) == 200).all()


def test_crop_region_v2_with_padding_and_blank():
    mask = square_mask()
    assert masking.get_crop_region_v2(mask) == (16, 16, 32, 40)
    assert masking.get_crop_region_v2(mask, 4) == (12, 12, 36, 44)
    assert masking.get_crop_region_v2(mask, 100) == (0, 0, 64, 64)
    assert masking.get_crop_region_v2(Image.new("L", (8, 8))) is None
    assert masking.get_crop_region(Image.new("L", (8, 8))) == (8, 8, 0, 0), "A1111: (w-pad, h-pad, pad, pad)"


def test_expand_crop_region_matches_processing_ratio():
    # 16 wide, 24 tall → for a square processing size the width grows to 24.
    assert masking.expand_crop_region((16, 16, 32, 40), 64, 64, 64, 64) == (12, 16, 36, 40)
    # Growing past the image edge shifts the region back inside.
    assert masking.expand_crop_region((0, 0, 8, 32), 64, 64, 64, 64) == (0, 0, 32, 32)
    x1, y1, x2, y2 = masking.expand_crop_region((40, 10, 64, 14), 64, 32, 64, 64)
    assert (x2 - x1) / (y2 - y1) == pytest.approx(2.0) and y1 >= 0 and y2 <= 64


def test_fill_changes_only_the_masked_area_towards_its_surroundings():
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    image.paste((0, 255, 0), (16, 16, 32, 40))
    filled = np.array(masking.fill(image, square_mask()), dtype=int)
    assert (filled[:16] == [200, 30, 30]).all()
    inside = filled[28, 24]
    assert abs(inside[0] - 200) < 10 and inside[1] < 60, "the green hole is filled with the surrounding red"


def test_overlay_is_transparent_inside_the_mask():
    image = Image.new("RGB", (64, 64), (10, 20, 30))
    overlay = np.array(masking.overlay_image(image, square_mask()))
    assert overlay.shape == (64, 64, 4)
    assert (overlay[20, 20] == 0).all()
    assert overlay[0, 0].tolist() == [10, 20, 30, 255]


def test_latent_mask_shape_and_rounding():
    nmask = masking.latent_mask(square_mask(), 8, 8, 4, round=True)
    assert nmask.shape == (4, 8, 8)
    assert set(np.unique(nmask)) <= {0.0, 1.0}
    assert nmask[0, 3, 2] == 1.0 and nmask[0, 0, 0] == 0.0


def test_fit_to_image_stretches_only_a_mask_of_another_size():
    mask = square_mask(32, (8, 8, 16, 16))
    assert masking.fit_to_image(mask, (32, 32)) is mask
    fitted = masking.fit_to_image(mask, (64, 48))
    assert fitted.size == (64, 48) and fitted.mode == "L"
    arr = np.asarray(fitted)
    assert arr[20, 24] == 255 and arr[0, 0] == 0 and arr[47, 63] == 0
