"""img2img and inpainting (spec §1.3): init images → init latent, masks, the masked sampling.

`StableDiffusionProcessingImg2Img.init` calls :func:`init_img2img`: the inpainting mask (binary,
inverted, blurred; for "only masked" the crop region), each init image resized, flattened, overlaid
and filled, the colour-correction targets, the encoded `init_latent` and the latent-size `mask` /
`nmask`. Its `sample` calls :func:`sample_img2img`, which blends the kept area back after the
sampler. The image conditioning of inpainting models (both modes' `*_image_conditioning` methods)
lives here too, as it is built from the same masks. The pure pixel helpers these use (overlay,
colour correction, VAE encode) are in `modules/processing_images.py`; the request checks for these
fields are in `modules/processing_validation.py`.

Sizes: a mask is first stretched over its init image (whatever resolution it was drawn at), then
follows the image through the resize mode; for the mask, mode 3 ("just resize (latent upscale)")
is "resize and fill", as in A1111. Mode 3 encodes the image at its own size and stretches the
latent: with an init image of another size than the result (where A1111 fails), the mask, the
overlay and the inpainting-model conditioning are stretched with it, so the result has the
requested size.
"Only masked" crops around the mask and pastes the result back: it has the init image's size.

A1111's names (`create_binary_mask`, `images_tensor_to_samples`, `setup_color_correction`,
`create_random_tensors`) are looked up on `modules.processing` when called, so an extension that
replaces one there is the one used.
"""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageOps

from modules import masking, shared
from modules.processing_images import image_to_array, opt_f
from modules.processing_stages import data_dir, run_hook
from modules.scripts import MaskBlendArgs

if TYPE_CHECKING:  # annotations only: processing imports this module
    from modules.processing import StableDiffusionProcessing, StableDiffusionProcessingImg2Img


# --- inpainting-model conditioning ----------------------------------------------------------------
def is_inpainting_model(model: Any) -> bool:
    """Whether the model's UNet takes the 5 extra channels of image conditioning (mask + masked image)."""
    return bool(getattr(model, "is_inpainting", False))


def txt2img_image_conditioning(sd_model: Any, x: torch.Tensor, width: int, height: int) -> torch.Tensor | None:
    """Image conditioning for an inpainting model with nothing to keep (a grey image, mask 1).

    A1111's module-level function (`modules.processing.txt2img_image_conditioning`); None for
    other models, whose samplers take no image conditioning.
    """
    from modules import processing  # A1111 names are looked up there: extensions replace them
    if not is_inpainting_model(sd_model):
        return None
    grey = torch.full((x.shape[0], 3, height, width), 0.5, device=x.device, dtype=torch.float32)
    latent = processing.images_tensor_to_samples(grey, sd_model)
    return torch.nn.functional.pad(latent, (0, 0, 0, 0, 1, 0), value=1.0).to(x.dtype)


def img2img_image_conditioning(p: StableDiffusionProcessing, source_image: torch.Tensor, latent_image: torch.Tensor,
                               image_mask: Image.Image | torch.Tensor | None = None,
                               round_image_mask: bool = True) -> torch.Tensor | None:
    """Inpainting-model conditioning: the masked source encoded, with the mask at latent size.

    The mask is brought to the source's size; the encoded source to the latent's size (resize
    mode 3 encodes the init image at its own size and stretches the latent).
    """
    if not is_inpainting_model(p.sd_model):
        return None
    p.is_using_inpainting_conditioning = True
    mask = _conditioning_mask(source_image, image_mask, round_image_mask)
    weight = getattr(p, "inpainting_mask_weight", shared.opts.inpainting_mask_weight)
    masked = torch.lerp(source_image, source_image * (1.0 - mask), weight)
    encoded = p.sd_model.encode_first_stage(masked)
    if encoded.shape[-2:] != latent_image.shape[-2:]:
        encoded = torch.nn.functional.interpolate(encoded, size=latent_image.shape[-2:], mode="bilinear")
    mask = torch.nn.functional.interpolate(mask, size=latent_image.shape[-2:])
    mask = mask.expand(encoded.shape[0], -1, -1, -1)
    return torch.cat([mask.to(encoded.dtype), encoded], dim=1)


def _conditioning_mask(source_image: torch.Tensor, image_mask: Any, round_mask: bool) -> torch.Tensor:
    """The mask as a 1×1×H×W tensor at the source image's size (1 where inpainting happens)."""
    height, width = source_image.shape[-2:]
    if image_mask is None:
        mask = source_image.new_ones(1, 1, height, width)
    elif torch.is_tensor(image_mask):
        mask = image_mask
        if mask.shape[-2:] != (height, width):
            mask = torch.nn.functional.interpolate(mask.float(), size=(height, width), mode="bilinear")
    else:
        fitted = masking.fit_to_image(image_mask.convert("L"), (width, height))
        mask = torch.from_numpy((np.array(fitted, dtype=np.float32) / 255.0)[None, None])
        if round_mask:
            mask = torch.round(mask)
    return mask.to(device=source_image.device, dtype=source_image.dtype)


# --- init -----------------------------------------------------------------------------------------
def init_img2img(p: StableDiffusionProcessingImg2Img, all_seeds: list[int]) -> None:
    """img2img `init`: sampler, mask, init images → `init_latent`, latent masks, image conditioning."""
    from modules import processing, sd_samplers  # A1111 names are looked up on processing: extensions replace them
    opts = shared.opts
    p.extra_generation_params["Denoising strength"] = p.denoising_strength
    if p.initial_noise_multiplier is None:
        p.initial_noise_multiplier = opts.initial_noise_multiplier
    if getattr(p.sd_model, "cond_stage_key", "txt") != "edit":
        p.image_cfg_scale = None
    p.sampler = sd_samplers.create_sampler(p.sampler_name, p.sd_model)
    image_mask, crop = prepare_inpaint_mask(p) if p.image_mask is not None else (None, None)
    latent_mask = p.latent_mask if isinstance(p.latent_mask, Image.Image) else image_mask
    if image_mask is not None:
        p.overlay_images = []
    if opts.img2img_color_correction and p.color_corrections is None:
        p.color_corrections = []
    arrays = [_prepare_init_image(p, img, image_mask, latent_mask, crop) for img in p.init_images]
    batch = _init_batch(p, arrays)
    p.init_latent = processing.images_tensor_to_samples(batch, p.sd_model)
    if p.resize_mode == 3:
        p.init_latent = torch.nn.functional.interpolate(p.init_latent, size=(p.height // opt_f, p.width // opt_f),
                                                        mode="bilinear")
    if image_mask is not None:
        _latent_masks(p, latent_mask, all_seeds)
    p.image_conditioning = p.img2img_image_conditioning(batch * 2 - 1, p.init_latent, image_mask, p.mask_round)


def prepare_inpaint_mask(p: StableDiffusionProcessingImg2Img) -> tuple[Image.Image | None, tuple | None]:
    """Binary mask → invert → blur; for "only masked" the crop region and the mask at processing size.

    The mask is first stretched over the (first) init image, so a mask drawn at another resolution
    covers the same picture. Fills `p.mask_for_overlay`, `p.paste_to` and the mask infotext keys.
    Returns the mask the latent mask is made from, and the crop region (None for the whole picture).
    """
    from modules import images, processing  # A1111 names are looked up on processing: extensions replace them
    mask = processing.create_binary_mask(p.image_mask, round=p.mask_round)
    mask = masking.fit_to_image(mask, p.init_images[0].size)
    if p.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
        p.extra_generation_params["Mask mode"] = "Inpaint not masked"
    if p.mask_blur_x > 0 or p.mask_blur_y > 0:
        mask = masking.blur_mask(mask, p.mask_blur_x, p.mask_blur_y)
        p.extra_generation_params["Mask blur"] = p.mask_blur
    if not p.inpaint_full_res:
        mask = images.resize_image(_whole_picture_mask_mode(p, mask.size), mask, p.width, p.height)
        doubled = np.clip(np.asarray(mask, dtype=np.float32) * 2, 0, 255).astype(np.uint8)
        p.mask_for_overlay = Image.fromarray(doubled)
        return mask, None
    p.mask_for_overlay = mask
    crop = masking.get_crop_region_v2(mask, p.inpaint_full_res_padding)
    if crop is None:
        p.mask_for_overlay, p.inpaint_full_res = None, False
        p.comment('Unable to perform "Inpaint Only mask" because mask is blank, switch to img2img mode.')
        return None, None
    crop = masking.expand_crop_region(crop, p.width, p.height, mask.width, mask.height)
    x1, y1, x2, y2 = crop
    p.paste_to = (x1, y1, x2 - x1, y2 - y1)
    p.extra_generation_params["Inpaint area"] = "Only masked"
    p.extra_generation_params["Masked area padding"] = p.inpaint_full_res_padding
    return images.resize_image(2, mask.crop(crop), p.width, p.height), crop


def _whole_picture_mask_mode(p: StableDiffusionProcessingImg2Img, init_size: tuple[int, int]) -> int:
    """The resize mode of the whole-picture mask: the job's, 3 ("latent upscale") included, as in A1111.

    With mode 3 and an init image of another size than the result, the latent is stretched to the
    requested size, so the mask is stretched with it (mode 0): A1111 resizes it to fill and then
    fails ("images do not match") when it composites the overlay.
    """
    if p.resize_mode == 3 and tuple(init_size) != (p.width, p.height):
        return 0
    return p.resize_mode


def _prepare_init_image(p: StableDiffusionProcessingImg2Img, img: Image.Image, image_mask: Image.Image | None,
                        latent_mask: Image.Image | None, crop: tuple | None) -> np.ndarray:
    """One init image: flatten, resize, overlay of the original, crop, masked-area fill, colour target."""
    from modules import images, processing  # A1111 names are looked up on processing: extensions replace them
    opts = shared.opts
    _save_init_image(p, img)
    image = images.flatten(img, opts.img2img_background_color)
    if crop is None and p.resize_mode != 3:
        image = images.resize_image(p.resize_mode, image, p.width, p.height)
    if image_mask is not None:
        p.overlay_images.append(_overlay(p, image, crop))
    if crop is not None:
        image = images.resize_image(2, image.crop(crop), p.width, p.height)
    if image_mask is not None and p.inpainting_fill != 1:
        image = masking.fill(image, masking.fit_to_image(latent_mask.convert("L"), image.size))
        if p.inpainting_fill == 0:
            p.extra_generation_params["Masked content"] = "fill"
    if p.color_corrections is not None:
        p.color_corrections.append(processing.setup_color_correction(image))
    return image_to_array(image)


def _overlay(p: StableDiffusionProcessingImg2Img, image: Image.Image, crop: tuple | None) -> Image.Image:
    """The original outside the mask, at the size the result is composited at.

    With resize mode 3 (whole picture) the image is encoded at its own size and the latent
    stretched, so the result has the requested size: the original is stretched to it as well.
    A mask of another size than the image (a later init image of another size) is resized to it
    with the job's resize mode, as in A1111.
    """
    from modules import images
    if crop is None and p.resize_mode == 3 and image.size != (p.width, p.height):
        image = images.resize_image(0, image, p.width, p.height)
    if p.mask_for_overlay.size != image.size:
        p.mask_for_overlay = images.resize_image(p.resize_mode, p.mask_for_overlay, image.width, image.height)
    return masking.overlay_image(image, p.mask_for_overlay)


def _save_init_image(p: StableDiffusionProcessingImg2Img, img: Image.Image) -> None:
    """Option `save_init_img`: keep the init image by its md5, which becomes `Init image hash`."""
    from modules import images
    if not shared.opts.save_init_img:
        return
    p.init_img_hash = hashlib.md5(img.tobytes()).hexdigest()
    images.save_image(img, data_dir(shared.opts.outdir_init_images), None, forced_filename=p.init_img_hash,
                      save_to_dirs=False)


def _init_batch(p: StableDiffusionProcessingImg2Img, arrays: list[np.ndarray]) -> torch.Tensor:
    """One image repeated batch_size times (with its overlay and colour target), or one per image."""
    if len(arrays) == 1:
        if p.overlay_images is not None:
            p.overlay_images = p.overlay_images * p.batch_size
        if p.color_corrections is not None and len(p.color_corrections) == 1:
            p.color_corrections = p.color_corrections * p.batch_size
        return torch.from_numpy(np.repeat(arrays[0][None], p.batch_size, axis=0))
    return torch.from_numpy(np.stack(arrays))


def _latent_masks(p: StableDiffusionProcessingImg2Img, latent_mask: Image.Image, all_seeds: list[int]) -> None:
    """`mask` (keep) and `nmask` (inpaint) at latent size; fills 2 and 3 replace the masked latent."""
    from modules import processing  # A1111 names are looked up there: extensions replace them
    channels, height, width = p.init_latent.shape[1:]
    nmask = masking.latent_mask(latent_mask, height, width, channels, p.mask_round)
    device, dtype = p.init_latent.device, p.init_latent.dtype
    p.mask = torch.asarray(1.0 - nmask).to(device=device, dtype=dtype)
    p.nmask = torch.asarray(nmask).to(device=device, dtype=dtype)
    if p.inpainting_fill == 2:
        noise = processing.create_random_tensors(p.init_latent.shape[1:], all_seeds[0:p.init_latent.shape[0]])
        p.init_latent = p.init_latent * p.mask + noise.to(device=device, dtype=dtype) * p.nmask
        p.extra_generation_params["Masked content"] = "latent noise"
    elif p.inpainting_fill == 3:
        p.init_latent = p.init_latent * p.mask
        p.extra_generation_params["Masked content"] = "latent nothing"


# --- sampling -------------------------------------------------------------------------------------
def sample_img2img(p: StableDiffusionProcessingImg2Img, conditioning: Any,
                   unconditional_conditioning: Any) -> torch.Tensor:
    """Noise × initial_noise_multiplier, the sampler's img2img run, then the kept area blended back."""
    x = p.rng.next()
    if p.initial_noise_multiplier != 1.0:
        p.extra_generation_params["Noise multiplier"] = p.initial_noise_multiplier
        x = x * p.initial_noise_multiplier
    run_hook(p, "process_before_every_sampling", x=p.init_latent, noise=x, c=conditioning,
             uc=unconditional_conditioning)
    samples = p.sampler.sample_img2img(p, p.init_latent, x, conditioning, unconditional_conditioning,
                                       image_conditioning=p.image_conditioning)
    if p.mask is not None:
        blended = samples * p.nmask + p.init_latent * p.mask
        if p.scripts is not None:
            mba = MaskBlendArgs(samples, p.nmask, p.init_latent, p.mask, blended)
            p.scripts.on_mask_blend(p, mba)
            blended = mba.blended_latent
        samples = blended
    return samples
