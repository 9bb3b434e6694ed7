"""Glue for the samplers that step over DDPM timesteps (DDIM, DDIM CFG++, PLMS, UniPC).

They ignore the scheduler: timesteps are CompVis' "uniform" ones, range(0, 1000, 1000 // steps) + 1.
"""
from __future__ import annotations

from typing import Any

import torch

from modules import errors, sd_samplers_common, shared
from modules.samplers import denoisers, timesteps as ts_impl
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from modules.sd_samplers_common import SamplerData

CFGDenoiserTimesteps = CFGDenoiser
"""A1111's name for the CFG denoiser the timestep samplers use (one class in Serena)."""


def ddim(model, x, timesteps, alphas_cumprod, extra_args=None, callback=None, disable=None, eta=0.0,
         noise_sampler=None):
    """DDIM (Song et al. 2021)."""
    return ts_impl.ddim(model, x, timesteps, alphas_cumprod, extra_args, callback, disable, eta=eta,
                        noise_sampler=noise_sampler)


def ddim_cfgpp(model, x, timesteps, alphas_cumprod, extra_args=None, callback=None, disable=None, eta=0.0,
               noise_sampler=None):
    """DDIM with CFG++ (Chung et al. 2024): guidance scale / 12.5, unconditional eps as direction."""
    model.cond_scale_multiplier = 1 / 12.5
    model.need_last_noise_uncond = True
    return ts_impl.ddim(model, x, timesteps, alphas_cumprod, extra_args, callback, disable, eta=eta,
                        noise_sampler=noise_sampler, uncond_eps=lambda: model.last_noise_uncond)


def plms(model, x, timesteps, alphas_cumprod, extra_args=None, callback=None, disable=None):
    """PLMS (Liu et al. 2022)."""
    return ts_impl.plms(model, x, timesteps, alphas_cumprod, extra_args, callback, disable)


def unipc(model, x, timesteps, alphas_cumprod, extra_args=None, callback=None, disable=None, is_img2img=False):
    """UniPC (Zhao et al. 2023) with the `uni_pc_*` options."""
    opts = shared.opts
    if opts.uni_pc_variant not in ("bh1", "bh2"):
        raise errors.InvalidParameter(f"UniPC variant {opts.uni_pc_variant!r} is not supported; use 'bh1' or 'bh2'",
                                      field="uni_pc_variant")
    return ts_impl.unipc(model, x, timesteps, alphas_cumprod, extra_args, callback, disable, is_img2img=is_img2img,
                         order=int(opts.uni_pc_order), variant=opts.uni_pc_variant, skip_type=opts.uni_pc_skip_type,
                         lower_order_final=bool(opts.uni_pc_lower_order_final))


samplers_timesteps: list[tuple[str, Any, list[str], dict[str, Any]]] = [
    ("DDIM", ddim, ["ddim"], {}),
    ("DDIM CFG++", ddim_cfgpp, ["ddim_cfgpp"], {}),
    ("PLMS", plms, ["plms"], {}),
    ("UniPC", unipc, ["unipc"], {}),
]


class CompVisSampler(sd_samplers_common.Sampler):
    """A sampler object over DDPM timesteps (A1111's CompVisSampler)."""

    eta_option_field = "eta_ddim"
    eta_infotext_field = "Eta DDIM"
    eta_default = 0.0

    def __init__(self, func: Any, model: Any):
        super().__init__(func, model)
        self.model_wrap = self.make_model_wrap(model)
        self.model_wrap_cfg = CFGDenoiser(self.model_wrap, self, timesteps=True,
                                          use_image_cond=bool(getattr(model, "is_inpainting", False)))

    def make_model_wrap(self, model: Any) -> denoisers.TimestepEpsModel:
        """eps at DDPM timesteps for `model` (v-prediction converted)."""
        return denoisers.TimestepEpsModel(model, getattr(model, "parameterization", "eps"))

    def get_timesteps(self, p: Any, steps: int) -> torch.Tensor:
        discard = bool(self.config and self.config.options.get("discard_next_to_last_sigma", False))
        if shared.opts.always_discard_next_to_last_sigma and not discard:
            discard = True
            p.extra_generation_params["Discard penultimate sigma"] = True
        steps += 1 if discard else 0
        return torch.clip(torch.tensor(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)

    def _kwargs(self, p: Any, x: torch.Tensor, timesteps: torch.Tensor, is_img2img: bool) -> dict[str, Any]:
        kwargs = self.initialize(p)
        kwargs["timesteps"] = timesteps
        kwargs["alphas_cumprod"] = self.sd_model.alphas_cumprod
        if self.accepts("noise_sampler"):
            kwargs["noise_sampler"] = sd_samplers_common.rng_noise_sampler(p, x)
        if self.accepts("is_img2img"):
            kwargs["is_img2img"] = is_img2img
        self.sampler_extra_args = {"cond": None, "image_cond": None, "uncond": None,
                                   "cond_scale": p.cfg_scale, "s_min_uncond": self.s_min_uncond}
        return kwargs

    def _run(self, p, x, kwargs, conditioning, unconditional_conditioning, image_conditioning, steps):
        self.sampler_extra_args.update(cond=conditioning, uncond=unconditional_conditioning,
                                       image_cond=image_conditioning)
        extra_args = self.sampler_extra_args
        return self.launch_sampling(steps, lambda: self.func(self.model_wrap_cfg, x, extra_args=extra_args,
                                                             callback=self.callback_state, **kwargs))

    def sample(self, p: Any, x: torch.Tensor, conditioning: Any, unconditional_conditioning: Any,
               steps: int | None = None, image_conditioning: torch.Tensor | None = None) -> torch.Tensor:
        """txt2img from unit noise `x` (already the VP-space x_T)."""
        steps = steps or p.steps
        timesteps = self.get_timesteps(p, steps)
        kwargs = self._kwargs(p, x, timesteps, is_img2img=False)
        self.model_wrap_cfg.init_latent = None
        self.last_latent = x
        return self._run(p, x, kwargs, conditioning, unconditional_conditioning, image_conditioning, steps)

    def sample_img2img(self, p: Any, x: torch.Tensor, noise: torch.Tensor, conditioning: Any,
                       unconditional_conditioning: Any, steps: int | None = None,
                       image_conditioning: torch.Tensor | None = None) -> torch.Tensor:
        """img2img: noise the init latent to timestep[t_enc] and run the first t_enc timesteps."""
        steps, t_enc = sd_samplers_common.setup_img2img_steps(p, steps)
        timesteps = self.get_timesteps(p, steps)
        a = self.sd_model.alphas_cumprod[timesteps[t_enc]].float()
        xi = x * a.sqrt() + noise * (1 - a).sqrt()
        from modules.sd_samplers_kdiffusion import KDiffusionSampler
        xi = KDiffusionSampler._extra_noise(p, x, xi, noise, a.sqrt())
        kwargs = self._kwargs(p, x, timesteps[:t_enc], is_img2img=True)
        self.model_wrap_cfg.init_latent = x
        self.last_latent = x
        return self._run(p, xi, kwargs, conditioning, unconditional_conditioning, image_conditioning, t_enc + 1)


samplers_data_timesteps: list[SamplerData] = [
    SamplerData(label, (lambda model, func=func: CompVisSampler(func, model)), tuple(aliases), options)
    for label, func, aliases, options in samplers_timesteps
]


VanillaStableDiffusionSampler = CompVisSampler
"""A1111's older name for the timestep sampler class (extensions still subclass it through
`modules.sd_samplers_compvis`)."""
