"""Which keys a job's infotext holds, and in what order (spec §3): `create_infotext`.

`modules/infotext_utils.py` owns the format (quoting, writing, parsing); this module decides the
content from a processing object: the base keys 1–26 in spec order, then the job's
`extra_generation_params` (hires, img2img and script keys, in the order they were added), then
`Version` and `User`. It also holds the version string that `Version` and `Processed.version`
carry. `modules.processing` re-exports `create_infotext`, `SERENA_VERSION` and `program_version`;
`create_infotext` calls `program_version` through `modules.processing`, as A1111's does, so an
extension that replaces it there changes the `Version` key.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from modules import shared

if TYPE_CHECKING:  # annotations only: processing imports this module
    from modules.processing import StableDiffusionProcessing

log = logging.getLogger(__name__)

SERENA_VERSION = "v0.0.10-m10"
"""The `Version` infotext value and `Processed.version`."""


def program_version() -> str:
    """The version written into infotexts and `Processed.version`."""
    return SERENA_VERSION


def _uses_ensd(p: StableDiffusionProcessing) -> bool:
    if shared.opts.eta_noise_seed_delta == 0:
        return False
    try:
        from modules import sd_samplers_common
        return bool(sd_samplers_common.is_sampler_using_eta_noise_seed_delta(p))
    except (ImportError, AttributeError):
        try:
            from modules import sd_samplers
            config = sd_samplers.find_sampler_config(p.sampler_name)
            return bool((getattr(config, "options", None) or {}).get("uses_ensd", False))
        except Exception:
            return True


def _base_params(p: StableDiffusionProcessing, index: int, use_main_prompt: bool, all_seeds: list,
                 all_subseeds: list) -> dict[str, Any]:
    """Keys 1–26 of spec §3, in order (values None are dropped when the text is built)."""
    opts = shared.opts
    clip_skip = int(getattr(p, "clip_skip", opts.CLIP_stop_at_last_layers))
    varied = p.subseed_strength != 0
    fp8 = opts.fp8_storage != "Disable"
    tm, tm_hr = p.get_token_merging_ratio(), p.get_token_merging_ratio(for_hr=True)
    return {
        "Steps": p.steps,
        "Sampler": p.sampler_name,
        "Schedule type": p.scheduler,
        "CFG scale": p.cfg_scale,
        "Image CFG scale": getattr(p, "image_cfg_scale", None),
        "Seed": p.all_seeds[0] if use_main_prompt else all_seeds[index],
        "Face restoration": opts.face_restoration_model if p.restore_faces else None,
        "Size": f"{p.width}x{p.height}",
        "Model hash": p.sd_model_hash if opts.add_model_hash_to_info else None,
        "Model": p.sd_model_name if opts.add_model_name_to_info else None,
        "FP8 weight": opts.fp8_storage if fp8 else None,
        "Cache FP16 weight for LoRA": opts.cache_fp16_weight if fp8 else None,
        "VAE hash": p.sd_vae_hash if getattr(opts, "add_vae_hash_to_info", True) else None,
        "VAE": p.sd_vae_name if getattr(opts, "add_vae_name_to_info", True) else None,
        "Variation seed": (p.all_subseeds[0] if use_main_prompt else all_subseeds[index]) if varied else None,
        "Variation seed strength": p.subseed_strength if varied else None,
        "Seed resize from": None if p.seed_resize_from_w <= 0 or p.seed_resize_from_h <= 0
        else f"{p.seed_resize_from_w}x{p.seed_resize_from_h}",
        "Denoising strength": p.extra_generation_params.get("Denoising strength"),
        "Conditional mask weight": getattr(p, "inpainting_mask_weight", opts.inpainting_mask_weight)
        if p.is_using_inpainting_conditioning else None,
        "Clip skip": None if clip_skip <= 1 else clip_skip,
        "ENSD": opts.eta_noise_seed_delta if _uses_ensd(p) else None,
        "Token merging ratio": None if tm == 0 else tm,
        "Token merging ratio hr": None if not getattr(p, "enable_hr", False) or tm_hr == 0 else tm_hr,
        "Init image hash": getattr(p, "init_img_hash", None),
        "RNG": opts.randn_source if opts.randn_source != "GPU" else None,
        "Tiling": "True" if p.tiling else None,
    }


def _resolve_param(key: str, value: Any, index: int, context: dict[str, Any]) -> Any:
    """A list value is indexed per image; a callable gets the infotext context (A1111 locals)."""
    try:
        if isinstance(value, list):
            return value[index] if index < len(value) else None
        if callable(value):
            return value(**context)
    except Exception:
        log.exception("error creating infotext value for %r", key)
        return None
    return value


def create_infotext(p: StableDiffusionProcessing, all_prompts: list[str], all_seeds: list[int],
                    all_subseeds: list[int], comments: Any = None, iteration: int = 0, position_in_batch: int = 0,
                    use_main_prompt: bool = False, index: int | None = None,
                    all_negative_prompts: list[str] | None = None) -> str:
    """The infotext of one image: prompt, negative prompt and the spec §3 keys in order."""
    from modules import infotext_utils, processing  # A1111 names are looked up on processing
    if index is None:
        index = position_in_batch + iteration * p.batch_size
    if all_negative_prompts is None:
        all_negative_prompts = p.all_negative_prompts
    prompt_text = p.main_prompt if use_main_prompt else all_prompts[index]
    negative_prompt = p.main_negative_prompt if use_main_prompt else all_negative_prompts[index]
    params = _base_params(p, index, use_main_prompt, all_seeds, all_subseeds)
    params.update(p.extra_generation_params)
    params["Version"] = processing.program_version() if shared.opts.add_version_to_infotext else None
    params["User"] = p.user if shared.opts.add_user_name_to_info else None
    context = {"p": p, "index": index, "prompt_text": prompt_text, "negative_prompt": negative_prompt,
               "all_prompts": all_prompts, "all_seeds": all_seeds, "all_subseeds": all_subseeds,
               "iteration": iteration, "position_in_batch": position_in_batch,
               "use_main_prompt": use_main_prompt, "generation_params": params, "comments": comments}
    params = {key: _resolve_param(key, value, index, context) for key, value in params.items()}
    return infotext_utils.build_infotext(prompt_text, negative_prompt or "", params)
