"""A1111's generation surface (spec §2): the processing dataclasses, `Processed`, `process_images`.

`process_images(p)` validates the request, fires `before_process`, makes the job's
`override_settings` effective for this context only, and hands `p` to the execution surface,
`ProcessingRunner().run(ProcessingRequest(p))` (`modules/runtime/runner.py`), which calls
`process_images_inner(p)`: no other product code calls it. `process_images_inner` reads as
the numbered stages of spec §2.3; each stage is a function below it that can be tested alone.
Image-mode specifics (hires fix, img2img, inpainting) live on the subclasses' `init` / `sample`.

Per-run state lives on `p` (A1111 extensions read and write it there); what a job produces is
gathered in a :class:`JobOutput` and turned into a :class:`Processed` at the end.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch
from PIL import Image, ImageOps

from modules import errors, masking, rng, sd_tiling, shared
from modules.runtime.runner import ProcessingRequest, ProcessingRunner
from modules.rng import create_random_tensors, get_fixed_seed, slerp  # noqa: F401  (A1111 names)
from modules.scripts import (MaskBlendArgs, PostprocessBatchListArgs, PostprocessImageArgs,
                             PostProcessMaskOverlayArgs, PostSampleArgs)

log = logging.getLogger(__name__)

SERENA_VERSION = "v0.0.10-m10"
"""The `Version` infotext value and `Processed.version`."""

opt_C = 4
opt_f = 8
MIN_SIZE = 64
MAX_SIZE = 2048
MAX_HIRES_SIZE = 4096
NO_REFINER = (None, "", "None", "none")


def program_version() -> str:
    """The version written into infotexts and `Processed.version`."""
    return SERENA_VERSION


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
                self.height, opts.emphasis, opts.comma_padding_backtrack, opts.fp8_storage)

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
        """Text conditioning of this batch's prompts (`uc` plain, `c` multicond), cached."""
        from modules import prompt_parser
        total_steps = sampler_total_steps(self.sampler_name, self.steps)
        self.step_multiplier = max(total_steps // max(self.steps, 1), 1)
        self.firstpass_steps = total_steps
        negative = prompt_parser.SdConditioning(self.negative_prompts, is_negative_prompt=True,
                                                width=self.width, height=self.height)
        positive = prompt_parser.SdConditioning(self.prompts, width=self.width, height=self.height)
        self.uc = self.get_conds_with_caching(prompt_parser.get_learned_conditioning, negative, total_steps,
                                              [self.cached_uc], self.extra_network_data)
        self.c = self.get_conds_with_caching(prompt_parser.get_multicond_learned_conditioning, positive,
                                             total_steps, [self.cached_c], self.extra_network_data)

    def get_conds(self) -> tuple[Any, Any]:
        """This batch's (conditioning, unconditional conditioning)."""
        return self.c, self.uc

    def parse_extra_network_prompts(self) -> None:
        """Strip `<name:args>` tags from this batch's prompts into `extra_network_data`."""
        self.prompts, self.extra_network_data = parse_extra_networks(self.prompts)

    def save_samples(self) -> bool:
        """Whether this batch's images go to disk (never the images of a cancelled batch)."""
        opts = shared.opts
        incomplete = shared.state.interrupted or shared.state.skipped
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
        model = self.sd_model
        if not getattr(model, "is_inpainting", False):
            return None
        self.is_using_inpainting_conditioning = True
        width, height = width or self.width, height or self.height
        grey = torch.full((x.shape[0], 3, height, width), 0.5, device=x.device, dtype=torch.float32)
        latent = images_tensor_to_samples(grey, model)
        return torch.nn.functional.pad(latent, (0, 0, 0, 0, 1, 0), value=1.0).to(x.dtype)

    def img2img_image_conditioning(self, source_image: torch.Tensor, latent_image: torch.Tensor,
                                   image_mask: Image.Image | torch.Tensor | None = None,
                                   round_image_mask: bool = True) -> torch.Tensor | None:
        """Inpainting-model conditioning: the masked source encoded, with the mask at latent size."""
        if not getattr(self.sd_model, "is_inpainting", False):
            return None
        self.is_using_inpainting_conditioning = True
        mask = _conditioning_mask(source_image, image_mask, round_image_mask)
        weight = getattr(self, "inpainting_mask_weight", shared.opts.inpainting_mask_weight)
        masked = torch.lerp(source_image, source_image * (1.0 - mask), weight)
        encoded = self.sd_model.encode_first_stage(masked)
        mask = torch.nn.functional.interpolate(mask, size=latent_image.shape[-2:])
        mask = mask.expand(encoded.shape[0], -1, -1, -1)
        return torch.cat([mask.to(encoded.dtype), encoded], dim=1)


def _conditioning_mask(source_image: torch.Tensor, image_mask: Any, round_mask: bool) -> torch.Tensor:
    if image_mask is None:
        mask = source_image.new_ones(1, 1, *source_image.shape[-2:])
    elif torch.is_tensor(image_mask):
        mask = image_mask
    else:
        arr = np.array(image_mask.convert("L"), dtype=np.float32) / 255.0
        mask = torch.from_numpy(arr[None, None])
        if round_mask:
            mask = torch.round(mask)
    return mask.to(device=source_image.device, dtype=source_image.dtype)


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
        _run_hook(self, "process_before_every_sampling", x=x, noise=x, c=conditioning, uc=unconditional_conditioning)
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


# --- prompts and extra networks -------------------------------------------------------------------
def expand_prompts(prompt: str | list[str], negative_prompt: str | list[str], count: int,
                   styles: list[str]) -> tuple[list[str], list[str]]:
    """One positive and one negative prompt per image, styles applied, comments stripped."""
    if isinstance(prompt, list):
        prompts = list(prompt)
    elif isinstance(negative_prompt, list):
        prompts = [prompt] * len(negative_prompt)
    else:
        prompts = [prompt] * count
    negatives = list(negative_prompt) if isinstance(negative_prompt, list) else [negative_prompt] * len(prompts)
    if len(prompts) != len(negatives):
        raise errors.InvalidParameter(
            f"got {len(prompts)} prompts and {len(negatives)} negative prompts; they must match",
            field="negative_prompt")
    database = getattr(shared, "prompt_styles", None)
    if styles and database is not None:
        prompts = [database.apply_styles_to_prompt(x, styles) for x in prompts]
        negatives = [database.apply_negative_styles_to_prompt(x, styles) for x in negatives]
    if shared.opts.enable_prompt_comments:
        from modules import prompt_parser
        prompts = [prompt_parser.strip_comments(x) for x in prompts]
        negatives = [prompt_parser.strip_comments(x) for x in negatives]
    return prompts, negatives


_re_extra_net = re.compile(r"<(\w+):([^>]+)>")


def parse_extra_networks(prompts: list[str]) -> tuple[list[str], dict[str, list[list[str]]]]:
    """Remove `<name:args>` tags from every prompt; the data comes from the first prompt (spec §4)."""
    try:
        from modules import extra_networks
    except ImportError:
        extra_networks = None
    if extra_networks is not None and hasattr(extra_networks, "parse_prompts"):
        return extra_networks.parse_prompts(prompts)
    data: dict[str, list[list[str]]] = {}
    for name, args in _re_extra_net.findall(prompts[0] if prompts else ""):
        data.setdefault(name, []).append(args.split(":"))
    return [_re_extra_net.sub("", prompt) for prompt in prompts], data


def sampler_total_steps(sampler_name: str | None, steps: int) -> int:
    """Steps the prompt schedules span: doubled for second-order samplers (spec §4)."""
    from modules import sd_samplers
    config = sd_samplers.find_sampler_config(sampler_name)
    if callable(getattr(config, "total_steps", None)):
        return int(config.total_steps(steps))
    options = getattr(config, "options", None) or {}
    second_order = options.get("second_order", False)
    if second_order and not shared.opts.dont_fix_second_order_samplers_schedule:
        return steps * 2
    return steps


# --- latents and images ---------------------------------------------------------------------------
def decode_first_stage(model: Any, latent: torch.Tensor) -> torch.Tensor:
    """Latent → image in about [-1, 1] (A1111 name)."""
    return model.decode_first_stage(latent.to(getattr(model, "dtype_vae", latent.dtype)))


def decode_latent_batch(model: Any, batch: torch.Tensor, target_device: torch.device | None = None,
                        check_for_nans: bool = False) -> list[torch.Tensor]:
    """Decode image by image, so an image of a batch decodes exactly as it would alone.

    `check_for_nans` raises on a NaN result unless `--disable-nan-check` is given (A1111's flag).
    """
    decoded = []
    check_for_nans = check_for_nans and not getattr(shared.cmd_opts, "disable_nan_check", False)
    for i in range(batch.shape[0]):
        image = decode_first_stage(model, batch[i:i + 1])[0]
        if check_for_nans and torch.isnan(image).any():
            raise errors.SerenaError(f"VAE produced NaNs decoding image {i} of the batch")
        decoded.append(image.to(target_device) if target_device is not None else image)
    return decoded


def images_tensor_to_samples(image: torch.Tensor, model: Any) -> torch.Tensor:
    """Images in [0, 1] (B×3×H×W) → scaled latents."""
    x = image * 2.0 - 1.0
    return model.encode_first_stage(x.to(getattr(model, "device", x.device), getattr(model, "dtype_vae", x.dtype)))


def sample_to_image(x_sample: torch.Tensor) -> Image.Image:
    """One decoded image in [0, 1] (3×H×W) → an 8-bit RGB image."""
    arr = 255.0 * np.moveaxis(x_sample.cpu().float().numpy(), 0, 2)
    return Image.fromarray(arr.astype(np.uint8))


def image_to_array(image: Image.Image) -> np.ndarray:
    """An RGB image → float32 3×H×W in [0, 1]."""
    return np.moveaxis(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0, 2, 0)


def uncrop(image: Image.Image, dest_size: tuple[int, int], paste_loc: tuple[int, int, int, int]) -> Image.Image:
    """Place a processed crop back at `paste_loc` (x, y, w, h) on a transparent canvas of `dest_size`."""
    from modules import images
    x, y, w, h = paste_loc
    base = Image.new("RGBA", dest_size)
    base.paste(images.resize_image(1, image, w, h), (x, y))
    return base


def apply_overlay(image: Image.Image, paste_loc: tuple | None,
                  overlay: Image.Image | None) -> tuple[Image.Image, Image.Image]:
    """Composite the original (outside the mask) over the result; returns (image, denoised image)."""
    if overlay is None:
        return image, image.copy()
    if paste_loc is not None:
        image = uncrop(image, (overlay.width, overlay.height), paste_loc)
    original_denoised = image.copy()
    image = image.convert("RGBA")
    image.alpha_composite(overlay)
    return image.convert("RGB"), original_denoised


def setup_color_correction(image: Image.Image) -> np.ndarray:
    """The colour target of an init image: its pixels in CIE Lab."""
    return rgb_to_lab(np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0)


def apply_color_correction(correction: np.ndarray, original_image: Image.Image) -> Image.Image:
    """Match the image's Lab histograms to the init image, keeping the image's own lightness."""
    lab = rgb_to_lab(np.asarray(original_image.convert("RGB"), dtype=np.float64) / 255.0)
    matched = np.stack([match_histogram(lab[..., c], correction[..., c]) for c in range(3)], axis=-1)
    matched[..., 0] = lab[..., 0]
    rgb = np.clip(lab_to_rgb(matched), 0.0, 1.0)
    return Image.fromarray(np.rint(rgb * 255.0).astype(np.uint8))


def match_histogram(source: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Map `source` values so their distribution matches `reference` (quantile matching)."""
    src_values, src_index, src_counts = np.unique(source.ravel(), return_inverse=True, return_counts=True)
    ref_values, ref_counts = np.unique(reference.ravel(), return_counts=True)
    src_quantiles = np.cumsum(src_counts) / source.size
    ref_quantiles = np.cumsum(ref_counts) / reference.size
    mapped = np.interp(src_quantiles, ref_quantiles, ref_values)
    return mapped[src_index].reshape(source.shape)


_D65 = np.array([0.95047, 1.0, 1.08883])
_RGB2XYZ = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] (H×W×3) → CIE Lab (D65)."""
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ _RGB2XYZ.T / _D65
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])], -1)


def lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab (D65) → sRGB in [0, 1] (unclipped)."""
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], -1)
    xyz = np.where(f ** 3 > 0.008856, f ** 3, (f - 16.0 / 116.0) / 7.787) * _D65
    linear = np.clip(xyz @ np.linalg.inv(_RGB2XYZ).T, 0.0, None)
    return np.where(linear > 0.0031308, 1.055 * linear ** (1 / 2.4) - 0.055, 12.92 * linear)


def old_hires_fix_first_pass_dimensions(width: int, height: int) -> tuple[int, int]:
    """First-pass size of the pre-1.0 hires fix: about 512² area, multiples of 64."""
    desired_pixel_count = 512 * 512
    actual_pixel_count = width * height
    scale = (desired_pixel_count / actual_pixel_count) ** 0.5
    return int(np.ceil(scale * width / 64) * 64), int(np.ceil(scale * height / 64) * 64)


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
        return json.dumps({key: getattr(self, key) for key in self.JS_KEYS}, default=lambda _: None)

    def infotext(self, p: StableDiffusionProcessing, index: int) -> str:
        """The infotext of image `index` of the job (counting from the first real image)."""
        return create_infotext(p, self.all_prompts, self.all_seeds, self.all_subseeds, comments=[],
                               position_in_batch=index % self.batch_size, iteration=index // self.batch_size,
                               all_negative_prompts=self.all_negative_prompts)

    def get_token_merging_ratio(self, for_hr: bool = False) -> float:
        """The job's token-merging ratio of the first or hires pass."""
        return self.token_merging_ratio_hr if for_hr else self.token_merging_ratio


# --- infotext -------------------------------------------------------------------------------------
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
    from modules import infotext_utils
    if index is None:
        index = position_in_batch + iteration * p.batch_size
    if all_negative_prompts is None:
        all_negative_prompts = p.all_negative_prompts
    prompt_text = p.main_prompt if use_main_prompt else all_prompts[index]
    negative_prompt = p.main_negative_prompt if use_main_prompt else all_negative_prompts[index]
    params = _base_params(p, index, use_main_prompt, all_seeds, all_subseeds)
    params.update(p.extra_generation_params)
    params["Version"] = program_version() if shared.opts.add_version_to_infotext else None
    params["User"] = p.user if shared.opts.add_user_name_to_info else None
    context = {"p": p, "index": index, "prompt_text": prompt_text, "negative_prompt": negative_prompt,
               "all_prompts": all_prompts, "all_seeds": all_seeds, "all_subseeds": all_subseeds,
               "iteration": iteration, "position_in_batch": position_in_batch,
               "use_main_prompt": use_main_prompt, "generation_params": params, "comments": comments}
    params = {key: _resolve_param(key, value, index, context) for key, value in params.items()}
    return infotext_utils.build_infotext(prompt_text, negative_prompt or "", params)


# --- validation -----------------------------------------------------------------------------------
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
    _check_int(p.width, "width", MIN_SIZE, MAX_SIZE, multiple=8)
    _check_int(p.height, "height", MIN_SIZE, MAX_SIZE, multiple=8)
    _check_int(p.steps, "steps", 1, max(int(shared.opts.api_max_steps), 1))
    _check_int(p.batch_size, "batch_size", 1)
    _check_int(p.n_iter, "n_iter", 1)
    _check_number(p.cfg_scale, "cfg_scale", 0.0, 100.0)
    _check_number(p.subseed_strength, "subseed_strength", 0.0, 1.0)
    if p.denoising_strength is not None:
        _check_number(p.denoising_strength, "denoising_strength", 0.0, 1.0)
    if not isinstance(p.prompt, (str, list)) or (isinstance(p.prompt, list) and not p.prompt):
        raise errors.InvalidParameter(f"prompt must be a string or a non-empty list, got {p.prompt!r}", field="prompt")
    if p.refiner_checkpoint not in NO_REFINER:
        raise errors.InvalidParameter(
            f"the refiner is not supported yet; got refiner_checkpoint={p.refiner_checkpoint!r}",
            field="refiner_checkpoint")
    _normalise_sampler(p)
    if isinstance(p, StableDiffusionProcessingTxt2Img) and p.enable_hr:
        validate_hires(p)
    if isinstance(p, StableDiffusionProcessingImg2Img):
        validate_img2img(p)


def _normalise_sampler(p: StableDiffusionProcessing) -> None:
    """Resolve sampler and scheduler names (spec §6); unknown names raise with the valid ones."""
    from modules import sd_samplers
    name = p.sampler_name or (p.sampler_index if isinstance(p.sampler_index, str) else None)
    p.sampler_name, p.scheduler = sd_samplers.get_sampler_and_scheduler(name, p.scheduler)


# --- process_images -------------------------------------------------------------------------------
def _run_hook(p: StableDiffusionProcessing, hook: str, *args: Any, **kwargs: Any) -> None:
    """Fire a script hook if the job has a script runner (None: no scripts)."""
    if p.scripts is not None:
        getattr(p.scripts, hook)(p, *args, **kwargs)


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


def _ensure_model() -> None:
    from modules import sd_models
    sd_models.model_data.get_sd_model()


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
    settings = shared.opts.validate_overrides(p.override_settings or {})
    _run_hook(p, "before_process")
    settings, previous_checkpoint = _checkpoint_override(settings)
    try:
        with shared.opts.override(settings):
            _ensure_model()
            validate(p)
            res = ProcessingRunner().run(ProcessingRequest(p))
    finally:
        _after_job(p, settings, previous_checkpoint)
    return res


@dataclass
class JobOutput:
    """What the batch loop produces, in order (filled batch by batch)."""

    images: list = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    index_of_first_image: int = 0


def process_images_inner(p: StableDiffusionProcessing) -> Processed:
    """The stages of one job (spec §2.3.3); returns what was made even when interrupted."""
    prepare_job(p)                                          # 1. defaults, model name/hash, outdirs
    p.fill_fields_from_opts()                               # 2. option-backed fields, prompts+styles
    p.setup_prompts()
    compute_seeds(p)                                        # 3. all_seeds / all_subseeds
    # 4. (textual-inversion embeddings are not reloaded: Serena has none yet)
    _run_hook(p, "process")                                 # 5. scripts' process
    output = JobOutput()
    with torch.no_grad(), sd_tiling.tiled(p.sd_model, bool(p.tiling)):
        p.init(p.all_prompts, p.all_seeds, p.all_subseeds)  # 6. mode-specific init
        set_job_count(p)
        for n in range(p.n_iter):                           # 7. the batch loop
            if not begin_batch(p, n):
                break
            run_batch(p, n, output)
        make_grid(p, output)                                # 8. grid
    p.close()
    res = Processed(p, output.images, p.all_seeds[0], output.infotexts[0] if output.infotexts else "",
                    subseed=p.all_subseeds[0], index_of_first_image=output.index_of_first_image,
                    infotexts=output.infotexts)             # 10. result
    _run_hook(p, "postprocess", res)                        # 11. scripts' postprocess
    return res


def prepare_job(p: StableDiffusionProcessing) -> None:
    """Stage 1: option defaults for restore_faces/tiling, model name and hash, output folders."""
    opts = shared.opts
    if p.restore_faces is None:
        p.restore_faces = opts.face_restoration
    if p.tiling is None:
        p.tiling = opts.tiling
    if p.restore_faces:
        p.comment("face restoration is not available in Serena yet; skipped")
        p.restore_faces = False
    if opts.randn_source == "NV":
        p.comment("randn_source NV: noise is drawn on the CPU generator (no NVIDIA Philox port yet)")
    model = p.sd_model
    info = getattr(model, "sd_checkpoint_info", None)
    p.sd_model_name = getattr(info, "name_for_extra", None) or getattr(info, "model_name", None)
    p.sd_model_hash = getattr(model, "sd_model_hash", None)
    p.sd_vae_name = p.sd_vae_hash = None
    kind = "img2img" if isinstance(p, StableDiffusionProcessingImg2Img) else "txt2img"
    p.outpath_samples = _data_dir(p.outpath_samples or opts.outdir_samples or getattr(opts, f"outdir_{kind}_samples"))
    p.outpath_grids = _data_dir(p.outpath_grids or opts.outdir_grids or getattr(opts, f"outdir_{kind}_grids"))


def _data_dir(path: str) -> str:
    return path if os.path.isabs(path) else os.path.join(shared.data_paths.data_path, path)


def fix_seed(p: StableDiffusionProcessing) -> None:
    """Replace random seeds (-1) on `p` by concrete ones (A1111 helper)."""
    p.seed = _fixed(p.seed)
    p.subseed = _fixed(p.subseed)


def _fixed(seed: Any) -> Any:
    return [get_fixed_seed(s) for s in seed] if isinstance(seed, list) else get_fixed_seed(seed)


def compute_seeds(p: StableDiffusionProcessing) -> None:
    """Stage 3: seed+i per image (the same seed for all with a variation strength), subseed+i (spec §5)."""
    seed, subseed = _fixed(p.seed), _fixed(p.subseed)
    count = len(p.all_prompts)
    p.all_seeds = seed if isinstance(seed, list) else [int(seed) + (i if p.subseed_strength == 0 else 0)
                                                       for i in range(count)]
    p.all_subseeds = subseed if isinstance(subseed, list) else [int(subseed) + i for i in range(count)]


def set_job_count(p: StableDiffusionProcessing) -> None:
    """Progress: one job per batch, two with the hires fix."""
    state = shared.state
    if state.job_count <= 0:
        state.job_count = p.n_iter
    if getattr(p, "enable_hr", False) and not state.processing_has_refined_job_count:
        state.job_count *= 2
        state.processing_has_refined_job_count = True


def begin_batch(p: StableDiffusionProcessing, n: int) -> bool:
    """Start batch `n`: False when the job was interrupted; clears a pending skip."""
    state = shared.state
    p.iteration = n
    if state.skipped:
        state.skipped = False
    if state.interrupted or state.stopping_generation:
        return False
    state.job = f"Batch {n + 1} out of {p.n_iter}"
    state.textinfo = state.job
    start, end = n * p.batch_size, (n + 1) * p.batch_size
    p.prompts, p.negative_prompts = p.all_prompts[start:end], p.all_negative_prompts[start:end]
    p.seeds, p.subseeds = p.all_seeds[start:end], p.all_subseeds[start:end]
    return len(p.prompts) > 0


def run_batch(p: StableDiffusionProcessing, n: int, output: JobOutput) -> None:
    """Stage 7: noise, hooks, conditioning, sampling, decoding, then every image's finishing."""
    latent_shape = (getattr(p.sd_model, "latent_channels", opt_C), p.height // opt_f, p.width // opt_f)
    p.rng = rng.ImageRNG(latent_shape, p.seeds, subseeds=p.subseeds, subseed_strength=p.subseed_strength,
                         seed_resize_from_h=p.seed_resize_from_h, seed_resize_from_w=p.seed_resize_from_w)
    batch = dict(batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.subseeds)
    _run_hook(p, "before_process_batch", **batch)
    if not p.disable_extra_networks:
        p.parse_extra_network_prompts()
    _run_hook(p, "after_extra_networks_activate", **batch, extra_network_data=p.extra_network_data)
    _run_hook(p, "process_batch", **batch)
    p.setup_conds()
    if n == 0:
        write_params_txt(p)
    samples = p.sample(conditioning=p.c, unconditional_conditioning=p.uc, seeds=p.seeds, subseeds=p.subseeds,
                       subseed_strength=p.subseed_strength, prompts=p.prompts)
    if p.scripts is not None:
        ps = PostSampleArgs(samples)
        p.scripts.post_sample(p, ps)
        samples = ps.samples
    x_samples = decode_batch(p, samples)
    shared.state.nextjob()
    x_samples = postprocess_batch(p, n, x_samples)
    save = p.save_samples()
    for i, x_sample in enumerate(x_samples):
        finish_image(p, n, i, x_sample, save, output)


def decode_batch(p: StableDiffusionProcessing, samples: Any) -> torch.Tensor:
    """Stage 7.9: latents → images in [0, 1] (already-decoded hires output passes through)."""
    if getattr(samples, "already_decoded", False):
        decoded = samples
    else:
        decoded = decode_latent_batch(p.sd_model, samples, target_device=torch.device("cpu"), check_for_nans=True)
    stacked = torch.stack(list(decoded)).float()
    return torch.clamp((stacked + 1.0) / 2.0, min=0.0, max=1.0)


def postprocess_batch(p: StableDiffusionProcessing, n: int, x_samples: torch.Tensor) -> list:
    """Stages 7.10–7.11: scripts' `postprocess_batch` and `postprocess_batch_list`."""
    if p.scripts is None:
        return list(x_samples)
    p.scripts.postprocess_batch(p, x_samples, batch_number=n)
    start, end = n * p.batch_size, (n + 1) * p.batch_size
    p.prompts, p.negative_prompts = p.all_prompts[start:end], p.all_negative_prompts[start:end]
    args = PostprocessBatchListArgs(list(x_samples))
    p.scripts.postprocess_batch_list(p, args, batch_number=n)
    return args.images


def _batch_infotext(p: StableDiffusionProcessing, i: int, use_main_prompt: bool = False) -> str:
    return create_infotext(p, p.prompts, p.seeds, p.subseeds, use_main_prompt=use_main_prompt, index=i,
                           all_negative_prompts=p.negative_prompts)


def finish_image(p: StableDiffusionProcessing, n: int, i: int, x_sample: Any, save: bool, output: JobOutput) -> None:
    """Stage 7.12 for one image: postprocess hooks, colour correction, overlay, save, infotext."""
    opts = shared.opts
    p.batch_index = i
    image = x_sample if isinstance(x_sample, Image.Image) else sample_to_image(x_sample)
    image = _postprocess_image_hook(p, "postprocess_image", image)
    mask_for_overlay, overlay = _mask_overlay(p, i)
    if p.color_corrections is not None and i < len(p.color_corrections):
        if save and opts.save_images_before_color_correction:
            _save_sample(p, i, apply_overlay(image, p.paste_to, overlay)[0], suffix="-before-color-correction")
        image = apply_color_correction(p.color_corrections[i], image)
    image, original_denoised = apply_overlay(image, p.paste_to, overlay)
    image = _postprocess_image_hook(p, "postprocess_image_after_composite", image)
    text = _batch_infotext(p, i)
    if save:
        _save_sample(p, i, image)
    output.infotexts.append(text)
    if opts.enable_pnginfo:
        image.info["parameters"] = text
    output.images.append(image)
    if mask_for_overlay is not None:
        _mask_outputs(p, i, image, original_denoised, mask_for_overlay, save, output, text)


def _postprocess_image_hook(p: StableDiffusionProcessing, hook: str, image: Image.Image) -> Image.Image:
    if p.scripts is None:
        return image
    pp = PostprocessImageArgs(image)
    getattr(p.scripts, hook)(p, pp)
    return pp.image


def _mask_overlay(p: StableDiffusionProcessing, i: int) -> tuple[Any, Any]:
    """The mask and the original-outside-mask overlay of image `i` (after scripts' hook)."""
    mask_for_overlay = p.mask_for_overlay
    overlay = None
    if shared.opts.overlay_inpaint and p.overlay_images is not None and i < len(p.overlay_images):
        overlay = p.overlay_images[i]
    if p.scripts is not None:
        ppmo = PostProcessMaskOverlayArgs(i, mask_for_overlay, overlay)
        p.scripts.postprocess_maskoverlay(p, ppmo)
        mask_for_overlay, overlay = ppmo.mask_for_overlay, ppmo.overlay_image
    return mask_for_overlay, overlay


def _mask_outputs(p: StableDiffusionProcessing, i: int, image: Image.Image, original_denoised: Image.Image,
                  mask_for_overlay: Image.Image, save: bool, output: JobOutput, text: str) -> None:
    """`return_mask` / `save_mask` and the masked composite variants (suffixes -mask, -mask-composite)."""
    from modules import images
    opts = shared.opts
    if opts.return_mask or opts.save_mask:
        mask_image = mask_for_overlay.convert("RGB")
        if save and opts.save_mask:
            _save_sample(p, i, mask_image, suffix="-mask")
        if opts.return_mask:
            output.images.append(mask_image)
            output.infotexts.append(text)
    if opts.return_mask_composite or opts.save_mask_composite:
        mask = images.resize_image(2, mask_for_overlay, image.width, image.height).convert("L")
        composite = Image.composite(original_denoised.convert("RGBA").convert("RGBa"),
                                    Image.new("RGBa", image.size), mask).convert("RGBA")
        if save and opts.save_mask_composite:
            _save_sample(p, i, composite, suffix="-mask-composite")
        if opts.return_mask_composite:
            output.images.append(composite)
            output.infotexts.append(text)


def _save_sample(p: StableDiffusionProcessing, i: int, image: Image.Image, suffix: str = "") -> None:
    from modules import images
    images.save_image(image, p.outpath_samples, "", p.seeds[i], p.prompts[i], shared.opts.samples_format,
                      info=_batch_infotext(p, i), p=p, suffix=suffix)


def make_grid(p: StableDiffusionProcessing, output: JobOutput) -> None:
    """Stage 8: a grid first in the results and/or saved, when there is more than one image."""
    from modules import images
    opts = shared.opts
    unwanted = len(output.images) < 2 and opts.grid_only_if_multiple
    if not (opts.return_grid or opts.grid_save) or p.do_not_save_grid or unwanted or not output.images:
        return
    grid = images.image_grid(output.images, p.batch_size)
    text = create_infotext(p, p.all_prompts, p.all_seeds, p.all_subseeds, use_main_prompt=True)
    if opts.return_grid:
        if opts.enable_pnginfo:
            grid.info["parameters"] = text
        output.images.insert(0, grid)
        output.infotexts.insert(0, text)
        output.index_of_first_image = 1
    if opts.grid_save:
        images.save_image(grid, p.outpath_grids, "grid", p.all_seeds[0], p.all_prompts[0], opts.grid_format,
                          info=text, short_filename=not opts.grid_extended_filename, p=p, grid=True)


def write_params_txt(p: StableDiffusionProcessing) -> None:
    """`<data>/params.txt`: the first image's infotext, written atomically (not with --no-prompt-history)."""
    from modules.fileio import atomic_write_text
    if getattr(shared.cmd_opts, "no_prompt_history", False):
        return
    text = Processed(p, []).infotext(p, 0)
    atomic_write_text(os.path.join(shared.data_paths.data_path, "params.txt"), text)


# --- hires fix (txt2img) --------------------------------------------------------------------------
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


def calculate_target_resolution(p: StableDiffusionProcessingTxt2Img) -> None:
    """Fill `hr_upscale_to_x/y`, `truncate_x/y` and the Hires upscale / Hires resize infotext key."""
    if shared.opts.use_old_hires_fix_width_height and p.applied_old_hires_behavior_to != (p.width, p.height):
        p.hr_resize_x, p.hr_resize_y = p.width, p.height
        p.width, p.height = old_hires_fix_first_pass_dimensions(p.width, p.height)
        p.applied_old_hires_behavior_to = (p.width, p.height)
    if p.hr_resize_x == 0 and p.hr_resize_y == 0:
        p.extra_generation_params["Hires upscale"] = p.hr_scale
    else:
        p.extra_generation_params["Hires resize"] = f"{p.hr_resize_x}x{p.hr_resize_y}"
    target = hires_target(p.width, p.height, p.hr_scale, p.hr_resize_x, p.hr_resize_y)
    p.hr_upscale_to_x, p.hr_upscale_to_y = target.upscale_to_x, target.upscale_to_y
    p.truncate_x, p.truncate_y = target.truncate_x, target.truncate_y


def _is_same(value: Any, same_label: str) -> bool:
    return value in (None, "", same_label)


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
    if _is_same(p.hr_sampler_name, "Use same sampler"):
        p.hr_sampler_name = None
    if _is_same(p.hr_scheduler, "Use same scheduler"):
        p.hr_scheduler = None
    if p.hr_sampler_name is not None or p.hr_scheduler is not None:
        p.hr_sampler_name, p.hr_scheduler = sd_samplers.get_sampler_and_scheduler(
            p.hr_sampler_name or p.sampler_name, p.hr_scheduler or p.scheduler)


def init_hires(p: StableDiffusionProcessingTxt2Img) -> None:
    """Hires preparation in `init`: checkpoint, upscale mode, target size, infotext keys (spec §3)."""
    from modules import upscaling
    p.extra_generation_params["Denoising strength"] = p.denoising_strength
    calculate_target_resolution(p)
    if p.hr_second_pass_steps:
        p.extra_generation_params["Hires steps"] = p.hr_second_pass_steps
    if p.hr_upscaler is not None:
        p.extra_generation_params["Hires upscaler"] = p.hr_upscaler
    if not _is_same(p.hr_checkpoint_name, "Use same checkpoint"):
        from modules import sd_models
        p.hr_checkpoint_info = sd_models.get_checkpoint_info(p.hr_checkpoint_name)
        p.extra_generation_params["Hires checkpoint"] = getattr(p.hr_checkpoint_info, "short_title", None) \
            or p.hr_checkpoint_info.title
    if p.hr_sampler_name is not None and p.hr_sampler_name != p.sampler_name:
        p.extra_generation_params["Hires sampler"] = p.hr_sampler_name
    p.extra_generation_params["Hires schedule type"] = None  # the sampler fills it during the second pass
    if p.hr_scheduler is None:
        p.hr_scheduler = p.scheduler
    p.extra_generation_params["Hires prompt"] = _hr_prompt_param
    p.extra_generation_params["Hires negative prompt"] = _hr_negative_prompt_param
    mode_name = p.hr_upscaler if p.hr_upscaler is not None else upscaling.latent_upscale_default_mode
    p.latent_scale_mode = upscaling.latent_upscale_modes.get(mode_name)


def _hr_prompt_param(p: StableDiffusionProcessingTxt2Img, index: int, prompt_text: str, **_: Any) -> str | None:
    """Infotext value of Hires prompt: only when it differs from the first-pass prompt."""
    hr_prompt = p.all_hr_prompts[index] if p.all_hr_prompts and index < len(p.all_hr_prompts) else None
    return hr_prompt if hr_prompt != prompt_text else None


def _hr_negative_prompt_param(p: StableDiffusionProcessingTxt2Img, index: int, negative_prompt: str,
                              **_: Any) -> str | None:
    negatives = p.all_hr_negative_prompts
    hr_negative = negatives[index] if negatives and index < len(negatives) else None
    return hr_negative if hr_negative != negative_prompt else None


def calculate_hr_conds(p: StableDiffusionProcessingTxt2Img) -> None:
    """Second-pass conditioning; reuses the first-pass cache when the prompts are the same."""
    from modules import prompt_parser
    steps = p.hr_second_pass_steps or p.steps
    total_steps = sampler_total_steps(p.hr_sampler_name or p.sampler_name, steps)
    size = dict(width=p.hr_upscale_to_x, height=p.hr_upscale_to_y)
    negative = prompt_parser.SdConditioning(p.hr_negative_prompts, is_negative_prompt=True, **size)
    positive = prompt_parser.SdConditioning(p.hr_prompts, **size)
    p.hr_uc = p.get_conds_with_caching(prompt_parser.get_learned_conditioning, negative, p.firstpass_steps,
                                       [p.cached_hr_uc, p.cached_uc], p.hr_extra_network_data, total_steps)
    p.hr_c = p.get_conds_with_caching(prompt_parser.get_multicond_learned_conditioning, positive, p.firstpass_steps,
                                      [p.cached_hr_c, p.cached_c], p.hr_extra_network_data, total_steps)


def _save_before_highres(p: StableDiffusionProcessingTxt2Img, image: Image.Image, index: int) -> None:
    opts = shared.opts
    if opts.samples_save and not p.do_not_save_samples and opts.save_images_before_highres_fix:
        _save_sample(p, index, image, suffix="-before-highres-fix")


def upscale_for_hires(p: StableDiffusionProcessingTxt2Img, samples: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """First-pass latents → second-pass start latents and image conditioning (latent or image path)."""
    from modules import images, upscaling
    width, height = p.hr_upscale_to_x, p.hr_upscale_to_y
    if p.latent_scale_mode is not None:
        mode_name = p.hr_upscaler if p.hr_upscaler is not None else upscaling.latent_upscale_default_mode
        if shared.opts.save_images_before_highres_fix:
            for i, decoded in enumerate(decode_latent_batch(p.sd_model, samples)):
                _save_before_highres(p, sample_to_image(torch.clamp((decoded + 1) / 2, 0, 1)), i)
        upscaled = upscaling.upscale_latent(samples, mode_name, height // opt_f, width // opt_f)
        return upscaled, p.txt2img_image_conditioning(upscaled, width, height)
    decoded = decode_latent_batch(p.sd_model, samples, target_device=torch.device("cpu"), check_for_nans=True)
    arrays = []
    for i, x_sample in enumerate(decoded):
        image = sample_to_image(torch.clamp((x_sample.float() + 1.0) / 2.0, 0.0, 1.0))
        _save_before_highres(p, image, i)
        arrays.append(image_to_array(images.resize_image(0, image, width, height, upscaler_name=p.hr_upscaler)))
    batch = torch.from_numpy(np.stack(arrays))
    latents = images_tensor_to_samples(batch, p.sd_model)
    return latents, p.img2img_image_conditioning(batch * 2 - 1, latents)


def sample_hr_pass(p: StableDiffusionProcessingTxt2Img, samples: torch.Tensor) -> torch.Tensor:
    """Upscale, crop, fresh noise from the same seeds, second img2img pass; returns decoded images."""
    from modules import sd_models, sd_samplers
    if shared.state.interrupted:
        return samples
    previous = None
    if p.hr_checkpoint_info is not None:
        previous = getattr(p.sd_model, "sd_checkpoint_info", None)
        sd_models.reload_model_weights(info=p.hr_checkpoint_info)
    p.is_hr_pass = True
    try:
        samples, image_conditioning = upscale_for_hires(p, samples)
        shared.state.nextjob()
        ty, tx = p.truncate_y, p.truncate_x
        samples = samples[:, :, ty // 2:samples.shape[2] - (ty + 1) // 2, tx // 2:samples.shape[3] - (tx + 1) // 2]
        p.rng = rng.ImageRNG(samples.shape[1:], p.seeds, subseeds=p.subseeds, subseed_strength=p.subseed_strength,
                             seed_resize_from_h=p.seed_resize_from_h, seed_resize_from_w=p.seed_resize_from_w)
        noise = p.rng.next()
        p.calculate_hr_conds()
        _run_hook(p, "before_hr")
        _run_hook(p, "process_before_every_sampling", x=samples, noise=noise, c=p.hr_c, uc=p.hr_uc)
        samples = _second_pass(p, sd_samplers, samples, noise, image_conditioning)
        decoded = torch.stack(decode_latent_batch(p.sd_model, samples, target_device=torch.device("cpu"),
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


# --- img2img and inpainting -----------------------------------------------------------------------
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


def prepare_inpaint_mask(p: StableDiffusionProcessingImg2Img) -> tuple[Image.Image | None, tuple | None]:
    """Binary mask → invert → blur; for "only masked" the crop region and the mask at processing size.

    Fills `p.mask_for_overlay`, `p.paste_to` and the mask infotext keys. Returns the mask the
    latent mask is made from, and the crop region (None for the whole picture).
    """
    from modules import images
    mask = masking.create_binary_mask(p.image_mask, round=p.mask_round)
    if p.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
        p.extra_generation_params["Mask mode"] = "Inpaint not masked"
    if p.mask_blur_x > 0 or p.mask_blur_y > 0:
        mask = masking.blur_mask(mask, p.mask_blur_x, p.mask_blur_y)
        p.extra_generation_params["Mask blur"] = p.mask_blur
    if not p.inpaint_full_res:
        mask = images.resize_image(p.resize_mode if p.resize_mode != 3 else 0, mask, p.width, p.height)
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


def _prepare_init_image(p: StableDiffusionProcessingImg2Img, img: Image.Image, image_mask: Image.Image | None,
                        latent_mask: Image.Image | None, crop: tuple | None) -> np.ndarray:
    """One init image: flatten, resize, overlay of the original, crop, masked-area fill, colour target."""
    from modules import images
    opts = shared.opts
    _save_init_image(p, img)
    image = images.flatten(img, opts.img2img_background_color)
    if crop is None and p.resize_mode != 3:
        image = images.resize_image(p.resize_mode, image, p.width, p.height)
    if image_mask is not None:
        if p.mask_for_overlay.size != image.size:
            p.mask_for_overlay = images.resize_image(p.resize_mode if p.resize_mode != 3 else 0,
                                                     p.mask_for_overlay, image.width, image.height)
        p.overlay_images.append(masking.overlay_image(image, p.mask_for_overlay))
    if crop is not None:
        image = images.resize_image(2, image.crop(crop), p.width, p.height)
    if image_mask is not None and p.inpainting_fill != 1:
        image = masking.fill(image, latent_mask)
        if p.inpainting_fill == 0:
            p.extra_generation_params["Masked content"] = "fill"
    if p.color_corrections is not None:
        p.color_corrections.append(setup_color_correction(image))
    return image_to_array(image)


def _save_init_image(p: StableDiffusionProcessingImg2Img, img: Image.Image) -> None:
    """Option `save_init_img`: keep the init image by its md5, which becomes `Init image hash`."""
    import hashlib
    from modules import images
    if not shared.opts.save_init_img:
        return
    p.init_img_hash = hashlib.md5(img.tobytes()).hexdigest()
    images.save_image(img, _data_dir(shared.opts.outdir_init_images), None, forced_filename=p.init_img_hash,
                      save_to_dirs=False)


def init_img2img(p: StableDiffusionProcessingImg2Img, all_seeds: list[int]) -> None:
    """img2img `init`: sampler, mask, init images → `init_latent`, latent masks, image conditioning."""
    from modules import sd_samplers
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
    p.init_latent = images_tensor_to_samples(batch, p.sd_model)
    if p.resize_mode == 3:
        p.init_latent = torch.nn.functional.interpolate(p.init_latent, size=(p.height // opt_f, p.width // opt_f),
                                                        mode="bilinear")
    if image_mask is not None:
        _latent_masks(p, latent_mask, all_seeds)
    p.image_conditioning = p.img2img_image_conditioning(batch * 2 - 1, p.init_latent, image_mask, p.mask_round)


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
    channels, height, width = p.init_latent.shape[1:]
    nmask = masking.latent_mask(latent_mask, height, width, channels, p.mask_round)
    device, dtype = p.init_latent.device, p.init_latent.dtype
    p.mask = torch.asarray(1.0 - nmask).to(device=device, dtype=dtype)
    p.nmask = torch.asarray(nmask).to(device=device, dtype=dtype)
    if p.inpainting_fill == 2:
        noise = create_random_tensors(p.init_latent.shape[1:], all_seeds[0:p.init_latent.shape[0]])
        p.init_latent = p.init_latent * p.mask + noise.to(device=device, dtype=dtype) * p.nmask
        p.extra_generation_params["Masked content"] = "latent noise"
    elif p.inpainting_fill == 3:
        p.init_latent = p.init_latent * p.mask
        p.extra_generation_params["Masked content"] = "latent nothing"


def sample_img2img(p: StableDiffusionProcessingImg2Img, conditioning: Any,
                   unconditional_conditioning: Any) -> torch.Tensor:
    """Noise × initial_noise_multiplier, the sampler's img2img run, then the kept area blended back."""
    x = p.rng.next()
    if p.initial_noise_multiplier != 1.0:
        p.extra_generation_params["Noise multiplier"] = p.initial_noise_multiplier
        x = x * p.initial_noise_multiplier
    _run_hook(p, "process_before_every_sampling", x=p.init_latent, noise=x, c=conditioning,
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


__all__ = [
    "SERENA_VERSION", "StableDiffusionProcessing", "StableDiffusionProcessingTxt2Img",
    "StableDiffusionProcessingImg2Img", "Processed", "process_images", "process_images_inner",
    "create_infotext", "get_fixed_seed", "fix_seed", "create_random_tensors", "decode_latent_batch",
    "apply_overlay", "apply_color_correction", "setup_color_correction", "slerp",
    "old_hires_fix_first_pass_dimensions", "images_tensor_to_samples", "decode_first_stage",
]
