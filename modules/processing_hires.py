"""txt2img's hires fix (spec §1.3): target size, the upscale between passes, the second pass.

`StableDiffusionProcessingTxt2Img.init` calls :func:`init_hires` (target size, upscale mode,
infotext keys) and `sample` hands its first-pass latents to :func:`sample_hr_pass`: upscale in
latent space or through an image upscaler, crop to the requested size, fresh noise from the same
seeds, then an img2img pass with the hires sampler, scheduler, checkpoint and prompts; the result
comes back decoded. The size rules (:func:`hires_target`) are pure so the request checks in
`modules/processing_validation.py` use them before anything runs. The second pass's conditioning
is computed with the first pass's in `modules/processing_prompts.py`, where the caches are shared.
A1111's functions (`create_infotext`, `decode_latent_batch`, `images_tensor_to_samples`,
`old_hires_fix_first_pass_dimensions`) are looked up on `modules.processing` when called, so an
extension's replacement there is used.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from modules import rng, shared
from modules.runtime import context
from modules.processing_images import image_to_array, opt_f, sample_to_image
from modules.processing_stages import run_hook

if TYPE_CHECKING:  # annotations only: processing imports this module
    from modules.processing import StableDiffusionProcessingTxt2Img


# --- target size ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HiresTarget:
    """Where the hires fix goes: the upscale size in pixels and the latent crop (cells) per axis."""

    upscale_to_x: int
    upscale_to_y: int
    truncate_x: int = 0
    truncate_y: int = 0


def hires_target(width: int, height: int, hr_scale: float, hr_resize_x: int, hr_resize_y: int) -> HiresTarget:
    """Spec §1.3: scale; one side given → the other from the aspect ratio; both → cover, then crop."""
    if hr_resize_x == 0 and hr_resize_y == 0:
        return HiresTarget(int(width * hr_scale), int(height * hr_scale))
    if hr_resize_y == 0:
        return HiresTarget(hr_resize_x, hr_resize_x * height // width)
    if hr_resize_x == 0:
        return HiresTarget(hr_resize_y * width // height, hr_resize_y)
    if width / height < hr_resize_x / hr_resize_y:
        to_x, to_y = hr_resize_x, hr_resize_x * height // width
    else:
        to_x, to_y = hr_resize_y * width // height, hr_resize_y
    return HiresTarget(to_x, to_y, (to_x - hr_resize_x) // opt_f, (to_y - hr_resize_y) // opt_f)


def old_hires_fix_first_pass_dimensions(width: int, height: int) -> tuple[int, int]:
    """First-pass size of the pre-1.0 hires fix: about 512² area, multiples of 64."""
    desired_pixel_count = 512 * 512
    actual_pixel_count = width * height
    scale = (desired_pixel_count / actual_pixel_count) ** 0.5
    return int(np.ceil(scale * width / 64) * 64), int(np.ceil(scale * height / 64) * 64)


def calculate_target_resolution(p: StableDiffusionProcessingTxt2Img) -> None:
    """Fill `hr_upscale_to_x/y`, `truncate_x/y` and the Hires upscale / Hires resize infotext key."""
    from modules import processing  # A1111 names are looked up there: extensions replace them
    if shared.opts.use_old_hires_fix_width_height and p.applied_old_hires_behavior_to != (p.width, p.height):
        p.hr_resize_x, p.hr_resize_y = p.width, p.height
        p.width, p.height = processing.old_hires_fix_first_pass_dimensions(p.width, p.height)
        p.applied_old_hires_behavior_to = (p.width, p.height)
    if p.hr_resize_x == 0 and p.hr_resize_y == 0:
        p.extra_generation_params["Hires upscale"] = p.hr_scale
    else:
        p.extra_generation_params["Hires resize"] = f"{p.hr_resize_x}x{p.hr_resize_y}"
    target = hires_target(p.width, p.height, p.hr_scale, p.hr_resize_x, p.hr_resize_y)
    p.hr_upscale_to_x, p.hr_upscale_to_y = target.upscale_to_x, target.upscale_to_y
    p.truncate_x, p.truncate_y = target.truncate_x, target.truncate_y


def is_same(value: Any, same_label: str) -> bool:
    """Whether a hires choice means "as the first pass" (unset, empty or the UI's "Use same …" label)."""
    return value in (None, "", same_label)


# --- init -----------------------------------------------------------------------------------------
def init_hires(p: StableDiffusionProcessingTxt2Img) -> None:
    """Hires preparation in `init`: checkpoint, upscale mode, target size, infotext keys (spec §3).

    The keys are added in A1111's order, which is their order in the infotext: Hires checkpoint,
    sampler, prompt, negative prompt, schedule type, then upscale (or resize), steps, upscaler.
    """
    from modules import upscaling
    p.extra_generation_params["Denoising strength"] = p.denoising_strength
    if not is_same(p.hr_checkpoint_name, "Use same checkpoint"):
        from modules import sd_models
        p.hr_checkpoint_info = sd_models.get_checkpoint_info(p.hr_checkpoint_name)
        p.hr_checkpoint_info.calculate_shorthash()  # hashed now rather than at its load in the second pass
        p.extra_generation_params["Hires checkpoint"] = p.hr_checkpoint_info.short_title
    if p.hr_sampler_name is not None and p.hr_sampler_name != p.sampler_name:
        p.extra_generation_params["Hires sampler"] = p.hr_sampler_name
    p.extra_generation_params["Hires prompt"] = _hr_prompt_param
    p.extra_generation_params["Hires negative prompt"] = _hr_negative_prompt_param
    p.extra_generation_params["Hires schedule type"] = None  # the sampler fills it during the second pass
    if p.hr_scheduler is None:
        p.hr_scheduler = p.scheduler
    mode_name = p.hr_upscaler if p.hr_upscaler is not None else upscaling.latent_upscale_default_mode
    p.latent_scale_mode = upscaling.latent_upscale_modes.get(mode_name)
    calculate_target_resolution(p)
    if p.hr_second_pass_steps:
        p.extra_generation_params["Hires steps"] = p.hr_second_pass_steps
    if p.hr_upscaler is not None:
        p.extra_generation_params["Hires upscaler"] = p.hr_upscaler


def _hr_prompt_param(p: StableDiffusionProcessingTxt2Img, index: int, prompt_text: str, **_: Any) -> str | None:
    """Infotext value of Hires prompt: only when it differs from the first-pass prompt."""
    hr_prompt = p.all_hr_prompts[index] if p.all_hr_prompts and index < len(p.all_hr_prompts) else None
    return hr_prompt if hr_prompt != prompt_text else None


def _hr_negative_prompt_param(p: StableDiffusionProcessingTxt2Img, index: int, negative_prompt: str,
                              **_: Any) -> str | None:
    negatives = p.all_hr_negative_prompts
    hr_negative = negatives[index] if negatives and index < len(negatives) else None
    return hr_negative if hr_negative != negative_prompt else None


# --- the second pass ------------------------------------------------------------------------------
def _save_before_highres(p: StableDiffusionProcessingTxt2Img, image: Image.Image, index: int) -> None:
    """Image `index` of this batch before the second pass, with the job's infotext (A1111's
    `save_intermediate`: the prompt keeps its extra-network tags; nothing for a skipped batch)."""
    from modules import images, processing  # A1111 names are looked up on processing: extensions replace them
    opts = shared.opts
    if not p.save_samples() or not opts.save_images_before_highres_fix:
        return
    n = p.iteration * p.batch_size + index
    info = processing.create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, [], iteration=p.iteration,
                                      position_in_batch=index)
    images.save_image(image, p.outpath_samples, "", p.all_seeds[n], p.all_prompts[n], opts.samples_format,
                      info=info, p=p, suffix="-before-highres-fix")


def upscale_for_hires(p: StableDiffusionProcessingTxt2Img, samples: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """First-pass latents → second-pass start latents and image conditioning (latent or image path)."""
    from modules import images, processing, upscaling  # A1111 names are looked up on processing
    width, height = p.hr_upscale_to_x, p.hr_upscale_to_y
    if p.latent_scale_mode is not None:
        mode_name = p.hr_upscaler if p.hr_upscaler is not None else upscaling.latent_upscale_default_mode
        if shared.opts.save_images_before_highres_fix:
            for i, decoded in enumerate(processing.decode_latent_batch(p.sd_model, samples)):
                _save_before_highres(p, sample_to_image(torch.clamp((decoded + 1) / 2, 0, 1)), i)
        upscaled = upscaling.upscale_latent(samples, mode_name, height // opt_f, width // opt_f)
        return upscaled, p.txt2img_image_conditioning(upscaled, width, height)
    decoded = processing.decode_latent_batch(p.sd_model, samples, target_device=torch.device("cpu"),
                                             check_for_nans=True)
    arrays = []
    for i, x_sample in enumerate(decoded):
        image = sample_to_image(torch.clamp((x_sample.float() + 1.0) / 2.0, 0.0, 1.0))
        _save_before_highres(p, image, i)
        arrays.append(image_to_array(images.resize_image(0, image, width, height, upscaler_name=p.hr_upscaler)))
    batch = torch.from_numpy(np.stack(arrays))
    latents = processing.images_tensor_to_samples(batch, p.sd_model)
    return latents, p.img2img_image_conditioning(batch * 2 - 1, latents)


def sample_hr_pass(p: StableDiffusionProcessingTxt2Img, samples: torch.Tensor) -> torch.Tensor:
    """Upscale, crop, fresh noise from the same seeds, second img2img pass; returns decoded images."""
    from modules import processing, sd_models, sd_samplers  # A1111 names are looked up on processing
    if context.active().cancel.interrupted:
        return samples
    previous = None
    if p.hr_checkpoint_info is not None:
        previous = getattr(p.sd_model, "sd_checkpoint_info", None)
        sd_models.reload_model_weights(info=p.hr_checkpoint_info)
    p.is_hr_pass = True
    try:
        samples, image_conditioning = upscale_for_hires(p, samples)
        context.active().progress.next_job()
        ty, tx = p.truncate_y, p.truncate_x
        samples = samples[:, :, ty // 2:samples.shape[2] - (ty + 1) // 2, tx // 2:samples.shape[3] - (tx + 1) // 2]
        p.rng = rng.ImageRNG(samples.shape[1:], p.seeds, subseeds=p.subseeds, subseed_strength=p.subseed_strength,
                             seed_resize_from_h=p.seed_resize_from_h, seed_resize_from_w=p.seed_resize_from_w)
        noise = p.rng.next()
        p.calculate_hr_conds()
        run_hook(p, "before_hr")
        run_hook(p, "process_before_every_sampling", x=samples, noise=noise, c=p.hr_c, uc=p.hr_uc)
        samples = _second_pass(p, sd_samplers, samples, noise, image_conditioning)
        decoded = torch.stack(processing.decode_latent_batch(p.sd_model, samples, target_device=torch.device("cpu"),
                                                             check_for_nans=True))
    finally:
        p.is_hr_pass = False
        if previous is not None:
            sd_models.reload_model_weights(info=previous)
    decoded.already_decoded = True
    return decoded


def _second_pass(p: StableDiffusionProcessingTxt2Img, sd_samplers: Any, samples: torch.Tensor, noise: torch.Tensor,
                 image_conditioning: Any) -> torch.Tensor:
    """The img2img pass with the hires sampler/scheduler visible on `p` while it runs."""
    first = (p.sampler_name, p.scheduler)
    p.sampler_name = p.hr_sampler_name or p.sampler_name
    p.scheduler = p.hr_scheduler or p.scheduler
    try:
        p.sampler = sd_samplers.create_sampler(p.sampler_name, p.sd_model)
        return p.sampler.sample_img2img(p, samples, noise, p.hr_c, p.hr_uc, steps=p.hr_second_pass_steps or p.steps,
                                        image_conditioning=image_conditioning)
    finally:
        p.sampler_name, p.scheduler = first
        p.sampler = None
