"""What every sampler glue object shares: the registry record, img2img step arithmetic, noise from
`p.rng`, progress/interrupt handling and the A1111 infotext rules for eta and the churn knobs.

Kept under A1111's module name because extensions import `SamplerData` and
`InterruptedException` from here.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from modules import shared


class InterruptedException(BaseException):
    """Raised inside the sampling loop to stop it; `launch_sampling` turns it into the last latent."""


@dataclass(frozen=True)
class SamplerData:
    """A registry entry: A1111 display name, constructor(model) -> sampler, aliases, options."""

    name: str
    constructor: Callable[[Any], Any]
    aliases: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    def total_steps(self, steps: int) -> int:
        """Model calls a prompt schedule sees: doubled for second-order samplers."""
        return steps * 2 if self.options.get("second_order", False) else steps

    def api_options(self) -> dict[str, str]:
        """Options as the `/sdapi/v1/samplers` route shows them (values as strings)."""
        return {k: str(v) for k, v in self.options.items()}


def setup_img2img_steps(p: Any, steps: int | None = None) -> tuple[int, int]:
    """(schedule length, t_enc) for img2img: truncate by denoising strength, or stretch so that
    exactly `steps` run when `img2img_fix_steps` is on or steps are passed explicitly (hires)."""
    if shared.opts.img2img_fix_steps or steps is not None:
        requested = steps or p.steps
        steps = int(requested / min(p.denoising_strength, 0.999)) if p.denoising_strength > 0 else 0
        t_enc = requested - 1
    else:
        steps = p.steps
        t_enc = int(min(p.denoising_strength, 0.999) * steps)
    return steps, t_enc


def is_sampler_using_eta_noise_seed_delta(p: Any) -> bool:
    """Whether ENSD affects this job's images (infotext writes ENSD only then)."""
    from modules import sd_samplers
    config = sd_samplers.find_sampler_config(p.sampler_name)
    eta = p.eta
    if eta is None and getattr(p, "sampler", None) is not None:
        eta = p.sampler.eta
    if eta is None:
        eta = 0 if config.options.get("default_eta_is_0", False) else 1.0
    return eta != 0 and bool(config.options.get("uses_ensd", False))


def rng_noise_sampler(p: Any, x: torch.Tensor) -> Callable[[Any, Any], torch.Tensor]:
    """Per-step noise from the job's per-image generators (`p.rng.next()`), so a batch matches
    single images; falls back to `torch.randn_like` when there is no rng or the shape differs."""
    rng = getattr(p, "rng", None)

    def sample(sigma: Any, sigma_next: Any) -> torch.Tensor:
        if rng is not None:
            noise = rng.next()
            if noise.shape == x.shape:
                return noise.to(device=x.device, dtype=x.dtype)
        return torch.randn_like(x)

    return sample


def _opt_or(p: Any, name: str, default: Any = None) -> Any:
    value = getattr(p, name, None)
    return value if value is not None else getattr(shared.opts, name, default)


class Sampler:
    """Base of the glue objects `create_sampler` returns (k-diffusion and timestep families)."""

    eta_option_field = "eta_ancestral"
    eta_infotext_field = "Eta"
    eta_default = 1.0

    def __init__(self, func: Callable[..., torch.Tensor], model: Any):
        self.func = func
        self.funcname = getattr(func, "__name__", str(func))
        self.sd_model = model
        self.config: SamplerData | None = None  # set by create_sampler
        self.extra_params: list[str] = []
        self.eta: float | None = None
        self.s_min_uncond = 0.0
        self.last_latent: torch.Tensor | None = None
        self.stop_at: int | None = None
        self.p: Any = None
        self.model_wrap_cfg: Any = None
        self.sampler_extra_args: dict[str, Any] = {}
        self.total_sampling_steps = 0

    # --- progress ------------------------------------------------------------------------------
    def callback_state(self, d: dict) -> None:
        """Per-step report: progress, live latent, and the stop/interrupt check."""
        step = int(d["i"])
        if d.get("denoised") is not None:
            shared.state.current_latent = d["denoised"]
        shared.state.sampling_callback(step, self.total_sampling_steps)
        if (self.stop_at is not None and step > self.stop_at) or shared.state.interrupted or shared.state.skipped:
            raise InterruptedException

    def launch_sampling(self, steps: int, func: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Run `func`; on interrupt/skip return the latest denoised latent (what was made so far)."""
        self.total_sampling_steps = steps
        self.model_wrap_cfg.total_steps = self.config.total_steps(steps) if self.config else steps
        shared.state.sampling_steps = steps
        shared.state.sampling_step = 0
        try:
            return func()
        except InterruptedException:
            return self.last_latent

    def number_of_needed_noises(self, p: Any) -> int:
        return p.steps

    # --- parameters ----------------------------------------------------------------------------
    def accepts(self, name: str) -> bool:
        return name in inspect.signature(self.func).parameters

    def initialize(self, p: Any) -> dict[str, Any]:
        """Reset the CFG wrapper for `p` and return the knob kwargs for `self.func`, writing the
        infotext keys of values that differ from A1111's defaults."""
        self.p = p
        cfg = self.model_wrap_cfg
        cfg.p = p
        cfg.mask = getattr(p, "mask", None)
        cfg.nmask = getattr(p, "nmask", None)
        cfg.step = 0
        cfg.image_cfg_scale = getattr(p, "image_cfg_scale", None)
        self.eta = p.eta if getattr(p, "eta", None) is not None else getattr(shared.opts, self.eta_option_field, 0.0)
        self.s_min_uncond = _opt_or(p, "s_min_uncond", 0.0) or 0.0
        kwargs: dict[str, Any] = {}
        if self.accepts("eta"):
            if self.eta != self.eta_default:
                p.extra_generation_params[self.eta_infotext_field] = self.eta
            kwargs["eta"] = self.eta
        defaults = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0}
        labels = {"s_churn": "Sigma churn", "s_tmin": "Sigma tmin", "s_tmax": "Sigma tmax", "s_noise": "Sigma noise"}
        for name in self.extra_params:
            if not self.accepts(name):
                continue
            value = _opt_or(p, name, defaults[name])
            if name == "s_tmax":
                value = value or float("inf")  # 0 means infinity
            if value != defaults[name]:
                kwargs[name] = value
                setattr(p, name, value)
                p.extra_generation_params[labels[name]] = value
        return kwargs

    # --- model switch (refiner) ----------------------------------------------------------------
    def switch_model(self, model: Any) -> None:
        """Continue sampling with `model` (the refiner): rebuild the denoiser adapter around it."""
        self.sd_model = model
        self.model_wrap = self.make_model_wrap(model)
        self.model_wrap_cfg.inner_model = self.model_wrap
        self.model_wrap_cfg.use_image_cond = bool(getattr(model, "is_inpainting", False))

    def make_model_wrap(self, model: Any) -> Any:
        """The denoiser adapter this sampler family puts around a model."""
        raise NotImplementedError(f"{type(self).__name__} cannot switch models")


def refiner_completed_ratio(cfg_denoiser: Any, sigma: Any) -> float:
    """How far sampling is, for the refiner switch: by model timestep (A1111's default: the
    timestep nearest to the largest sigma of the batch, as (999 - t) / 1000), or by sampling steps
    with the option `refiner_switch_by_sample_steps`."""
    if shared.opts.refiner_switch_by_sample_steps or sigma is None:
        cfg_denoiser.p.extra_generation_params["Refiner switch by sampling steps"] = True
        return cfg_denoiser.step / max(cfg_denoiser.total_steps, 1)
    if cfg_denoiser.timesteps:  # timestep samplers pass the DDPM timestep where sigma would be
        timestep = int(torch.max(sigma).item())
    else:
        sigmas = cfg_denoiser.inner_model.sigmas.to(sigma.device)
        timestep = int(torch.argmin(torch.abs(sigmas - torch.max(sigma))).item())
    return (999 - timestep) / 1000


def apply_refiner(cfg_denoiser: Any, sigma: Any = None) -> bool:
    """Switch the job to its refiner checkpoint when sampling has come far enough (A1111 name).

    Returns whether it switched; the caller then takes the new conditioning from
    `sampler.sampler_extra_args`. With hires fix, the option `hires_fix_refiner_pass` picks the
    pass ("first pass", "second pass", "both passes").
    """
    p = cfg_denoiser.p
    info = getattr(p, "refiner_checkpoint_info", None)
    if info is None or getattr(shared.sd_model, "sd_checkpoint_info", None) is info:
        return False
    switch_at = p.refiner_switch_at
    if switch_at is not None and refiner_completed_ratio(cfg_denoiser, sigma) < switch_at:
        return False
    if getattr(p, "enable_hr", False):
        which = shared.opts.hires_fix_refiner_pass
        second = bool(getattr(p, "is_hr_pass", False))
        if (which == "first pass" and second) or (which == "second pass" and not second):
            return False
        if which != "second pass":
            p.extra_generation_params["Hires refiner"] = which
    from modules import devices, sd_models
    model = sd_models.reload_model_weights(info=info)
    devices.torch_gc()
    p.extra_generation_params["Refiner"] = info.short_title  # after loading, which hashes a new file
    p.extra_generation_params["Refiner switch at"] = switch_at
    if getattr(p, "is_hr_pass", False):
        p.calculate_hr_conds()
        cond, uncond = p.hr_c, p.hr_uc
    else:
        p.setup_conds()
        cond, uncond = p.get_conds()
    sampler = cfg_denoiser.sampler
    sampler.switch_model(model)
    sampler.sampler_extra_args["cond"] = cond
    sampler.sampler_extra_args["uncond"] = uncond
    return True



# --- A1111's latent → picture helpers (extensions showing previews call them) --------------------------
approximation_indexes = {"Full": 0, "Approx NN": 1, "Approx cheap": 2, "TAESD": 3}
"""A1111's live-preview decoders; Serena decodes every preview with the full VAE."""


def single_sample_to_image(sample: torch.Tensor, approximation: int | None = None) -> Any:
    """One latent (C×H×W) → RGB PIL image, decoded with the current model's VAE."""
    from modules import processing
    decoded = processing.decode_first_stage(shared.sd_model, sample.unsqueeze(0))[0]
    return processing.sample_to_image(torch.clamp((decoded.float() + 1.0) / 2.0, 0.0, 1.0))


def sample_to_image(samples: torch.Tensor, index: int = 0, approximation: int | None = None) -> Any:
    """Latent `index` of a batch → RGB PIL image."""
    return single_sample_to_image(samples[index], approximation)


def samples_to_image_grid(samples: torch.Tensor, approximation: int | None = None) -> Any:
    """Every latent of a batch, decoded, as one grid image."""
    from modules import images
    return images.image_grid([single_sample_to_image(sample, approximation) for sample in samples])


def images_tensor_to_samples(image: torch.Tensor, approximation: int | None = None, model: Any = None) -> torch.Tensor:
    """Images in [0, 1] (B×3×H×W) → scaled latents of `model` (default: the current model)."""
    from modules import processing
    return processing.images_tensor_to_samples(image, model if model is not None else shared.sd_model)


def store_latent(decoded: torch.Tensor) -> None:
    """Make `decoded` (the latest latent) the state's current latent, as A1111's samplers do."""
    shared.state.current_latent = decoded
