"""Glue for the Karras-sigma samplers: sigma schedule from options, noise, CFG wrapper, then one
call of a pure function from `modules.samplers.kdiffusion`."""
from __future__ import annotations

from typing import Any

import torch

from modules import errors, sd_samplers_common, sd_schedulers, shared
from modules.samplers import denoisers, kdiffusion as k
from modules.samplers.utils import BrownianTreeNoiseSampler
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from modules.sd_samplers_common import SamplerData

CFGDenoiserKDiffusion = CFGDenoiser
"""A1111's name for the CFG denoiser the k-diffusion samplers use (one class in Serena)."""

# (display name, function, aliases, options) in A1111's /samplers order.
samplers_k_diffusion: list[tuple[str, Any, list[str], dict[str, Any]]] = [
    ("DPM++ 2M", k.sample_dpmpp_2m, ["k_dpmpp_2m"], {"scheduler": "karras"}),
    ("DPM++ SDE", k.sample_dpmpp_sde, ["k_dpmpp_sde"], {"scheduler": "karras", "second_order": True, "brownian_noise": True}),
    ("DPM++ 2M SDE", k.sample_dpmpp_2m_sde, ["k_dpmpp_2m_sde"], {"scheduler": "exponential", "brownian_noise": True}),
    ("DPM++ 2M SDE Heun", k.sample_dpmpp_2m_sde, ["k_dpmpp_2m_sde_heun"],
     {"scheduler": "exponential", "brownian_noise": True, "solver_type": "heun"}),
    ("DPM++ 2S a", k.sample_dpmpp_2s_ancestral, ["k_dpmpp_2s_a"], {"scheduler": "karras", "uses_ensd": True, "second_order": True}),
    ("DPM++ 3M SDE", k.sample_dpmpp_3m_sde, ["k_dpmpp_3m_sde"],
     {"scheduler": "exponential", "discard_next_to_last_sigma": True, "brownian_noise": True}),
    ("Euler a", k.sample_euler_ancestral, ["k_euler_a", "k_euler_ancestral"], {"uses_ensd": True}),
    ("Euler", k.sample_euler, ["k_euler"], {}),
    ("LMS", k.sample_lms, ["k_lms"], {}),
    ("Heun", k.sample_heun, ["k_heun"], {"second_order": True}),
    ("DPM2", k.sample_dpm_2, ["k_dpm_2"], {"scheduler": "karras", "discard_next_to_last_sigma": True, "second_order": True}),
    ("DPM2 a", k.sample_dpm_2_ancestral, ["k_dpm_2_a"],
     {"scheduler": "karras", "discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True}),
    ("DPM fast", k.sample_dpm_fast, ["k_dpm_fast"], {"uses_ensd": True}),
    ("DPM adaptive", k.sample_dpm_adaptive, ["k_dpm_ad"], {"uses_ensd": True}),
    ("Restart", k.sample_restart, ["restart"], {"scheduler": "karras", "second_order": True}),
]

# knobs each function takes from p / options (A1111's sampler_extra_params)
sampler_extra_params: dict[str, list[str]] = {
    "sample_euler": ["s_churn", "s_tmin", "s_tmax", "s_noise"],
    "sample_heun": ["s_churn", "s_tmin", "s_tmax", "s_noise"],
    "sample_dpm_2": ["s_churn", "s_tmin", "s_tmax", "s_noise"],
    "sample_dpm_fast": ["s_noise"],
    "sample_dpm_2_ancestral": ["s_noise"],
    "sample_dpmpp_2s_ancestral": ["s_noise"],
    "sample_dpmpp_sde": ["s_noise"],
    "sample_dpmpp_2m_sde": ["s_noise"],
    "sample_dpmpp_3m_sde": ["s_noise"],
}


def karras_denoiser(model: Any) -> denoisers.EpsDenoiser:
    """The Karras denoiser adapter for the model's parameterisation."""
    param = getattr(model, "parameterization", "eps")
    if param not in ("eps", "v"):
        raise errors.UnsupportedModel(f"unsupported parameterization {param!r}; expected 'eps' or 'v'")
    cls = denoisers.VDenoiser if param == "v" else denoisers.EpsDenoiser
    return cls(model, quantize=bool(shared.opts.enable_quantization))


class KDiffusionSampler(sd_samplers_common.Sampler):
    """A sampler object over Karras sigmas (A1111's KDiffusionSampler)."""

    def __init__(self, func: Any, model: Any, model_wrap: denoisers.EpsDenoiser | None = None):
        super().__init__(func, model)
        self.model_wrap = model_wrap if model_wrap is not None else self.make_model_wrap(model)
        self.extra_params = sampler_extra_params.get(self.funcname, [])
        self.model_wrap_cfg = CFGDenoiser(self.model_wrap, self, use_image_cond=bool(getattr(model, "is_inpainting", False)))

    def make_model_wrap(self, model: Any) -> denoisers.EpsDenoiser:
        """The Karras denoiser for `model` (LCM's own adapter for the LCM sampler)."""
        if self.func is k.sample_lcm:
            return denoisers.LCMDenoiser(model)
        return karras_denoiser(model)

    # --- sigmas --------------------------------------------------------------------------------
    def _scheduler(self, p: Any) -> sd_schedulers.Scheduler | None:
        name = (getattr(p, "hr_scheduler", None) if getattr(p, "is_hr_pass", False) else getattr(p, "scheduler", None))
        scheduler = sd_schedulers.find_scheduler(name or "Automatic")
        if scheduler.name == "automatic":
            default = self.config.options.get("scheduler") if self.config else None
            return sd_schedulers.find_scheduler(default) if default else None
        return scheduler

    def get_sigmas(self, p: Any, steps: int) -> torch.Tensor:
        """The sigma schedule for `steps` steps per scheduler, options and sampler flags."""
        discard = bool(self.config and self.config.options.get("discard_next_to_last_sigma", False))
        if shared.opts.always_discard_next_to_last_sigma and not discard:
            discard = True
            p.extra_generation_params["Discard penultimate sigma"] = True
        steps += 1 if discard else 0
        scheduler = self._scheduler(p)
        m_min, m_max = self.model_wrap.sigmas[0].item(), self.model_wrap.sigmas[-1].item()
        sigma_min, sigma_max = (0.1, 10.0) if shared.opts.use_old_karras_scheduler_sigmas else (m_min, m_max)
        override = getattr(p, "sampler_noise_scheduler_override", None)
        if override:
            sigmas = override(steps)
        elif scheduler is None or scheduler.function is None:
            sigmas = self.model_wrap.get_sigmas(steps)
        else:
            sigmas = self._scheduled_sigmas(p, scheduler, steps, sigma_min, sigma_max, m_min, m_max)
        if discard:
            sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
        return sigmas.cpu()

    def _scheduled_sigmas(self, p, scheduler, steps, sigma_min, sigma_max, m_min, m_max) -> torch.Tensor:
        kwargs: dict[str, Any] = {"sigma_min": sigma_min, "sigma_max": sigma_max}
        opts = shared.opts
        if not getattr(p, "is_hr_pass", False):
            p.extra_generation_params["Schedule type"] = scheduler.label
        elif scheduler.label != p.extra_generation_params.get("Schedule type"):
            p.extra_generation_params["Hires schedule type"] = scheduler.label  # only when it differs
        if opts.sigma_min != 0 and opts.sigma_min != m_min:
            kwargs["sigma_min"] = opts.sigma_min
            p.extra_generation_params["Schedule min sigma"] = opts.sigma_min
        if opts.sigma_max != 0 and opts.sigma_max != m_max:
            kwargs["sigma_max"] = opts.sigma_max
            p.extra_generation_params["Schedule max sigma"] = opts.sigma_max
        if scheduler.default_rho != -1 and opts.rho != 0 and opts.rho != scheduler.default_rho:
            kwargs["rho"] = opts.rho
            p.extra_generation_params["Schedule rho"] = opts.rho
        if scheduler.need_inner_model:
            kwargs["inner_model"] = self.model_wrap
        if scheduler.name == "beta":
            p.extra_generation_params["Beta schedule alpha"] = opts.beta_dist_alpha
            p.extra_generation_params["Beta schedule beta"] = opts.beta_dist_beta
        return scheduler.function(n=steps, **kwargs, device="cpu")

    # --- noise ---------------------------------------------------------------------------------
    def create_noise_sampler(self, x: torch.Tensor, sigmas: torch.Tensor, p: Any):
        """Brownian-tree noise seeded with the batch's seeds (batch-size independent), unless
        `no_dpmpp_sde_batch_determinism` is set (then the sampler draws its own tree)."""
        if shared.opts.no_dpmpp_sde_batch_determinism:
            return None
        seeds = getattr(p, "seeds", None)
        if not seeds or len(seeds) != x.shape[0]:
            it, bs = getattr(p, "iteration", 0), getattr(p, "batch_size", x.shape[0])
            seeds = p.all_seeds[it * bs:(it + 1) * bs]
        positive = sigmas[sigmas > 0]
        return BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), seed=list(seeds))

    def _func_kwargs(self, p: Any, x: torch.Tensor, sigmas_full: torch.Tensor) -> dict[str, Any]:
        kwargs = self.initialize(p)
        if self.accepts("noise_sampler"):
            brownian = self.config is not None and self.config.options.get("brownian_noise", False)
            noise_sampler = self.create_noise_sampler(x, sigmas_full, p) if brownian else sd_samplers_common.rng_noise_sampler(p, x)
            if noise_sampler is not None:
                kwargs["noise_sampler"] = noise_sampler
        if self.config is not None and self.config.options.get("solver_type") == "heun":
            kwargs["solver_type"] = "heun"
        return kwargs

    def _extra_args(self, p, conditioning, unconditional_conditioning, image_conditioning) -> dict[str, Any]:
        self.sampler_extra_args = {"cond": conditioning, "image_cond": image_conditioning,
                                   "uncond": unconditional_conditioning, "cond_scale": p.cfg_scale,
                                   "s_min_uncond": self.s_min_uncond}
        return self.sampler_extra_args

    # --- entry points --------------------------------------------------------------------------
    def sample(self, p: Any, x: torch.Tensor, conditioning: Any, unconditional_conditioning: Any,
               steps: int | None = None, image_conditioning: torch.Tensor | None = None) -> torch.Tensor:
        """txt2img: `x` is unit noise; it is scaled to the first sigma here."""
        steps = steps or p.steps
        sigmas = self.get_sigmas(p, steps)
        if shared.opts.sgm_noise_multiplier:
            p.extra_generation_params["SGM noise multiplier"] = True
            x = x * torch.sqrt(1.0 + sigmas[0] ** 2.0)
        else:
            x = x * sigmas[0]
        kwargs = self._func_kwargs(p, x, sigmas)
        if self.accepts("n"):
            kwargs["n"] = steps
        if self.accepts("sigma_min"):
            kwargs["sigma_min"] = self.model_wrap.sigmas[0].item()
            kwargs["sigma_max"] = self.model_wrap.sigmas[-1].item()
        if self.accepts("sigmas"):
            kwargs["sigmas"] = sigmas.to(x.device)
        self.model_wrap_cfg.init_latent = None
        self.last_latent = x
        extra_args = self._extra_args(p, conditioning, unconditional_conditioning, image_conditioning)
        return self.launch_sampling(steps, lambda: self.func(self.model_wrap_cfg, x, extra_args=extra_args,
                                                             callback=self.callback_state, **kwargs))

    def sample_img2img(self, p: Any, x: torch.Tensor, noise: torch.Tensor, conditioning: Any,
                       unconditional_conditioning: Any, steps: int | None = None,
                       image_conditioning: torch.Tensor | None = None) -> torch.Tensor:
        """img2img: `x` is the init latent; noise at the truncated schedule's first sigma is added."""
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        sigmas = self.get_sigmas(p, steps)
        sigma_sched = sigmas[steps - t_enc - 1:]
        xi = x + noise * sigma_sched[0]
        xi = self._extra_noise(p, x, xi, noise, 1.0)
        kwargs = self._func_kwargs(p, x, sigmas)
        if self.accepts("sigma_min"):
            kwargs["sigma_min"] = sigma_sched[-2]  # the last sigma is 0, which DPM fast/adaptive reject
        if self.accepts("sigma_max"):
            kwargs["sigma_max"] = sigma_sched[0]
        if self.accepts("n"):
            kwargs["n"] = len(sigma_sched) - 1
        if self.accepts("sigmas"):
            kwargs["sigmas"] = sigma_sched.to(x.device)
        self.model_wrap_cfg.init_latent = x
        self.last_latent = x
        extra_args = self._extra_args(p, conditioning, unconditional_conditioning, image_conditioning)
        return self.launch_sampling(t_enc + 1, lambda: self.func(self.model_wrap_cfg, xi, extra_args=extra_args,
                                                                 callback=self.callback_state, **kwargs))

    @staticmethod
    def _extra_noise(p: Any, x: torch.Tensor, xi: torch.Tensor, noise: torch.Tensor, scale: Any) -> torch.Tensor:
        """Option `img2img_extra_noise`: more noise on top, through the `on_extra_noise` hook."""
        amount = shared.opts.img2img_extra_noise
        if not amount or amount <= 0:
            return xi
        p.extra_generation_params["Extra noise"] = amount
        try:
            from modules import script_callbacks
            params = script_callbacks.ExtraNoiseParams(noise, x, xi)
            script_callbacks.extra_noise_callback(params)
            noise = params.noise
        except ImportError:
            pass
        return xi + noise * amount * scale


def lcm_sampler(model: Any) -> KDiffusionSampler:
    """LCM: the consistency sampler over the 50 LCM timesteps."""
    return KDiffusionSampler(k.sample_lcm, model)


samplers_data_k_diffusion: list[SamplerData] = [
    SamplerData(label, (lambda model, func=func: KDiffusionSampler(func, model)), tuple(aliases), options)
    for label, func, aliases, options in samplers_k_diffusion
]

samplers_data_lcm: list[SamplerData] = [SamplerData("LCM", lcm_sampler, ("k_lcm",), {})]
