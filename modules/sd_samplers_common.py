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
