"""img2img alternative test (A1111's built-in img2img script): find the noise that reconstructs the
init image, then sample from that noise.

The sampler is run backwards: starting from the init image's latent at sigma 0, Euler steps up the
sigma schedule with the "original" prompts give a noise the model would denoise back into that
image (`reverse_euler`). Sampling then starts from this noise — blended with the job's seeded
noise by `randomness` — instead of from fresh noise, so a changed prompt edits the picture
while its layout stays. The hook is `p.sample`, replaced for this job only: the generation still
runs through `processing.process_images` and its stages (hooks, decoding, infotext, saving).

Arguments, in the order API clients send them (A1111 v1.10): the info text (ignored),
`override_sampler` (True: use Euler, which the method is built for), `override_prompt` (True:
the prompts become the original ones), `original_prompt` (""), `original_negative_prompt` (""),
`override_steps` (True: steps become the decode steps), `st` (decode steps, 50),
`override_strength` (True: denoising strength 1), `cfg` (decode CFG scale, 1.0), `randomness`
(0.0) and `sigma_adjustment` (False: briansemrau's variant of the reverse step).

The found noise is kept for the next run with the same settings and the same init latent. Only the
Karras-sigma (k-diffusion) samplers can be used; others are refused with a 4xx. Difference from
A1111: the found noise is scaled by the first sigma of the schedule the sampler really uses (A1111
takes the default schedule's, which differs for other schedulers or a strength below 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr
import torch

from modules import errors, processing, prompt_parser, sd_samplers, sd_samplers_common, sd_samplers_kdiffusion, scripts
from modules import processing_scripts_common as common, shared
from modules.processing_stages import run_hook
from modules.samplers.utils import append_dims

TITLE = "img2img alternative test"
REVERSIBLE_SAMPLERS = frozenset(name for name, *_ in sd_samplers_kdiffusion.samplers_k_diffusion)
"""Samplers over Karras sigmas, whose schedule the reverse pass can climb."""

Denoise = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""`(x, sigma for the input scalings, sigma for the timestep) -> guided denoised x`."""


@dataclass(frozen=True)
class DecodeSettings:
    """What the reverse pass depends on (besides the init latent and the model)."""

    original_prompt: str
    original_negative_prompt: str
    cfg: float
    steps: int
    sigma_adjustment: bool


@dataclass
class CachedNoise:
    """The noise found for `latent` with `settings` on the model `model_key` (object and weights hash)."""

    settings: DecodeSettings
    model_key: tuple
    latent: torch.Tensor
    noise: torch.Tensor

    def matches(self, settings: DecodeSettings, model_key: tuple, latent: torch.Tensor) -> bool:
        return (self.settings == settings and self.model_key == model_key and self.latent.shape == latent.shape
                and torch.allclose(self.latent, latent.to(self.latent), atol=1e-3))


# --- the reverse pass -------------------------------------------------------------------------------
def guided_denoiser(model_wrap: Any, cond: Any, uncond: Any, cfg_scale: float,
                    image_cond: torch.Tensor | None = None) -> Denoise:
    """A classifier-free-guided Karras denoiser whose input scalings and timestep may come from
    different sigmas (the sigma-adjusted reverse step needs that)."""
    def one(x: torch.Tensor, sigma_in: torch.Tensor, sigma_t: torch.Tensor, conditioning: Any) -> torch.Tensor:
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in model_wrap.get_scalings(sigma_in))
        x_in = x * c_in
        if image_cond is not None:
            x_in = torch.cat([x_in, image_cond.to(x_in)], dim=1)
        out = model_wrap.inner_model.apply_model(x_in, model_wrap.sigma_to_t(sigma_t), conditioning)
        return x * c_skip + out.to(x) * c_out

    def denoise(x: torch.Tensor, sigma_in: torch.Tensor, sigma_t: torch.Tensor) -> torch.Tensor:
        denoised = one(x, sigma_in, sigma_t, cond)
        if cfg_scale == 1.0:  # uncond + (cond - uncond) * 1 is cond: spare the second model call
            return denoised
        denoised_uncond = one(x, sigma_in, sigma_t, uncond)
        return denoised_uncond + (denoised - denoised_uncond) * cfg_scale

    return denoise


def reverse_euler(denoise: Denoise, x: torch.Tensor, sigmas: torch.Tensor,
                  sigma_adjustment: bool = False) -> torch.Tensor:
    """Euler steps from sigma 0 up an ascending schedule `sigmas` (sigmas[0] == 0): the noise that
    sampling down the same schedule would turn back into `x`.

    Plain: the derivative at each step's upper sigma; the result is normalised to unit deviation.
    `sigma_adjustment`: the derivative at the lower sigma (the first step's timestep and divisor
    taken from its upper sigma), the result divided by the largest sigma.
    """
    ones = x.new_ones([x.shape[0]])
    shared.state.sampling_steps = len(sigmas) - 1
    for i in range(1, len(sigmas)):
        if shared.state.interrupted:
            break
        shared.state.sampling_step += 1
        upper, lower = sigmas[i].to(x), sigmas[i - 1].to(x)
        if sigma_adjustment:
            denoised = denoise(x, lower * ones, (upper if i == 1 else lower) * ones)
            d = (x - denoised) / (2 * upper if i == 1 else lower)
        else:
            denoised = denoise(x, upper * ones, upper * ones)
            d = (x - denoised) / upper
        x = x + d * (upper - lower)
        sd_samplers_common.store_latent(x)
    shared.state.nextjob()
    return x / sigmas[-1].to(x) if sigma_adjustment else x / x.std()


def blend_noise(found: torch.Tensor, random: torch.Tensor, randomness: float) -> torch.Tensor:
    """Mix the found and the seeded noise, keeping unit variance for independent unit noises."""
    scale = math.sqrt(randomness ** 2 + (1 - randomness) ** 2)
    return ((1 - randomness) * found + randomness * random.to(found)) / scale


# --- arguments ---------------------------------------------------------------------------------------
def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise errors.InvalidParameter(f"{TITLE}: {name} must be true or false, got {value!r}", field="script_args")


def _text(value: Any, name: str) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    raise errors.InvalidParameter(f"{TITLE}: {name} must be a string, got {value!r}", field="script_args")


def _number(value: Any, name: str, low: float, high: float, integer: bool = False) -> float:
    return common.checked_number(TITLE, value, name, low, high, integer)


def check_sampler(name: str | None) -> None:
    """Refuse samplers without a Karras sigma schedule (DDIM, PLMS, UniPC, LCM, …)."""
    config = sd_samplers.find_sampler_config(name)
    if config.name not in REVERSIBLE_SAMPLERS:
        raise errors.InvalidParameter(
            f"{TITLE}: sampler {config.name!r} cannot be reversed; use one of {sorted(REVERSIBLE_SAMPLERS)} "
            f"or leave override_sampler on (Euler)", field="sampler_name")


class Script(scripts.Script):
    def __init__(self) -> None:
        self.cache: CachedNoise | None = None

    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool) -> bool:
        return is_img2img

    def ui(self, is_img2img: bool) -> list:
        info = gr.Markdown("* `CFG Scale` should be 2 or lower.")
        override_sampler = gr.Checkbox(value=True, elem_id=self.elem_id("override_sampler"),
                                       label="Override `Sampling method` to Euler?(this method is built for it)")
        override_prompt = gr.Checkbox(value=True, label="Override `prompt` to the same value as `original prompt`?"
                                      "(and `negative prompt`)", elem_id=self.elem_id("override_prompt"))
        original_prompt = gr.Textbox(value="", lines=1, label="Original prompt",
                                     elem_id=self.elem_id("original_prompt"))
        original_negative_prompt = gr.Textbox(value="", lines=1, label="Original negative prompt",
                                              elem_id=self.elem_id("original_negative_prompt"))
        override_steps = gr.Checkbox(value=True, label="Override `Sampling Steps` to the same value as `Decode steps`?",
                                     elem_id=self.elem_id("override_steps"))
        st = gr.Slider(minimum=1, maximum=150, step=1, value=50, label="Decode steps", elem_id=self.elem_id("st"))
        override_strength = gr.Checkbox(value=True, label="Override `Denoising strength` to 1?",
                                        elem_id=self.elem_id("override_strength"))
        cfg = gr.Slider(minimum=0.0, maximum=15.0, step=0.1, value=1.0, label="Decode CFG scale",
                        elem_id=self.elem_id("cfg"))
        randomness = gr.Slider(minimum=0.0, maximum=1.0, step=0.01, value=0.0, label="Randomness",
                               elem_id=self.elem_id("randomness"))
        sigma_adjustment = gr.Checkbox(value=False, label="Sigma adjustment for finding noise for image",
                                       elem_id=self.elem_id("sigma_adjustment"))
        return [info, override_sampler, override_prompt, original_prompt, original_negative_prompt,
                override_steps, st, override_strength, cfg, randomness, sigma_adjustment]

    def run(self, p: Any, _info: Any = None, override_sampler: Any = True, override_prompt: Any = True,
            original_prompt: Any = "", original_negative_prompt: Any = "", override_steps: Any = True,
            st: Any = 50, override_strength: Any = True, cfg: Any = 1.0, randomness: Any = 0.0,
            sigma_adjustment: Any = False) -> processing.Processed:
        settings = DecodeSettings(
            original_prompt=_text(original_prompt, "original_prompt"),
            original_negative_prompt=_text(original_negative_prompt, "original_negative_prompt"),
            cfg=_number(cfg, "cfg", 0.0, 100.0),
            steps=_number(st, "st", 1, max(int(shared.opts.api_max_steps), 1), integer=True),
            sigma_adjustment=_flag(sigma_adjustment, "sigma_adjustment"))
        randomness = _number(randomness, "randomness", 0.0, 1.0)
        if _flag(override_sampler, "override_sampler"):
            p.sampler_name = "Euler"
        if _flag(override_prompt, "override_prompt"):
            p.prompt, p.negative_prompt = settings.original_prompt, settings.original_negative_prompt
        if _flag(override_steps, "override_steps"):
            p.steps = settings.steps
        if _flag(override_strength, "override_strength"):
            p.denoising_strength = 1.0
        check_sampler(p.sampler_name)

        def sample(conditioning: Any, unconditional_conditioning: Any, seeds: Any = None, subseeds: Any = None,
                   subseed_strength: Any = None, prompts: Any = None) -> torch.Tensor:
            return self.sample(p, settings, randomness, conditioning, unconditional_conditioning)

        p.sample = sample  # this job only: `p` is discarded afterwards
        p.extra_generation_params.update({
            "Decode prompt": settings.original_prompt, "Decode negative prompt": settings.original_negative_prompt,
            "Decode CFG scale": settings.cfg, "Decode steps": settings.steps, "Randomness": randomness,
            "Sigma Adjustment": settings.sigma_adjustment})
        return processing.process_images(p)

    def sample(self, p: Any, settings: DecodeSettings, randomness: float, conditioning: Any,
               unconditional_conditioning: Any) -> torch.Tensor:
        """`p.sample` for this job: img2img from the found noise instead of fresh noise."""
        sampler = p.sampler
        noise = blend_noise(self.found_noise(p, sampler, settings), p.rng.next(), randomness)
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p)
        first_sigma = sampler.get_sigmas(p, steps)[steps - t_enc - 1].to(noise)
        run_hook(p, "process_before_every_sampling", x=p.init_latent, noise=noise, c=conditioning,
                 uc=unconditional_conditioning)
        # sample_img2img starts from init_latent + noise * first_sigma, i.e. from noise_found * first_sigma
        return sampler.sample_img2img(p, p.init_latent, noise - p.init_latent / first_sigma, conditioning,
                                      unconditional_conditioning, image_conditioning=p.image_conditioning)

    def found_noise(self, p: Any, sampler: Any, settings: DecodeSettings) -> torch.Tensor:
        """The reverse pass's noise for `p.init_latent`, reused when nothing it depends on changed."""
        model = p.sd_model
        model_key = (id(model), getattr(model, "sd_model_hash", None))
        if self.cache is not None and self.cache.matches(settings, model_key, p.init_latent):
            return self.cache.noise.to(p.init_latent)
        shared.state.job_count += 1
        batch = p.init_latent.shape[0]
        cond = model.get_learned_conditioning(
            prompt_parser.SdConditioning([settings.original_prompt] * batch, width=p.width, height=p.height))
        uncond = model.get_learned_conditioning(prompt_parser.SdConditioning(
            [settings.original_negative_prompt] * batch, is_negative_prompt=True, width=p.width, height=p.height))
        image_cond = p.image_conditioning if getattr(model, "is_inpainting", False) else None
        denoise = guided_denoiser(sampler.model_wrap, cond, uncond, settings.cfg, image_cond)
        sigmas = sampler.model_wrap.get_sigmas(settings.steps).flip(0)
        noise = reverse_euler(denoise, p.init_latent, sigmas, settings.sigma_adjustment)
        self.cache = CachedNoise(settings, model_key, p.init_latent.detach().clone(), noise.detach().clone())
        return noise
