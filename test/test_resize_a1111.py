"""Resize mode 3 and the inpainting mask's sizes, as A1111 computes them (issue 8, item 2).

A1111's `images.resize_image` reads mode 3 ("just resize (latent upscale)") as mode 2 "resize and
fill" for pixels, and img2img resizes the whole-picture mask with the job's mode, 3 included. The
one departure: with mode 3 and an init image of another size than the result, A1111 fails
("images do not match"); Serena stretches the mask with the latent there (docs/architecture.md).
No model is needed: the mask stage runs on a bare processing object.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image, ImageOps

from modules import errors, images, masking, processing, processing_img2img

SETTINGS = settings(max_examples=120, deadline=None)


# --- resize_image(3, …) ---------------------------------------------------------------------------
def test_mode_3_resizes_and_fills_like_mode_2():
    wide = Image.new("RGB", (128, 32), (128, 128, 128))
    wide.paste((255, 0, 0), (0, 0, 128, 2))
    three, two = images.resize_image(3, wide, 64, 64), images.resize_image(2, wide, 64, 64)
    assert three.mode == "RGB" and three.size == (64, 64) and three.tobytes() == two.tobytes()
    assert three.getpixel((32, 2))[0] > 200, "the top band is filled with the stretched top row"


def test_mode_3_on_a_mask_gives_an_rgb_canvas_as_a1111():
    mask = Image.new("L", (96, 64), 0)
    mask.paste(255, (0, 0, 10, 64))
    out = images.resize_image(3, mask, 64, 64)
    assert out.mode == "RGB" and out.tobytes() == images.resize_image(2, mask, 64, 64).tobytes()
    assert images.resize_image(3, Image.new("RGBA", (8, 4)), 16, 16, force_RGBA=True).mode == "RGBA"


@pytest.mark.parametrize("mode", [-1, 4, 7])
def test_other_modes_are_still_refused(mode):
    with pytest.raises(errors.InvalidParameter, match="resize_mode"):
        images.resize_image(mode, Image.new("L", (8, 8)), 8, 8)


def fill_geometry(src: tuple[int, int], dst: tuple[int, int]) -> tuple[int, int]:
    """A1111's "resize and fill": the size the image is scaled to, fitting inside `dst`."""
    (iw, ih), (w, h) = src, dst
    ratio, src_ratio = w / h, iw / ih
    return (w if ratio < src_ratio else iw * h // ih), (h if ratio >= src_ratio else ih * w // iw)


sizes = st.tuples(st.integers(1, 96), st.integers(1, 96))


@SETTINGS
@given(src=sizes, dst=sizes, seed=st.integers(0, 2 ** 32 - 1), mode=st.sampled_from(["L", "RGB"]))
def test_mode_3_is_mode_2_and_centres_the_fitted_image(src, dst, seed, mode):
    src_w, src_h = fill_geometry(src, dst)
    assume(src_w > 0 and src_h > 0)  # an image thinner than a pixel once fitted: A1111 fails too
    arr = np.random.default_rng(seed).integers(0, 256, (src[1], src[0], 3), dtype=np.uint8)
    im = Image.fromarray(arr).convert(mode)
    three = images.resize_image(3, im, *dst, upscaler_name="None")
    assert three.size == dst and three.tobytes() == images.resize_image(2, im, *dst, upscaler_name="None").tobytes()
    left, top = dst[0] // 2 - src_w // 2, dst[1] // 2 - src_h // 2
    centre = three.crop((left, top, left + src_w, top + src_h)).convert(mode)
    assert centre.tobytes() == im.resize((src_w, src_h), resample=images.LANCZOS).tobytes()


# --- the inpainting mask stage (StableDiffusionProcessingImg2Img.init's mask half) ------------------
def a1111_mask_stage(mask: Image.Image, init_size: tuple[int, int], width: int, height: int, resize_mode: int,
                     blur_x: int, blur_y: int, invert: bool, only_masked: bool, padding: int) -> dict:
    """What A1111 v1.10 computes from the mask, with Serena's one departure (mode 3, other size)."""
    mask = masking.create_binary_mask(mask)
    if invert:
        mask = ImageOps.invert(mask)
    arr = np.array(mask)
    if blur_x > 0:
        arr = cv2.GaussianBlur(arr, (2 * int(2.5 * blur_x + 0.5) + 1, 1), blur_x)
    if blur_y > 0:
        arr = cv2.GaussianBlur(arr, (1, 2 * int(2.5 * blur_y + 0.5) + 1), blur_y)
    mask = Image.fromarray(arr)
    if only_masked:
        crop = masking.get_crop_region_v2(mask, padding)
        if crop is None:
            return dict(image_mask=None, crop=None, overlay=None, paste_to=None)
        crop = masking.expand_crop_region(crop, width, height, *mask.size)
        x1, y1, x2, y2 = crop
        return dict(image_mask=images.resize_image(2, mask.crop(crop), width, height), crop=crop, overlay=mask,
                    paste_to=(x1, y1, x2 - x1, y2 - y1))
    if resize_mode == 3 and init_size != (width, height):
        resize_mode = 0  # Serena: A1111 fails on this job; the mask is stretched with the latent
    image_mask = images.resize_image(resize_mode, mask, width, height)
    overlay = Image.fromarray(np.clip(np.asarray(image_mask, dtype=np.float32) * 2, 0, 255).astype(np.uint8))
    return dict(image_mask=image_mask, crop=None, overlay=overlay, paste_to=None)


def same_image(a: Image.Image | None, b: Image.Image | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.mode == b.mode and a.size == b.size and a.tobytes() == b.tobytes()


def mask_stage(mask, init_size, width, height, resize_mode, blur_x, blur_y, invert, only_masked, padding):
    p = processing.StableDiffusionProcessingImg2Img(
        init_images=[Image.new("RGB", init_size)], mask=mask, width=width, height=height, resize_mode=resize_mode,
        mask_blur_x=blur_x, mask_blur_y=blur_y, inpainting_mask_invert=invert, inpaint_full_res=only_masked,
        inpaint_full_res_padding=padding)
    image_mask, crop = processing_img2img.prepare_inpaint_mask(p)
    return p, dict(image_mask=image_mask, crop=crop, overlay=p.mask_for_overlay, paste_to=p.paste_to)


def test_mode_3_mask_at_the_result_size_is_resized_as_a1111_does():
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (10, 20, 30, 40))
    p, got = mask_stage(mask, (64, 64), 64, 64, 3, 4, 4, False, False, 0)
    want = a1111_mask_stage(mask, (64, 64), 64, 64, 3, 4, 4, False, False, 0)
    assert got["image_mask"].mode == "RGB" and same_image(got["image_mask"], want["image_mask"])
    assert same_image(got["overlay"], want["overlay"])


@pytest.mark.parametrize("init_size", [(96, 64), (64, 128), (200, 150)])
def test_mode_3_mask_of_another_size_is_stretched_with_the_latent(init_size):
    mask = Image.new("L", init_size, 0)
    mask.paste(255, (init_size[0] // 4, init_size[1] // 4, init_size[0] // 2, init_size[1] // 2))
    _, got = mask_stage(mask, init_size, 64, 64, 3, 0, 0, False, False, 0)
    assert got["image_mask"].size == (64, 64)
    assert same_image(got["image_mask"], images.resize_image(0, mask, 64, 64))


masks_and_sizes = st.tuples(st.sampled_from([8, 16, 24, 40, 64, 96]), st.sampled_from([8, 16, 24, 40, 64, 96]),
                            st.booleans()).flatmap(
    lambda s: st.tuples(st.just(s), hnp.arrays(np.uint8, (s[1], s[0]),
                                                elements=st.sampled_from([0, 0, 0, 255, 255, 90]))))


@SETTINGS
@given(case=masks_and_sizes, target=st.tuples(st.sampled_from([32, 48, 64]), st.sampled_from([32, 48, 64])),
       resize_mode=st.integers(0, 3), blur_x=st.integers(0, 12), blur_y=st.integers(0, 12), invert=st.booleans(),
       only_masked=st.booleans(), padding=st.integers(0, 40))
def test_mask_stage_is_a1111s(case, target, resize_mode, blur_x, blur_y, invert, only_masked, padding):
    (init_w, init_h, same_as_target), arr = case
    init_size = target if same_as_target else (init_w, init_h)
    mask = Image.fromarray(arr).resize(init_size) if same_as_target else Image.fromarray(arr)
    args = (mask, init_size, *target, resize_mode, blur_x, blur_y, invert, only_masked, padding)
    p, got = mask_stage(*args)
    want = a1111_mask_stage(*args)
    assert got["crop"] == want["crop"] and got["paste_to"] == want["paste_to"]
    assert same_image(got["image_mask"], want["image_mask"])
    assert same_image(got["overlay"], want["overlay"])
    if only_masked and want["crop"] is None:
        assert p.inpaint_full_res is False, "a blank mask switches the job to the whole picture (A1111)"
