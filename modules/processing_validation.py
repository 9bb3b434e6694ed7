"""Request checks: reject what Serena cannot run before anything runs (spec §1.3, §6).

`process_images` calls :func:`validate` once per job, with the job's options in effect. Each
problem raises `errors.InvalidParameter` (or `UnknownSampler`, `UnknownScheduler`, `InvalidImage`)
naming the field, the rule and the offending value. The checks of all modes live together so the
limits read in one place (the prompt rules: :func:`validate_prompts`, :func:`validate_prompt_counts`);
the few normalisations a check implies (sampler and scheduler names resolved, "Use same …" hires
choices cleared, `batch_size` raised to the number of init images) happen here too.
`modules.processing` re-exports these names.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from modules import errors, prompt_parser, shared
from modules.processing_hires import hires_target, is_same
from modules.text_conditioner import check_unicode

if TYPE_CHECKING:  # annotations only: processing imports this module
    from modules.processing import (StableDiffusionProcessing, StableDiffusionProcessingImg2Img,
                                    StableDiffusionProcessingTxt2Img)

MIN_SIZE = 64
MAX_SIZE = 2048
MAX_HIRES_SIZE = 4096
NO_REFINER = (None, "", "None", "none")
PROMPT_FIELDS = ("prompt", "negative_prompt")
HIRES_PROMPT_FIELDS = ("hr_prompt", "hr_negative_prompt")
MAX_BRACKET_DEPTH = prompt_parser.MAX_NESTING
"""The deepest bracket nesting a prompt may have (100): each `(` multiplies by 1.1, so the weight
bound (`prompt_parser.MAX_ATTENTION_WEIGHT`) is reached at 49 levels and deeper nesting only costs
parsing time; the prompt-editing parser reads deeper prompts literally."""


def _check_int(value: Any, name: str, low: int, high: int | None = None, multiple: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise errors.InvalidParameter(f"{name} must be an integer, got {value!r}", field=name)
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise errors.InvalidParameter(f"{name} must be {bounds}, got {value}", field=name)
    if value % multiple:
        raise errors.InvalidParameter(f"{name} must be a multiple of {multiple}, got {value}", field=name)


def _check_number(value: Any, name: str, low: float | None = None, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or value != value:
        raise errors.InvalidParameter(f"{name} must be a number, got {value!r}", field=name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise errors.InvalidParameter(f"{name} must be between {low} and {high}, got {value}", field=name)


def validate(p: StableDiffusionProcessing) -> None:
    """Reject requests Serena cannot run, naming the field, the rule and the value.

    Raises:
        errors.InvalidParameter (UnknownSampler, UnknownScheduler, InvalidImage): the first problem found.
    """
    from modules.processing import StableDiffusionProcessingImg2Img, StableDiffusionProcessingTxt2Img  # lazy
    _check_int(p.width, "width", MIN_SIZE, MAX_SIZE, multiple=8)
    _check_int(p.height, "height", MIN_SIZE, MAX_SIZE, multiple=8)
    _check_int(p.steps, "steps", 1, max(int(shared.opts.api_max_steps), 1))
    _check_int(p.batch_size, "batch_size", 1)
    _check_int(p.n_iter, "n_iter", 1)
    _check_number(p.cfg_scale, "cfg_scale", 0.0, 100.0)
    _check_number(p.subseed_strength, "subseed_strength", 0.0, 1.0)
    if p.denoising_strength is not None:
        _check_number(p.denoising_strength, "denoising_strength", 0.0, 1.0)
    validate_prompts(p)
    validate_refiner(p)
    _normalise_sampler(p)
    if isinstance(p, StableDiffusionProcessingTxt2Img) and p.enable_hr:
        validate_hires(p)
    if isinstance(p, StableDiffusionProcessingImg2Img):
        validate_img2img(p)
    validate_prompt_counts(p)  # after validate_img2img, which may raise batch_size


def validate_refiner(p: StableDiffusionProcessing) -> None:
    """Resolve `refiner_checkpoint` into `p.refiner_checkpoint_info` (any checkpoint alias; "", "None"
    or null: no refiner) and check `refiner_switch_at` (a fraction 0..1, or null: switch at once)."""
    p.refiner_checkpoint_info = None
    if p.refiner_checkpoint in NO_REFINER:
        return
    from modules import sd_models  # lazy: model code loads on first use
    if not isinstance(p.refiner_checkpoint, str):
        raise errors.InvalidParameter(f"refiner_checkpoint must be a checkpoint name, got {p.refiner_checkpoint!r}",
                                      field="refiner_checkpoint")
    info = sd_models.get_closet_checkpoint_match(p.refiner_checkpoint)
    if info is None:
        known = ", ".join(repr(t) for t in sd_models.checkpoints_list) or "none"
        raise errors.InvalidParameter(f"refiner checkpoint {p.refiner_checkpoint!r} not found; known checkpoints: {known}",
                                      field="refiner_checkpoint")
    if p.refiner_switch_at is not None:
        _check_number(p.refiner_switch_at, "refiner_switch_at", 0.0, 1.0)
    p.refiner_checkpoint_info = info


def _uses_hires(p: StableDiffusionProcessing) -> bool:
    return bool(getattr(p, "enable_hr", False)) and all(hasattr(p, name) for name in HIRES_PROMPT_FIELDS)


def validate_prompts(p: StableDiffusionProcessing) -> None:
    """Prompt text fields: a string or a non-empty list of strings, valid Unicode, brackets at most
    `MAX_BRACKET_DEPTH` deep; `styles` a list of names in valid Unicode.

    The hires prompts are held to the same rules when the hires fix is on; otherwise they are unused
    and only a text given there must be valid Unicode. An empty list is refused: A1111 reads the
    first entry of each list (and fails on an empty one), so it has no meaning to keep.
    """
    for name in PROMPT_FIELDS + (HIRES_PROMPT_FIELDS if _uses_hires(p) else ()):
        for label, text in _prompt_texts(getattr(p, name), name):
            _check_prompt_text(text, name, label)
    if not _uses_hires(p):  # unused then; a text given there must still be valid Unicode
        for name in HIRES_PROMPT_FIELDS:
            value = getattr(p, name, "")
            texts = [value] if isinstance(value, str) else value if isinstance(value, list) else []
            for i, text in enumerate(texts):
                if isinstance(text, str):
                    check_unicode(text, name, f"{name}[{i}]" if isinstance(value, list) else name)
    styles = p.styles
    if not isinstance(styles, (list, tuple)) or not all(isinstance(x, str) for x in styles):
        raise errors.InvalidParameter(f"styles must be a list of style names, got {styles!r:.200}", field="styles")
    for i, style in enumerate(styles):
        check_unicode(style, "styles", f"styles[{i}]")


def _prompt_texts(value: Any, name: str) -> list[tuple[str, str]]:
    """`(label, text)` of each text of a prompt field; raises unless it is a string or a non-empty list of them."""
    if isinstance(value, str):
        return [(name, value)]
    if isinstance(value, list) and not value:
        raise errors.InvalidParameter(
            f"{name} is an empty list; give a string, or a list with one prompt per image", field=name)
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise errors.InvalidParameter(f"{name} must be a string or a list of strings, got {value!r:.200}", field=name)
    return [(f"{name}[{i}]", text) for i, text in enumerate(value)]


def _check_prompt_text(text: str, name: str, label: str) -> None:
    """Valid Unicode, and brackets (outside `#` comments when those are on) at most `MAX_BRACKET_DEPTH` deep."""
    check_unicode(text, name, label)
    if shared.opts.enable_prompt_comments:
        text = prompt_parser.strip_comments(text)
    depth = prompt_parser.bracket_depth(text)
    if depth > MAX_BRACKET_DEPTH:
        raise errors.InvalidParameter(
            f"{label} nests brackets {depth} levels deep; at most {MAX_BRACKET_DEPTH} are allowed", field=name)


def validate_prompt_counts(p: StableDiffusionProcessing) -> None:
    """Prompt lists that fit the job (A1111's rules, with the cases A1111 crashes on refused).

    A `prompt` list sets the number of images (`negative_prompt`'s, when only that is a list), at
    most `batch_size * n_iter`; both lists must then have the same length. txt2img makes a smaller
    last batch for a count that is not a multiple of `batch_size`; img2img cannot (its init images
    fill whole batches), so there it is refused. Hires lists need one entry per image (more are
    ignored, as in A1111) and the same length as each other.
    """
    prompt, negative = p.prompt, p.negative_prompt
    if isinstance(prompt, list) and isinstance(negative, list) and len(prompt) != len(negative):
        raise errors.InvalidParameter(
            f"got {len(prompt)} prompts and {len(negative)} negative prompts; the lists must have the same length",
            field="negative_prompt")
    source = "prompt" if isinstance(prompt, list) else "negative_prompt" if isinstance(negative, list) else None
    count = len(getattr(p, source)) if source else p.batch_size * p.n_iter
    images = min(count, p.batch_size * p.n_iter)
    from modules.processing import StableDiffusionProcessingImg2Img  # lazy: processing imports this module
    if isinstance(p, StableDiffusionProcessingImg2Img) and images % p.batch_size:
        raise errors.InvalidParameter(
            f"{source} has {count} entries, which leaves a last batch of {images % p.batch_size} images; img2img "
            f"needs whole batches of batch_size={p.batch_size}", field=source)
    if _uses_hires(p):
        _validate_hires_prompt_counts(p, images)


def _validate_hires_prompt_counts(p: StableDiffusionProcessingTxt2Img, images: int) -> None:
    """`hr_prompt` / `hr_negative_prompt` lists ("" means the first-pass field): same length, >= images."""
    hr_prompt = p.prompt if p.hr_prompt == "" else p.hr_prompt
    hr_negative = p.negative_prompt if p.hr_negative_prompt == "" else p.hr_negative_prompt
    blamed = "hr_negative_prompt" if isinstance(p.hr_negative_prompt, list) else "hr_prompt"
    if isinstance(hr_prompt, list) and isinstance(hr_negative, list) and len(hr_prompt) != len(hr_negative):
        raise errors.InvalidParameter(
            f"got {len(hr_prompt)} hires prompts and {len(hr_negative)} hires negative prompts; the lists must "
            f"have the same length", field=blamed)
    for name, value in (("hr_prompt", p.hr_prompt), ("hr_negative_prompt", p.hr_negative_prompt)):
        if isinstance(value, list) and len(value) < images:
            raise errors.InvalidParameter(
                f"{name} has {len(value)} entries for {images} images; give one per image", field=name)


def _normalise_sampler(p: StableDiffusionProcessing) -> None:
    """Resolve sampler and scheduler names (spec §6); unknown names raise with the valid ones."""
    from modules import sd_samplers
    name = p.sampler_name or (p.sampler_index if isinstance(p.sampler_index, str) else None)
    p.sampler_name, p.scheduler = sd_samplers.get_sampler_and_scheduler(name, p.scheduler)


def validate_hires(p: StableDiffusionProcessingTxt2Img) -> None:
    """Hires fix fields: denoising strength present, upscaler known, target size within limits."""
    from modules import sd_samplers, upscaling
    if p.denoising_strength is None:
        raise errors.InvalidParameter("enable_hr needs denoising_strength (0..1), got None", field="denoising_strength")
    _check_number(p.hr_scale, "hr_scale", 1.0, 8.0)
    _check_int(p.hr_resize_x, "hr_resize_x", 0, MAX_HIRES_SIZE)
    _check_int(p.hr_resize_y, "hr_resize_y", 0, MAX_HIRES_SIZE)
    _check_int(p.hr_second_pass_steps, "hr_second_pass_steps", 0, max(int(shared.opts.api_max_steps), 1))
    if p.hr_upscaler is not None and p.hr_upscaler not in upscaling.latent_upscale_modes:
        upscaling.find_upscaler(p.hr_upscaler)
    target = hires_target(p.width, p.height, p.hr_scale, p.hr_resize_x, p.hr_resize_y)
    for name, value in (("hires width", target.upscale_to_x), ("hires height", target.upscale_to_y)):
        if not MIN_SIZE <= value <= MAX_HIRES_SIZE:
            raise errors.InvalidParameter(f"{name} must be between {MIN_SIZE} and {MAX_HIRES_SIZE}, got {value}",
                                          field="hr_scale")
    if is_same(p.hr_sampler_name, "Use same sampler"):
        p.hr_sampler_name = None
    if is_same(p.hr_scheduler, "Use same scheduler"):
        p.hr_scheduler = None
    if p.hr_sampler_name is not None or p.hr_scheduler is not None:
        p.hr_sampler_name, p.hr_scheduler = sd_samplers.get_sampler_and_scheduler(
            p.hr_sampler_name or p.sampler_name, p.hr_scheduler or p.scheduler)


def validate_img2img(p: StableDiffusionProcessingImg2Img) -> None:
    """img2img fields: images decoded, modes known, blur/padding non-negative, image count vs batch."""
    if not p.init_images:
        raise errors.InvalidImage(f"img2img needs at least one init image, got {p.init_images!r}", field="init_images")
    for i, image in enumerate(p.init_images):
        if not isinstance(image, Image.Image) or image.width < 1 or image.height < 1:
            raise errors.InvalidImage(f"init_images[{i}] is not a decoded image: {type(image).__name__}",
                                      field="init_images")
    if p.image_mask is not None and not isinstance(p.image_mask, Image.Image):
        raise errors.InvalidImage(f"mask is not a decoded image: {type(p.image_mask).__name__}", field="mask")
    _check_int(p.resize_mode, "resize_mode", 0, 3)
    _check_int(int(p.inpainting_fill), "inpainting_fill", 0, 3)
    _check_number(p.mask_blur_x, "mask_blur_x", 0, 256)
    _check_number(p.mask_blur_y, "mask_blur_y", 0, 256)
    _check_int(int(p.inpaint_full_res_padding), "inpaint_full_res_padding", 0, 4096)
    if p.initial_noise_multiplier is not None:
        _check_number(p.initial_noise_multiplier, "initial_noise_multiplier", 0.0, 10.0)
    count = len(p.init_images)
    if count > p.batch_size:
        raise errors.InvalidParameter(f"bad number of images passed: {count}; expecting {p.batch_size} or less",
                                      field="init_images")
    if count > 1:
        p.batch_size = count
