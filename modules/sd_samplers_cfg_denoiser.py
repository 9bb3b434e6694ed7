"""Classifier-free guidance around a denoiser, with A1111's composable-diffusion (AND) weights,
negative-guidance-minimum-sigma (NGMS), inpainting mask blending and the per-step script hooks.

Guidance (Ho & Salimans 2022; Liu et al., "Compositional Visual Generation", 2022):
    out = uncond + sum_i w_i * cfg * (cond_i - uncond)
It is linear, so the same object serves Karras denoisers (x0 outputs) and eps models (timestep
samplers); `timesteps=True` selects A1111's timestep behaviour (mask blended into the input).
"""
from __future__ import annotations

from typing import Any

import torch

from modules import prompt_parser, sd_samplers_common, shared
from modules.runtime import context
from modules.sd_samplers_common import InterruptedException


def _module(name: str) -> Any:
    try:
        return __import__(f"modules.{name}", fromlist=[name])
    except ImportError:
        return None


def a1111_denoiser_args(sampler: Any) -> tuple[Any, Any]:
    """(inner model, sampler) for A1111's one-argument form `CFGDenoiser(sampler)`: the sampler's
    denoiser adapter (`model_wrap`) is the inner model."""
    inner_model = getattr(sampler, "model_wrap", None)
    if inner_model is None:
        raise TypeError("CFGDenoiser(sampler): the sampler has no model_wrap to denoise with")
    return inner_model, sampler


class CFGDenoiser(torch.nn.Module):
    """Callable `(x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond) -> guided output`.

    `inner_model(x, sigma, cond=..., image_cond=...)` is a denoiser adapter from
    `modules.samplers.denoisers`; `image_cond` is passed only for inpainting checkpoints.
    Fields set per job by `Sampler.initialize`: p, mask, nmask, init_latent, step, total_steps.
    """

    def __init__(self, inner_model: Any, sampler: Any = None, *, use_image_cond: bool | None = None,
                 timesteps: bool | None = None):
        """`CFGDenoiser(inner_model, sampler)`, or A1111's `CFGDenoiser(sampler)`: extensions subclass
        the denoiser, build it from a sampler and put it in `sampler.model_wrap_cfg`; then the
        denoiser adapter and the inpainting/timestep behaviour are the sampler's."""
        if sampler is None:
            inner_model, sampler = a1111_denoiser_args(inner_model)
        previous = getattr(sampler, "model_wrap_cfg", None)
        if use_image_cond is None:
            use_image_cond = bool(getattr(previous, "use_image_cond", False))
        if timesteps is None:
            timesteps = bool(getattr(previous, "timesteps", False))
        super().__init__()
        self.inner_model = inner_model
        self.sampler = sampler
        self.use_image_cond = use_image_cond
        self.mask_before_denoising = timesteps
        self.timesteps = timesteps
        self.p: Any = None
        self.mask: torch.Tensor | None = None
        self.nmask: torch.Tensor | None = None
        self.init_latent: torch.Tensor | None = None
        self.step = 0
        self.total_steps = 0
        self.image_cfg_scale: float | None = None
        self.cond_scale_multiplier = 1.0
        self.need_last_noise_uncond = False
        self.last_noise_uncond: torch.Tensor | None = None
        self.padded_cond_uncond = False
        self.padded_cond_uncond_v0 = False
        self._empty_prompt: torch.Tensor | None = None
        self._callbacks = _module("script_callbacks")

    # --- pieces --------------------------------------------------------------------------------
    @staticmethod
    def combine_denoised(x_out: torch.Tensor, conds_list: list, uncond: torch.Tensor, cond_scale: float) -> torch.Tensor:
        """uncond + sum of weight * cond_scale * (cond - uncond) per image (AND weights)."""
        denoised_uncond = x_out[-uncond.shape[0]:]
        denoised = torch.clone(denoised_uncond)
        for i, conds in enumerate(conds_list):
            for cond_index, weight in conds:
                denoised[i] += (x_out[cond_index] - denoised_uncond[i]) * (weight * cond_scale)
        return denoised

    def apply_blend(self, current: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Keep the masked-out area from the init latent (A1111 'on_mask_blend')."""
        blended = current * self.nmask + self.init_latent * self.mask
        scripts_runner = getattr(self.p, "scripts", None)
        scripts_mod = _module("scripts") if scripts_runner is not None else None
        if scripts_mod is not None and hasattr(scripts_mod, "MaskBlendArgs") and hasattr(scripts_runner, "on_mask_blend"):
            mba = scripts_mod.MaskBlendArgs(current, self.nmask, self.init_latent, self.mask, blended,
                                            denoiser=self, sigma=sigma)
            scripts_runner.on_mask_blend(self.p, mba)
            blended = mba.blended_latent
        return blended

    def _hook(self, params_cls: str, func: str, *args: Any) -> Any:
        cb = self._callbacks
        if cb is None or not hasattr(cb, params_cls) or not hasattr(cb, func):
            return None
        params = getattr(cb, params_cls)(*args)
        getattr(cb, func)(params)
        return params

    def to_x0(self, x: torch.Tensor, out: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The denoised latent implied by an output (identity for Karras denoisers)."""
        if not self.timesteps:
            return out
        a = self.inner_model.alphas_cumprod.to(x.device)[sigma.long()].view(-1, *([1] * (x.ndim - 1)))
        return (x - (1 - a).sqrt() * out) / a.sqrt()

    def pad_conds(self, tensor: Any, uncond: Any) -> tuple[Any, Any]:
        """Options `pad_cond_uncond_v0` / `pad_cond_uncond`: make cond and uncond the same token
        length (so they share one model call) and note it for the infotext. Dict conditionings
        (SDXL) are padded in their `crossattn` tensor."""
        if tensor.shape[1] == uncond.shape[1]:
            return tensor, uncond
        cond_tokens, uncond_tokens = prompt_parser.cond_tokens(tensor), prompt_parser.cond_tokens(uncond)
        if shared.opts.pad_cond_uncond_v0:
            if uncond_tokens.shape[1] < cond_tokens.shape[1]:
                missing = cond_tokens.shape[1] - uncond_tokens.shape[1]
                uncond_tokens = torch.cat([uncond_tokens, uncond_tokens[:, -1:].repeat(1, missing, 1)], dim=1)
            else:
                uncond_tokens = uncond_tokens[:, :cond_tokens.shape[1]]
            self.padded_cond_uncond_v0 = True
        elif shared.opts.pad_cond_uncond and hasattr(self.sampler.sd_model, "get_learned_conditioning"):
            if self._empty_prompt is None:
                empty = self.sampler.sd_model.get_learned_conditioning(prompt_parser.SdConditioning([""]))
                self._empty_prompt = prompt_parser.cond_tokens(prompt_parser.subscript_cond(empty, 0, 1))
            empty = self._empty_prompt.to(cond_tokens)
            repeats = (cond_tokens.shape[1] - uncond_tokens.shape[1]) // empty.shape[1]
            if repeats < 0:
                cond_tokens = torch.cat([cond_tokens, empty.repeat(cond_tokens.shape[0], -repeats, 1)], dim=1)
            elif repeats > 0:
                uncond_tokens = torch.cat([uncond_tokens, empty.repeat(uncond_tokens.shape[0], repeats, 1)], dim=1)
            self.padded_cond_uncond = True
        return prompt_parser.with_tokens(tensor, cond_tokens), prompt_parser.with_tokens(uncond, uncond_tokens)

    def _run_model(self, x_in, sigma_in, image_cond_in, uncond, skip_uncond, tensor):
        """One batched call when cond and uncond have the same length, else one call each."""
        kw = (lambda ic: {"image_cond": ic}) if self.use_image_cond else (lambda ic: {})
        if tensor.shape[1] == uncond.shape[1] or skip_uncond:
            cond_all = tensor if skip_uncond else prompt_parser.catenate_conds([tensor, uncond])
            return self.inner_model(x_in, sigma_in, cond=cond_all, **kw(image_cond_in))
        n = tensor.shape[0]
        x_out = torch.zeros_like(x_in)
        x_out[:n] = self.inner_model(x_in[:n], sigma_in[:n], cond=tensor, **kw(image_cond_in[:n]))
        x_out[n:] = self.inner_model(x_in[n:], sigma_in[n:], cond=uncond, **kw(image_cond_in[n:]))
        return x_out

    # --- the step ------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, sigma: torch.Tensor, uncond: Any, cond: Any, cond_scale: float,
                s_min_uncond: float = 0.0, image_cond: torch.Tensor | None = None) -> torch.Tensor:
        ctx = context.active()
        if ctx.cancel.stop_now:
            raise InterruptedException
        progress = ctx.progress
        if self.p is not None and sd_samplers_common.apply_refiner(self, sigma):
            cond, uncond = self.sampler.sampler_extra_args["cond"], self.sampler.sampler_extra_args["uncond"]
        conds_list, tensor = prompt_parser.reconstruct_multicond_batch(cond, self.step)
        uncond = prompt_parser.reconstruct_cond_batch(uncond, self.step)
        if self.mask_before_denoising and self.mask is not None:
            x = self.apply_blend(x, sigma)
        if image_cond is None:
            image_cond = x.new_zeros([x.shape[0], 0, *x.shape[2:]])
        repeats = [len(c) for c in conds_list]
        batch_size = len(conds_list)

        def expand(t: torch.Tensor, tail: torch.Tensor) -> torch.Tensor:
            return torch.cat([torch.stack([t[i]] * n) for i, n in enumerate(repeats)] + [tail])

        x_in, sigma_in, image_cond_in = expand(x, x), expand(sigma, sigma), expand(image_cond, image_cond)
        params = self._hook("CFGDenoiserParams", "cfg_denoiser_callback", x_in, image_cond_in, sigma_in,
                            progress.sampling_step, progress.sampling_steps, tensor, uncond, self)
        if params is not None:
            x_in, image_cond_in, sigma_in = params.x, params.image_cond, params.sigma
            tensor, uncond = params.text_cond, params.text_uncond

        skip_uncond = False
        skip_early = float(getattr(shared.opts, "skip_early_cond", 0.0) or 0.0)
        if skip_early and self.total_steps and self.step / self.total_steps <= skip_early:
            skip_uncond = True
            self.p.extra_generation_params["Skip Early CFG"] = skip_early
        elif (self.step % 2 or shared.opts.s_min_uncond_all) and s_min_uncond > 0 and sigma[0] < s_min_uncond:
            skip_uncond = True
            self.p.extra_generation_params["NGMS"] = s_min_uncond
            if shared.opts.s_min_uncond_all:
                self.p.extra_generation_params["NGMS all steps"] = True
        if skip_uncond:
            x_in, sigma_in, image_cond_in = x_in[:-batch_size], sigma_in[:-batch_size], image_cond_in[:-batch_size]

        tensor, uncond = self.pad_conds(tensor, uncond)
        if self.padded_cond_uncond:
            self.p.extra_generation_params["Pad conds"] = True
        if self.padded_cond_uncond_v0:
            self.p.extra_generation_params["Pad conds v0"] = True
        x_out = self._run_model(x_in, sigma_in, image_cond_in, uncond, skip_uncond, tensor)
        first_of_image = [c[0][0] for c in conds_list]
        if skip_uncond:  # reuse the first cond output where the uncond output would be
            x_out = torch.cat([x_out, x_out[first_of_image]])
        self._hook("CFGDenoisedParams", "cfg_denoised_callback", x_out, progress.sampling_step,
                   progress.sampling_steps, self.inner_model)
        if self.need_last_noise_uncond:
            self.last_noise_uncond = torch.clone(x_out[-uncond.shape[0]:])

        scale = 1.0 if skip_uncond else cond_scale * self.cond_scale_multiplier
        denoised = self.combine_denoised(x_out, conds_list, uncond, scale)
        if not self.mask_before_denoising and self.mask is not None:
            denoised = self.apply_blend(denoised, sigma)
        after = self._hook("AfterCFGCallbackParams", "cfg_after_cfg_callback", denoised,
                           progress.sampling_step, progress.sampling_steps)
        if after is not None:
            denoised = after.x
        self.sampler.last_latent = self.to_x0(x, denoised, sigma)
        self.step += 1
        return denoised
