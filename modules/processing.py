"""A1111's generation surface (spec §2): the processing dataclasses, `Processed`, `process_images`.

`process_images(p)` validates the request, fires `before_process`, makes the job's
`override_settings` effective for this context only, and hands `p` to the execution surface,
`ProcessingRunner().run(ProcessingRequest(p))` (`modules/runtime/runner.py`), which calls
`process_images_inner(p)`: no other product code calls it. `process_images_inner` reads as
the numbered stages of spec §2.3; each stage is a function that can be tested alone.

This module keeps what extensions build and receive (the processing classes, `Processed`) and the
two entry points; the work lives in one module per concern, each A1111 name re-exported here:

- `processing_stages.py`: the stages `process_images_inner` calls, in order, and `JobOutput`;
- `processing_prompts.py`: prompts per image, extra-network tags, text conditioning (both passes);
- `processing_hires.py`: txt2img's hires fix, behind `StableDiffusionProcessingTxt2Img.init`/`sample`;
- `processing_img2img.py`: img2img and inpainting, behind `StableDiffusionProcessingImg2Img.init`/`sample`;
- `processing_images.py`: latents ↔ pixels, overlay and colour correction (pure helpers);
- `processing_infotext.py`: which infotext keys, in which order, and the version string;
- `processing_validation.py`: the request checks `process_images` runs before anything else.

Per-run state lives on `p` (A1111 extensions read and write it there); what a job produces is
gathered in a :class:`JobOutput` and turned into a :class:`Processed` at the end.

Extensions replace A1111's functions here (`modules.processing.create_infotext = my_fn`). Every
A1111 name this module exposes (`A1111_FUNCTIONS`) is therefore looked up on this module when it
is called — by the code here through its globals, by the stage modules through a call-time
`from modules import processing` — so the replacement is the one the pipeline uses.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from PIL import Image

from modules import processing_img2img, rng, sd_hijack, sd_tiling, shared
from modules.masking import create_binary_mask  # noqa: F401  (A1111 name)
from modules.processing_hires import (HiresTarget, calculate_target_resolution, hires_target, init_hires,  # noqa: F401
                                      old_hires_fix_first_pass_dimensions, sample_hr_pass, upscale_for_hires)
from modules.processing_images import (apply_color_correction, apply_overlay, decode_first_stage,  # noqa: F401
                                       decode_latent_batch, image_to_array, images_tensor_to_samples, lab_to_rgb,
                                       match_histogram, opt_C, opt_f, rgb_to_lab, sample_to_image,
                                       setup_color_correction, uncrop)
from modules.processing_img2img import (init_img2img, prepare_inpaint_mask, sample_img2img,  # noqa: F401
                                        txt2img_image_conditioning)
from modules.processing_infotext import SERENA_VERSION, create_infotext, program_version  # noqa: F401
from modules.processing_prompts import (calculate_hr_conds, expand_prompts, parse_extra_networks,  # noqa: F401
                                        sampler_total_steps, setup_conds)
from modules.processing_stages import (JobOutput, begin_batch, compute_seeds, decode_batch, finish_image,  # noqa: F401
                                       fix_seed, make_grid, postprocess_batch, prepare_job, run_batch, run_hook,
                                       set_job_count, write_params_txt)
from modules.processing_validation import (MAX_HIRES_SIZE, MAX_SIZE, MIN_SIZE, NO_REFINER, validate,  # noqa: F401
                                           validate_hires, validate_img2img)
from modules.rng import create_random_tensors, get_fixed_seed, slerp  # noqa: F401  (A1111 names)
from modules.runtime import context
from modules.runtime.runner import ProcessingRequest, ProcessingRunner

log = logging.getLogger(__name__)


# --- the processing dataclasses ------------------------------------------------------------------
@dataclass(repr=False)
class StableDiffusionProcessing:
    """One generation request plus its per-run state (A1111 field names and defaults, spec §1.3/§2.1).

    Init fields are the request. Fields with `init=False` are filled while the job runs:
    seeds/prompts in stage 1–3 of `process_images_inner`, per-batch slices at the start of each
    batch, `c`/`uc` by `setup_conds`, `rng` per batch, `sampler` by `sample`/`init`.
    """

    sd_model: object = None
    outpath_samples: str | None = None
    outpath_grids: str | None = None
    prompt: str | list[str] = ""
    styles: list[str] | None = None
    seed: int | list[int] = -1
    subseed: int | list[int] = -1
    subseed_strength: float = 0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    seed_enable_extras: bool = True
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    extra_generation_params: dict[str, Any] | None = None
    overlay_images: list | None = None
    negative_prompt: str | list[str] | None = ""
    eta: float | None = None
    do_not_reload_embeddings: bool = False
    denoising_strength: float | None = None
    ddim_discretize: str | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    sampler_index: int | str | None = None
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    token_merging_ratio: float = 0
    token_merging_ratio_hr: float = 0
    disable_extra_networks: bool = False
    firstpass_image: Image.Image | None = None
    prompt_for_display: str | None = None
    comments: dict[str, int] | None = None
    is_api: bool = False

    scripts_value: Any = field(default=None, init=False)
    script_args_value: list | None = field(default=None, init=False)
    scripts_setup_complete: bool = field(default=False, init=False)

    cached_uc: ClassVar[list] = [None, None]
    cached_c: ClassVar[list] = [None, None]

    sampler: Any = field(default=None, init=False)
    is_using_inpainting_conditioning: bool = field(default=False, init=False)
    paste_to: tuple | None = field(default=None, init=False)
    is_hr_pass: bool = field(default=False, init=False)
    c: Any = field(default=None, init=False)
    uc: Any = field(default=None, init=False)
    rng: rng.ImageRNG | None = field(default=None, init=False)
    step_multiplier: int = field(default=1, init=False)
    color_corrections: list | None = field(default=None, init=False)
    all_prompts: list[str] | None = field(default=None, init=False)
    all_negative_prompts: list[str] | None = field(default=None, init=False)
    all_seeds: list[int] | None = field(default=None, init=False)
    all_subseeds: list[int] | None = field(default=None, init=False)
    iteration: int = field(default=0, init=False)
    main_prompt: str | None = field(default=None, init=False)
    main_negative_prompt: str | None = field(default=None, init=False)
    prompts: list[str] | None = field(default=None, init=False)
    negative_prompts: list[str] | None = field(default=None, init=False)
    seeds: list[int] | None = field(default=None, init=False)
    subseeds: list[int] | None = field(default=None, init=False)
    extra_network_data: dict | None = field(default=None, init=False)
    user: str | None = field(default=None, init=False)
    sd_model_name: str | None = field(default=None, init=False)
    sd_model_hash: str | None = field(default=None, init=False)
    sd_vae_name: str | None = field(default=None, init=False)
    sd_vae_hash: str | None = field(default=None, init=False)
    batch_index: int = field(default=0, init=False)
    firstpass_steps: int | None = field(default=None, init=False)
    refiner_checkpoint_info: Any = field(default=None, init=False)
    sampler_noise_scheduler_override: Any = field(default=None, init=False)
    mask_for_overlay: Image.Image | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.sampler_index is not None:
            log.warning("sampler_index argument for StableDiffusionProcessing does not do anything; use sampler_name")
        self.styles = list(self.styles or [])
        self.negative_prompt = "" if self.negative_prompt is None else self.negative_prompt
        self.extra_generation_params = dict(self.extra_generation_params or {})
        self.override_settings = dict(self.override_settings or {})
        self.comments = {}  # a request's comments are discarded (A1111)
        if not self.seed_enable_extras:
            self.subseed, self.subseed_strength = -1, 0
            self.seed_resize_from_h, self.seed_resize_from_w = 0, 0

    # A1111 keeps `sd_model` as an init argument but always reads the loaded model.
    @property
    def sd_model(self) -> Any:  # noqa: F811  (replaces the init field, as in A1111)
        return shared.sd_model

    @sd_model.setter
    def sd_model(self, value: Any) -> None:
        pass

    @property
    def scripts(self) -> Any:
        return self.scripts_value

    @scripts.setter
    def scripts(self, value: Any) -> None:
        self.scripts_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    @property
    def script_args(self) -> list | None:
        return self.script_args_value

    @script_args.setter
    def script_args(self, value: list | None) -> None:
        self.script_args_value = value
        if self.scripts_value and self.script_args_value and not self.scripts_setup_complete:
            self.setup_scripts()

    def setup_scripts(self) -> None:
        """Run the AlwaysVisible scripts' `setup` once (UI-only scripts are skipped for the API)."""
        self.scripts_setup_complete = True
        self.scripts.setup_scrips(self, is_ui=not self.is_api)

    def comment(self, text: str) -> None:
        """Add a line to `Processed.comments` (each text once)."""
        self.comments[text] = 1

    def get_token_merging_ratio(self, for_hr: bool = False) -> float:
        """The requested token-merging ratio (recorded only: Serena applies no token merging yet)."""
        if for_hr:
            return self.token_merging_ratio_hr or shared.opts.token_merging_ratio_hr or self.token_merging_ratio \
                or shared.opts.token_merging_ratio
        return self.token_merging_ratio or shared.opts.token_merging_ratio

    def fill_fields_from_opts(self) -> None:
        """Sampler knobs left as None take the option values (spec §1.3)."""
        opts = shared.opts
        self.s_min_uncond = self.s_min_uncond if self.s_min_uncond is not None else opts.s_min_uncond
        self.s_churn = self.s_churn if self.s_churn is not None else opts.s_churn
        self.s_tmin = self.s_tmin if self.s_tmin is not None else opts.s_tmin
        self.s_tmax = (self.s_tmax if self.s_tmax is not None else opts.s_tmax) or float("inf")
        self.s_noise = self.s_noise if self.s_noise is not None else opts.s_noise

    def setup_prompts(self) -> None:
        """Expand prompts to one per image, apply styles and strip `#` comments (spec §4 steps 1–2)."""
        self.all_prompts, self.all_negative_prompts = expand_prompts(
            self.prompt, self.negative_prompt, self.batch_size * self.n_iter, self.styles)
        self.main_prompt = self.all_prompts[0]
        self.main_negative_prompt = self.all_negative_prompts[0]

    def cached_params(self, required_prompts: list[str], steps: int, extra_network_data: Any,
                      hires_steps: int | None = None, use_old_scheduling: bool = False) -> tuple:
        """Everything that changes the conditioning of `required_prompts`: the cache key."""
        opts = shared.opts
        model = self.sd_model
        return (tuple(required_prompts), steps, hires_steps, use_old_scheduling, opts.CLIP_stop_at_last_layers,
                id(model), getattr(model, "sd_model_hash", None), repr(extra_network_data), self.width,
                self.height, opts.emphasis, opts.comma_padding_backtrack, opts.fp8_storage, _patched_text_encoder(),
                opts.sdxl_crop_left, opts.sdxl_crop_top, opts.sdxl_clip_l_skip, opts.sdxl_refiner_low_aesthetic_score,
                opts.sdxl_refiner_high_aesthetic_score)

    def get_conds_with_caching(self, function: Callable, required_prompts: list[str], steps: int,
                               caches: list[list], extra_network_data: Any, hires_steps: int | None = None) -> Any:
        """`function(model, prompts, steps, hires_steps, use_old_scheduling)`, reused when nothing changed."""
        use_old = bool(shared.opts.use_old_scheduling)
        key = self.cached_params(required_prompts, steps, extra_network_data, hires_steps, use_old)
        for cache in caches:
            if cache[0] is not None and cache[0] == key:
                return cache[1]
        cache = caches[0]
        cache[1] = function(self.sd_model, required_prompts, steps, hires_steps, use_old)
        cache[0] = key
        return cache[1]

    def setup_conds(self) -> None:
        """Text conditioning of this batch's prompts (`uc` plain, `c` multicond), cached; then the
        notes left on `sd_hijack.model_hijack` join the job's infotext (`merge_hijack_notes`), at
        the point of A1111's batch loop where it merges them."""
        setup_conds(self)
        merge_hijack_notes(self)

    def get_conds(self) -> tuple[Any, Any]:
        """This batch's (conditioning, unconditional conditioning)."""
        return self.c, self.uc

    def parse_extra_network_prompts(self) -> None:
        """Strip `<name:args>` tags from this batch's prompts into `extra_network_data`."""
        self.prompts, self.extra_network_data = parse_extra_networks(self.prompts)

    def save_samples(self) -> bool:
        """Whether this batch's images go to disk (never the images of a cancelled batch)."""
        opts = shared.opts
        incomplete = context.active().cancel.stop_now
        return bool(opts.samples_save and not self.do_not_save_samples
                    and (getattr(opts, "save_incomplete_images", False) or not incomplete))

    def init(self, all_prompts: list[str], all_seeds: list[int], all_subseeds: list[int]) -> None:
        """Mode-specific preparation before the batch loop (stage 6)."""

    def sample(self, conditioning: Any, unconditional_conditioning: Any, seeds: list[int], subseeds: list[int],
               subseed_strength: float, prompts: list[str]) -> torch.Tensor:
        """Latents of this batch (subclasses); may return decoded images flagged `already_decoded`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement sample()")

    def close(self) -> None:
        """Drop per-job state; the condition caches too unless `persistent_cond_cache`."""
        self.sampler = None
        self.c = None
        self.uc = None
        if not shared.opts.persistent_cond_cache:
            for owner in (StableDiffusionProcessing, StableDiffusionProcessingTxt2Img):
                for name in ("cached_c", "cached_uc", "cached_hr_c", "cached_hr_uc"):
                    if name in vars(owner):
                        setattr(owner, name, [None, None])

    def txt2img_image_conditioning(self, x: torch.Tensor, width: int | None = None,
                                   height: int | None = None) -> torch.Tensor | None:
        """Image conditioning for an inpainting model with nothing to keep (a grey image, mask 1)."""
        if processing_img2img.is_inpainting_model(self.sd_model):
            self.is_using_inpainting_conditioning = True
        return txt2img_image_conditioning(self.sd_model, x, width or self.width, height or self.height)

    def img2img_image_conditioning(self, source_image: torch.Tensor, latent_image: torch.Tensor,
                                   image_mask: Image.Image | torch.Tensor | None = None,
                                   round_image_mask: bool = True) -> torch.Tensor | None:
        """Inpainting-model conditioning: the masked source encoded, with the mask at latent size."""
        return processing_img2img.img2img_image_conditioning(self, source_image, latent_image, image_mask,
                                                             round_image_mask)


@dataclass(repr=False)
class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    """txt2img with the optional hires fix (spec §1.3 txt2img fields)."""

    enable_hr: bool = False
    denoising_strength: float | None = 0.75
    firstphase_width: int = 0
    firstphase_height: int = 0
    hr_scale: float = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | list[str] = ""
    hr_negative_prompt: str | list[str] = ""
    force_task_id: str | None = None

    cached_hr_uc: ClassVar[list] = [None, None]
    cached_hr_c: ClassVar[list] = [None, None]

    hr_checkpoint_info: Any = field(default=None, init=False)
    hr_upscale_to_x: int = field(default=0, init=False)
    hr_upscale_to_y: int = field(default=0, init=False)
    truncate_x: int = field(default=0, init=False)
    truncate_y: int = field(default=0, init=False)
    applied_old_hires_behavior_to: tuple | None = field(default=None, init=False)
    latent_scale_mode: Any = field(default=None, init=False)
    hr_c: Any = field(default=None, init=False)
    hr_uc: Any = field(default=None, init=False)
    all_hr_prompts: list[str] | None = field(default=None, init=False)
    all_hr_negative_prompts: list[str] | None = field(default=None, init=False)
    hr_prompts: list[str] | None = field(default=None, init=False)
    hr_negative_prompts: list[str] | None = field(default=None, init=False)
    hr_extra_network_data: dict | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.firstphase_width != 0 or self.firstphase_height != 0:
            self.hr_upscale_to_x, self.hr_upscale_to_y = self.width, self.height
            self.width, self.height = self.firstphase_width, self.firstphase_height

    def calculate_target_resolution(self) -> None:
        """Hires target size from hr_scale or hr_resize_x/y (spec §1.3), with the crop for both."""
        calculate_target_resolution(self)

    def setup_prompts(self) -> None:
        """First-pass prompts, then the hires prompts ("" means the first-pass prompt)."""
        super().setup_prompts()
        if not self.enable_hr:
            return
        hr_prompt = self.prompt if self.hr_prompt == "" else self.hr_prompt
        hr_negative = self.negative_prompt if self.hr_negative_prompt == "" else self.hr_negative_prompt
        self.all_hr_prompts, self.all_hr_negative_prompts = expand_prompts(
            hr_prompt, hr_negative, len(self.all_prompts), self.styles)

    def parse_extra_network_prompts(self) -> None:
        """First-pass and hires prompts of this batch, extra-network tags removed."""
        super().parse_extra_network_prompts()
        if self.enable_hr:
            n = self.iteration
            self.hr_prompts = self.all_hr_prompts[n * self.batch_size:(n + 1) * self.batch_size]
            self.hr_negative_prompts = self.all_hr_negative_prompts[n * self.batch_size:(n + 1) * self.batch_size]
            self.hr_prompts, self.hr_extra_network_data = parse_extra_networks(self.hr_prompts)

    def init(self, all_prompts: list[str], all_seeds: list[int], all_subseeds: list[int]) -> None:
        """Hires preparation when `enable_hr` (target size, upscale mode, infotext keys)."""
        if self.enable_hr:
            init_hires(self)

    def sample(self, conditioning: Any, unconditional_conditioning: Any, seeds: list[int], subseeds: list[int],
               subseed_strength: float, prompts: list[str]) -> torch.Tensor:
        """First pass from the batch's noise; with hires fix, the upscaled second pass (decoded)."""
        from modules import sd_samplers
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        x = self.rng.next()
        run_hook(self, "process_before_every_sampling", x=x, noise=x, c=conditioning, uc=unconditional_conditioning)
        samples = self.sampler.sample(self, x, conditioning, unconditional_conditioning,
                                      image_conditioning=self.txt2img_image_conditioning(x))
        if not self.enable_hr:
            return samples
        return sample_hr_pass(self, samples)

    def calculate_hr_conds(self) -> None:
        """Second-pass conditioning into `hr_c` / `hr_uc`."""
        calculate_hr_conds(self)


@dataclass(repr=False)
class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    """img2img and inpainting (spec §1.3 img2img fields)."""

    init_images: list | None = None
    resize_mode: int = 0
    denoising_strength: float = 0.75
    image_cfg_scale: float | None = None
    mask: Any = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_blur: int | None = None
    mask_round: bool = True
    inpainting_fill: int = 0
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    latent_mask: Image.Image | None = None
    force_task_id: str | None = None
    include_init_images: bool = False

    image_mask: Any = field(default=None, init=False)
    nmask: torch.Tensor | None = field(default=None, init=False)
    image_conditioning: torch.Tensor | None = field(default=None, init=False)
    init_img_hash: str | None = field(default=None, init=False)
    init_latent: torch.Tensor | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.image_mask = self.mask
        self.mask = None

    # `mask_blur` sets both axes; it reads back only when both are equal (A1111 property).
    @property
    def mask_blur(self) -> int | None:  # noqa: F811  (replaces the init field, as in A1111)
        """Blur of both axes, or None when they differ."""
        return self.mask_blur_x if self.mask_blur_x == self.mask_blur_y else None

    @mask_blur.setter
    def mask_blur(self, value: Any) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self.mask_blur_x = self.mask_blur_y = int(value)

    def init(self, all_prompts: list[str], all_seeds: list[int], all_subseeds: list[int]) -> None:
        """Resize/mask/encode the init images into `init_latent`, `mask`, `nmask` (spec §1.3)."""
        init_img2img(self, all_seeds)

    def sample(self, conditioning: Any, unconditional_conditioning: Any, seeds: list[int], subseeds: list[int],
               subseed_strength: float, prompts: list[str]) -> torch.Tensor:
        """Noise the init latent by the denoising strength and sample; blend the kept area back."""
        return sample_img2img(self, conditioning, unconditional_conditioning)


# --- Processed ------------------------------------------------------------------------------------
class Processed:
    """What a job returns: images, infotexts and the request's resolved values (spec §2.2)."""

    def __init__(self, p: StableDiffusionProcessing, images_list: list, seed: Any = -1, info: str = "",
                 subseed: Any = None, all_prompts: list | None = None, all_negative_prompts: list | None = None,
                 all_seeds: list | None = None, all_subseeds: list | None = None, index_of_first_image: int = 0,
                 infotexts: list[str] | None = None, comments: str = ""):
        opts = shared.opts
        self.images = images_list
        self.prompt = p.prompt[0] if isinstance(p.prompt, list) else p.prompt
        self.negative_prompt = p.negative_prompt[0] if isinstance(p.negative_prompt, list) else p.negative_prompt
        self.seed = int(seed[0] if isinstance(seed, list) else seed) if seed is not None else -1
        self.subseed = int(subseed[0] if isinstance(subseed, list) else subseed) if subseed is not None else -1
        self.subseed_strength = p.subseed_strength
        self.info = info
        self.comments = "".join(f"{comment}\n" for comment in p.comments)
        self.width, self.height = p.width, p.height
        self.sampler_name = p.sampler_name
        self.cfg_scale = p.cfg_scale
        self.image_cfg_scale = getattr(p, "image_cfg_scale", None)
        self.steps = p.steps
        self.batch_size = p.batch_size
        self.restore_faces = p.restore_faces
        self.face_restoration_model = opts.face_restoration_model if p.restore_faces else None
        self.sd_model_name, self.sd_model_hash = p.sd_model_name, p.sd_model_hash
        self.sd_vae_name, self.sd_vae_hash = p.sd_vae_name, p.sd_vae_hash
        self.seed_resize_from_w, self.seed_resize_from_h = p.seed_resize_from_w, p.seed_resize_from_h
        self.denoising_strength = getattr(p, "denoising_strength", None)
        self.extra_generation_params = p.extra_generation_params
        self.index_of_first_image = index_of_first_image
        self.styles = p.styles
        self.job_timestamp = shared.state.job_timestamp
        self.clip_skip = opts.CLIP_stop_at_last_layers
        self.token_merging_ratio, self.token_merging_ratio_hr = p.token_merging_ratio, p.token_merging_ratio_hr
        self.eta, self.ddim_discretize = p.eta, p.ddim_discretize
        self.s_churn, self.s_tmin, self.s_tmax, self.s_noise = p.s_churn, p.s_tmin, p.s_tmax, p.s_noise
        self.s_min_uncond = p.s_min_uncond
        self.sampler_noise_scheduler_override = p.sampler_noise_scheduler_override
        self.is_using_inpainting_conditioning = p.is_using_inpainting_conditioning
        self.all_prompts = all_prompts or p.all_prompts or [self.prompt]
        self.all_negative_prompts = all_negative_prompts or p.all_negative_prompts or [self.negative_prompt]
        self.all_seeds = all_seeds or p.all_seeds or [self.seed]
        self.all_subseeds = all_subseeds or p.all_subseeds or [self.subseed]
        self.infotexts = infotexts or [info] * len(images_list)
        self.version = program_version()

    JS_KEYS: ClassVar[tuple[str, ...]] = (
        "prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds", "subseed",
        "all_subseeds", "subseed_strength", "width", "height", "sampler_name", "cfg_scale", "steps",
        "batch_size", "restore_faces", "face_restoration_model", "sd_model_name", "sd_model_hash",
        "sd_vae_name", "sd_vae_hash", "seed_resize_from_w", "seed_resize_from_h", "denoising_strength",
        "extra_generation_params", "index_of_first_image", "infotexts", "styles", "job_timestamp",
        "clip_skip", "is_using_inpainting_conditioning", "version")

    def js(self) -> str:
        """The API's `info` JSON string (spec §1.5); values that cannot be serialised become null."""
        data = {key: getattr(self, key) for key in self.JS_KEYS}
        data["prompt"], data["negative_prompt"] = self.all_prompts[0], self.all_negative_prompts[0]  # styled (A1111)
        return json.dumps(data, default=lambda _: None)

    def infotext(self, p: StableDiffusionProcessing, index: int) -> str:
        """The infotext of image `index` of the job (counting from the first real image)."""
        return create_infotext(p, self.all_prompts, self.all_seeds, self.all_subseeds, comments=[],
                               position_in_batch=index % self.batch_size, iteration=index // self.batch_size,
                               all_negative_prompts=self.all_negative_prompts)

    def get_token_merging_ratio(self, for_hr: bool = False) -> float:
        """The job's token-merging ratio of the first or hires pass."""
        return self.token_merging_ratio_hr if for_hr else self.token_merging_ratio


# --- process_images -------------------------------------------------------------------------------
def _checkpoint_override(settings: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """Load the checkpoint named by `sd_model_checkpoint` for this job if it differs.

    Returns the overrides to apply (an unknown checkpoint is dropped, as A1111 does) and the
    checkpoint to restore afterwards (None when nothing was switched).
    """
    from modules import sd_models
    name = settings.get("sd_model_checkpoint")
    if name is None:
        return settings, None
    info = sd_models.get_closet_checkpoint_match(name)
    if info is None:
        log.warning("override checkpoint %r not found; using the loaded model", name)
        return {k: v for k, v in settings.items() if k != "sd_model_checkpoint"}, None
    current = sd_models.model_data.sd_model
    current_info = getattr(current, "sd_checkpoint_info", None)
    if current_info is not None and os.path.abspath(current_info.filename) == os.path.abspath(info.filename):
        return settings, None
    sd_models.reload_model_weights(info=info)
    return settings, current_info


def _ensure_model() -> Any:
    from modules import sd_models
    return sd_models.model_data.get_sd_model()


def _after_job(p: StableDiffusionProcessing, settings: dict[str, Any], previous_checkpoint: Any) -> None:
    """Put the previous checkpoint back, or keep the overrides when the request asked to."""
    from modules import sd_models
    if p.override_settings_restore_afterwards:
        if previous_checkpoint is not None:
            sd_models.reload_model_weights(info=previous_checkpoint)
        return
    for key, value in settings.items():
        if key != "sd_model_checkpoint":
            shared.opts.set(key, value)


def process_images(p: StableDiffusionProcessing) -> Processed:
    """Run one job: validate, `before_process`, per-job options, then the stages (spec §2.3.2)."""
    from modules import sd_vae  # lazy, as sd_models: model code loads on first use
    settings = shared.opts.validate_overrides(p.override_settings or {})
    run_hook(p, "before_process")
    settings, previous_checkpoint = _checkpoint_override(settings)
    job_checkpoint = getattr(_ensure_model(), "sd_checkpoint_info", None)
    try:
        with shared.opts.override(settings), sd_vae.job_vae(_ensure_model()):  # the job's VAE, this job only
            validate(p)
            res = ProcessingRunner().run(ProcessingRequest(p))
    finally:
        _back_from_refiner(job_checkpoint)
        _after_job(p, settings, previous_checkpoint)
    return res


def _back_from_refiner(job_checkpoint: Any) -> None:
    """After a job whose refiner took over, make the job's own checkpoint current again, so the
    next job starts on the model it asked for (A1111 does this at the start of the next job)."""
    from modules import sd_models
    current = getattr(sd_models.model_data.sd_model, "sd_checkpoint_info", None)
    if job_checkpoint is not None and current is not None \
            and os.path.abspath(current.filename) != os.path.abspath(job_checkpoint.filename):
        sd_models.reload_model_weights(info=job_checkpoint)


def _patched_text_encoder() -> tuple:
    """The LoRA networks patched into the text encoder now (part of the conditioning cache key)."""
    from modules import lora_networks
    return lora_networks.applied_key("te")


def merge_hijack_notes(p: StableDiffusionProcessing) -> None:
    """A1111's step after each batch's conditioning: `model_hijack.extra_generation_params` update
    `p.extra_generation_params` (so they reach the infotext and params.txt) and each text of
    `model_hijack.comments` becomes a comment of the job (`Processed.comments`). Extensions fill
    both; `process_images_inner` empties them when a job starts."""
    hijack = sd_hijack.model_hijack
    p.extra_generation_params.update(hijack.extra_generation_params)
    for comment in hijack.comments:
        p.comment(comment)


def process_images_inner(p: StableDiffusionProcessing) -> Processed:
    """The stages of one job (spec §2.3.3); returns what was made even when interrupted."""
    sd_hijack.model_hijack.clear_comments()                 # 0. no notes from an earlier job (A1111)
    prepare_job(p)                                          # 1. defaults, model name/hash, outdirs
    p.fill_fields_from_opts()                               # 2. option-backed fields, prompts+styles
    p.setup_prompts()
    compute_seeds(p)                                        # 3. all_seeds / all_subseeds
    # 4. textual-inversion embeddings reload with each batch's conditioning (processing_prompts.load_embeddings)
    run_hook(p, "process")                                  # 5. scripts' process
    output = JobOutput()
    with torch.no_grad(), sd_tiling.tiled(p.sd_model, bool(p.tiling)):
        p.init(p.all_prompts, p.all_seeds, p.all_subseeds)  # 6. mode-specific init
        set_job_count(p)
        try:
            for n in range(p.n_iter):                       # 7. the batch loop
                if not begin_batch(p, n):
                    break
                run_batch(p, n, output)
        finally:                                            # 9. extra networks off (weights restored)
            from modules import extra_networks
            extra_networks.deactivate(p, p.extra_network_data)
        if not output.infotexts:                            # nothing made: the job's infotext all the same
            output.infotexts.append(Processed(p, []).infotext(p, 0))
        make_grid(p, output)                                # 8. grid
    p.close()
    res = Processed(p, output.images, p.all_seeds[0], output.infotexts[0],
                    subseed=p.all_subseeds[0], index_of_first_image=output.index_of_first_image,
                    infotexts=output.infotexts)             # 10. result
    run_hook(p, "postprocess", res)                         # 11. scripts' postprocess
    return res


A1111_FUNCTIONS = (
    "setup_color_correction", "apply_color_correction", "uncrop", "apply_overlay", "create_binary_mask",
    "txt2img_image_conditioning", "create_random_tensors", "decode_latent_batch", "get_fixed_seed", "fix_seed",
    "program_version", "create_infotext", "process_images", "process_images_inner",
    "old_hires_fix_first_pass_dimensions", "images_tensor_to_samples", "decode_first_stage", "slerp",
)
"""A1111's module-level functions of `modules.processing`: replacing one here changes what the pipeline calls."""

__all__ = [
    "SERENA_VERSION", "StableDiffusionProcessing", "StableDiffusionProcessingTxt2Img",
    "StableDiffusionProcessingImg2Img", "Processed", "opt_C", "opt_f", *A1111_FUNCTIONS,
]
