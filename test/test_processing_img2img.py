"""img2img and inpainting end to end on the demo checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from modules import errors, processing
from test_processing_helpers import env, fresh_state, max_diff, pixels, test_image  # noqa: F401  (fixtures)


def img2img(**kwargs) -> processing.StableDiffusionProcessingImg2Img:
    base = dict(prompt="a red cube", seed=77, steps=4, width=64, height=64, sampler_name="Euler",
                init_images=[test_image()], denoising_strength=0.6, do_not_save_samples=True,
                do_not_save_grid=True, inpaint_full_res=False)
    base.update(kwargs)
    return processing.StableDiffusionProcessingImg2Img(**base)


def run(**kwargs) -> processing.Processed:
    return processing.process_images(img2img(**kwargs))


def square_mask(size=(64, 64), box=(16, 16, 40, 40)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_each_resize_mode_gives_the_requested_size(mode):
    res = run(init_images=[test_image(96, 64)], resize_mode=mode, width=64, height=64)
    assert res.images[0].size == (64, 64)


def test_resize_modes_differ_for_a_non_square_input():
    results = [run(init_images=[test_image(128, 64)], resize_mode=m).images[0] for m in (0, 1, 2)]
    assert max_diff(results[0], results[1]) > 0 and max_diff(results[1], results[2]) > 0


def test_denoising_strength_controls_how_far_from_the_init_image():
    init = test_image()
    low = run(denoising_strength=0.1).images[0]
    high = run(denoising_strength=0.9).images[0]
    reference = run(denoising_strength=0.0001).images[0]
    d_low = np.abs(pixels(low) - pixels(reference)).mean()
    d_high = np.abs(pixels(high) - pixels(reference)).mean()
    assert d_low < d_high
    assert init.size == low.size


def test_infotext_records_denoising_and_noise_multiplier():
    res = run(initial_noise_multiplier=0.9)
    text = res.infotexts[0]
    assert "Denoising strength: 0.6" in text
    assert text.endswith(f"Noise multiplier: 0.9, Version: {processing.SERENA_VERSION}")
    assert "Noise multiplier" not in run().infotexts[0]


def test_noise_multiplier_changes_the_image():
    assert max_diff(run().images[0], run(initial_noise_multiplier=0.5).images[0]) > 0


def test_one_init_image_fills_the_batch_and_batch_matches_alone():
    batch = run(batch_size=2, seed=10)
    alone = run(seed=11)
    assert len(batch.images) == 2
    assert max_diff(batch.images[1], alone.images[0]) <= 1


def test_several_init_images_set_the_batch_size():
    p = img2img(init_images=[test_image(), test_image().transpose(Image.FLIP_LEFT_RIGHT)], batch_size=4)
    res = processing.process_images(p)
    assert p.batch_size == 2 and len(res.images) == 2


def test_too_many_init_images_rejected():
    with pytest.raises(errors.InvalidParameter, match="bad number of images passed: 3; expecting 2"):
        run(init_images=[test_image()] * 3, batch_size=2)


@pytest.mark.parametrize("kwargs,field", [
    (dict(init_images=[]), "init_images"), (dict(init_images=["abc"]), "init_images"),
    (dict(mask="not an image"), "mask"), (dict(resize_mode=4), "resize_mode"),
    (dict(inpainting_fill=7), "inpainting_fill"), (dict(denoising_strength=1.5), "denoising_strength"),
])
def test_bad_img2img_inputs(kwargs, field):
    with pytest.raises(errors.InvalidParameter) as info:
        run(**kwargs)
    assert info.value.field == field


def test_color_correction_option(env):
    plain = run().images[0]
    corrected = processing.process_images(img2img(override_settings={"img2img_color_correction": True})).images[0]
    assert corrected.size == plain.size and max_diff(plain, corrected) > 0


@pytest.mark.parametrize("fill,label", [(0, "fill"), (1, None), (2, "latent noise"), (3, "latent nothing")])
def test_inpaint_fill_modes_change_only_the_masked_area(fill, label):
    init = test_image()
    res = run(mask=square_mask(), mask_blur=0, inpainting_fill=fill, denoising_strength=0.9)
    out, original = pixels(res.images[0]), pixels(init)
    outside = np.ones((64, 64), dtype=bool)
    outside[16:40, 16:40] = False
    assert (out[outside] == original[outside]).all(), "overlay keeps the original outside the mask"
    assert np.abs(out[20:36, 20:36] - original[20:36, 20:36]).mean() > 1
    text = res.infotexts[0]
    assert (f"Masked content: {label}" in text) if label else "Masked content" not in text
    assert "Mask blur" not in text


def test_inpaint_infotext_keys_in_order():
    res = run(mask=square_mask(), mask_blur=4, inpainting_mask_invert=1, inpaint_full_res=True,
              inpaint_full_res_padding=8, inpainting_fill=1)
    params = res.infotexts[0].splitlines()[-1]
    assert "Mask mode: Inpaint not masked, Mask blur: 4, Inpaint area: Only masked, Masked area padding: 8" in params


def test_inverted_mask_keeps_the_inside():
    init = test_image()
    res = run(mask=square_mask(), mask_blur=0, inpainting_mask_invert=1, denoising_strength=0.9)
    out, original = pixels(res.images[0]), pixels(init)
    assert (out[16:40, 16:40] == original[16:40, 16:40]).all()
    assert np.abs(out[:10] - original[:10]).mean() > 1


def test_inpaint_only_masked_crops_processes_and_pastes_back():
    init = test_image(128, 128)
    mask = square_mask((128, 128), (40, 40, 72, 72))
    p = img2img(init_images=[init], mask=mask, mask_blur=0, inpaint_full_res=True, inpaint_full_res_padding=4,
                denoising_strength=0.9, inpainting_fill=1)
    res = processing.process_images(p)
    out, original = pixels(res.images[0]), pixels(init)
    assert res.images[0].size == (128, 128)
    assert p.paste_to == (36, 36, 40, 40)
    assert (out[:36] == original[:36]).all() and (out[80:] == original[80:]).all()
    assert np.abs(out[44:68, 44:68] - original[44:68, 44:68]).mean() > 1


def test_blank_mask_with_only_masked_falls_back_to_img2img():
    p = img2img(mask=Image.new("L", (64, 64), 0), inpaint_full_res=True)
    res = processing.process_images(p)
    assert len(res.images) == 1 and "blank" in res.comments


def test_overlay_off_returns_the_raw_result():
    p = img2img(mask=square_mask(), mask_blur=0, override_settings={"overlay_inpaint": False})
    res = processing.process_images(p)
    out, original = pixels(res.images[0]), pixels(test_image())
    assert (out[:10] != original[:10]).any()


def test_return_mask_options_append_images():
    res = run(mask=square_mask(), override_settings={"return_mask": True, "return_mask_composite": True})
    assert len(res.images) == 3 and len(res.infotexts) == 3
    assert res.images[1].mode == "RGB" and res.images[2].mode == "RGBA"


def test_latent_mask_blend_keeps_unmasked_latent():
    p = img2img(mask=square_mask(), mask_blur=0, inpainting_fill=1)
    processing.process_images(p)
    assert p.mask is not None and p.nmask is not None
    assert torch.equal(p.mask + p.nmask, torch.ones_like(p.mask))
    assert p.nmask[0, 3, 3] == 1 and p.nmask[0, 0, 0] == 0


@pytest.fixture()
def inpainting_model(env):
    """The demo checkpoint with a 9-channel UNet input (an inpainting checkpoint's layout)."""
    from modules import clip_tokenizer, demo_checkpoint, sd_models
    state = dict(demo_checkpoint.build_demo_state_dict(torch.float32))
    key = "model.diffusion_model.input_blocks.0.0.weight"
    extra = torch.randn(state[key].shape[0], 5, *state[key].shape[2:], generator=torch.Generator().manual_seed(3))
    state[key] = torch.cat([state[key], extra * 0.05], dim=1)
    model = sd_models.build_model(state, filename="demo-inpainting.safetensors")
    model.tokenizer = clip_tokenizer.load_tokenizer(clip_tokenizer.default_target_dir())
    previous = sd_models.model_data.sd_model
    sd_models.model_data.set_sd_model(model)
    yield model
    sd_models.model_data.set_sd_model(previous)


def test_inpainting_checkpoint_gets_image_conditioning(inpainting_model):
    assert inpainting_model.is_inpainting
    p = img2img(mask=square_mask(), mask_blur=0, inpainting_fill=1, denoising_strength=0.9)
    res = processing.process_images(p)
    assert p.is_using_inpainting_conditioning and p.image_conditioning.shape == (1, 5, 8, 8)
    assert torch.equal(p.image_conditioning[0, 0], torch.from_numpy(p.nmask[0].numpy()).round())
    assert "Conditional mask weight: 1.0" in res.infotexts[0]
    out, original = pixels(res.images[0]), pixels(test_image())
    assert (out[:16] == original[:16]).all()


def test_inpainting_checkpoint_txt2img_conditioning(inpainting_model):
    p = processing.StableDiffusionProcessingTxt2Img(prompt="x", seed=1, steps=2, width=64, height=64,
                                                    sampler_name="Euler", do_not_save_samples=True)
    res = processing.process_images(p)
    assert res.images[0].size == (64, 64) and res.is_using_inpainting_conditioning


def test_save_mask_and_composite_and_colour_correction_copies(env):
    import os
    from test_processing_helpers import files_under
    outputs = os.path.join(env, "outputs")
    before = set(files_under(outputs)) if os.path.isdir(outputs) else set()
    run(seed=901, mask=square_mask(), do_not_save_samples=False,
        override_settings={"save_mask": True, "save_mask_composite": True, "img2img_color_correction": True,
                           "save_images_before_color_correction": True})
    new = sorted(f for f in files_under(outputs) if f not in before)
    suffixes = sorted(f.split("-901")[1] for f in new)
    assert suffixes == sorted([".png", "-before-color-correction.png", "-mask-composite.png", "-mask.png"])
    assert all(f.startswith("img2img-images") for f in new)


# --- inpainting with an init image of another size (every resize mode × inpaint area) -------------
INIT_SIZES = [(96, 64), (64, 128), (200, 150), (64, 64)]


def box_mask(size: tuple[int, int]) -> Image.Image:
    """A mask selecting the box from a quarter to a half of each side."""
    w, h = size
    return square_mask(size, (w // 4, h // 4, w // 2, h // 2))


def expected_original(init: Image.Image, mask: Image.Image, mode: int) -> tuple[np.ndarray, np.ndarray]:
    """The original and the mask as the whole-picture result shows them: both resized by the mode
    (mode 3 stretches the latent, so an image and mask of another size are stretched: mode 0; at
    the requested size, mode 3's resize-and-fill (A1111) leaves their pixels as they are)."""
    from modules import images
    geometry = 0 if mode == 3 else mode
    original = images.resize_image(geometry, init, 64, 64)
    resized_mask = images.resize_image(geometry, mask, 64, 64).convert("L")
    return pixels(original), np.asarray(resized_mask)


@pytest.mark.parametrize("size", INIT_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("only_masked", [False, True], ids=["whole", "only-masked"])
@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_inpaint_any_init_size_in_every_resize_mode_and_area(mode, only_masked, size):
    """Issue item 4: the mask follows the image's resize. The whole picture comes back at the
    requested size; "only masked" pastes the inpainted crop back into the init image (A1111)."""
    init, mask = test_image(*size), box_mask(size)
    res = run(init_images=[init], mask=mask, mask_blur=0, resize_mode=mode, inpaint_full_res=only_masked,
              steps=2, denoising_strength=0.9)
    out = pixels(res.images[0])
    if only_masked:
        assert res.images[0].size == size
        original, keep = pixels(init), np.asarray(mask) == 0
    else:
        assert res.images[0].size == (64, 64)
        original, resized_mask = expected_original(init, mask, mode)
        keep = resized_mask == 0
    assert (out[keep] == original[keep]).all(), "the original is kept outside the mask"
    assert np.abs(out[~keep] - original[~keep]).mean() > 1, "the masked area is inpainted"


@pytest.mark.parametrize("mask_size", [(48, 32), (192, 128), (64, 64)], ids=lambda s: f"mask{s[0]}x{s[1]}")
@pytest.mark.parametrize("only_masked", [False, True], ids=["whole", "only-masked"])
@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_mask_of_another_size_is_stretched_over_the_init_image(mode, only_masked, mask_size):
    """A mask drawn at another resolution (or aspect) covers the whole init image, then follows it."""
    res = run(init_images=[test_image(96, 64)], mask=box_mask(mask_size), resize_mode=mode,
              inpaint_full_res=only_masked, steps=2)
    assert res.images[0].size == ((96, 64) if only_masked else (64, 64))


def test_half_resolution_mask_selects_the_same_area():
    init = test_image()
    res = run(init_images=[init], mask=square_mask((32, 32), (8, 8, 20, 20)), mask_blur=0, inpainting_fill=1,
              denoising_strength=0.9, steps=2)
    out, original = pixels(res.images[0]), pixels(init)
    outside = np.ones((64, 64), dtype=bool)
    outside[14:42, 14:42] = False  # the box 16..40 and a margin for the mask's resampling
    assert (out[outside] == original[outside]).all()
    assert np.abs(out[18:38, 18:38] - original[18:38, 18:38]).mean() > 1


@pytest.mark.parametrize("with_mask", [False, True], ids=["img2img", "inpaint"])
def test_inpainting_checkpoint_latent_resize_of_another_size(inpainting_model, with_mask):
    """Resize mode 3 encodes the 96×64 image as is: the conditioning is stretched with the latent."""
    extra = dict(mask=box_mask((96, 64)), mask_blur=0) if with_mask else {}
    p = img2img(init_images=[test_image(96, 64)], resize_mode=3, steps=2, **extra)
    res = processing.process_images(p)
    assert res.images[0].size == (64, 64)
    assert p.init_latent.shape[-2:] == (8, 8) and p.image_conditioning.shape == (1, 5, 8, 8)


# --- issue 8: mask blur and resize mode 3 as A1111 ----------------------------------------------
def test_job_blurs_the_mask_with_opencv_as_a1111():
    """The whole-picture job's mask is OpenCV's blur (A1111's call), resized with mode 3 as
    "resize and fill" (A1111) when the init image already has the requested size."""
    import cv2
    mask = box_mask((64, 64))
    p = img2img(mask=mask, mask_blur_x=3, mask_blur_y=5, resize_mode=3, steps=2)
    res = processing.process_images(p)
    assert res.images[0].size == (64, 64)
    arr = cv2.GaussianBlur(np.asarray(mask), (2 * int(2.5 * 3 + 0.5) + 1, 1), 3)
    arr = cv2.GaussianBlur(arr, (1, 2 * int(2.5 * 5 + 0.5) + 1), 5)
    from modules import images
    resized = np.asarray(images.resize_image(2, Image.fromarray(arr), 64, 64), dtype=np.float32)
    assert p.mask_for_overlay.mode == "RGB"
    assert np.array_equal(np.asarray(p.mask_for_overlay), np.clip(resized * 2, 0, 255).astype(np.uint8))


def test_only_masked_mode_3_fills_the_overlay_mask_of_a_second_init_image():
    """A later init image of another size gets the overlay mask resized by the job's mode (A1111)."""
    from modules import images
    first, second = test_image(64, 64), test_image(96, 64)
    p = img2img(init_images=[first, second], batch_size=2, mask=box_mask((64, 64)), mask_blur=0, resize_mode=3,
                inpaint_full_res=True, steps=2)
    res = processing.process_images(p)
    assert [im.size for im in res.images] == [(64, 64), (96, 64)]
    expected = images.resize_image(2, box_mask((64, 64)), 96, 64).convert("L")
    assert np.array_equal(np.asarray(p.mask_for_overlay.convert("L")), np.asarray(expected))
