"""Fakes shared by the sampler tests: an analytic eps model behind the model interface, a per-image
RNG like `modules.rng.ImageRNG`, and a minimal processing object `p`."""
from __future__ import annotations

import types
from typing import Any

import torch


def sd_alphas_cumprod() -> torch.Tensor:
    """SD1.x "scaled_linear" schedule computed exactly as diffusers does (float32)."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


def fake_eps(x: torch.Tensor, t: Any, cond: Any = None, time_dependent: bool = True) -> torch.Tensor:
    """A smooth nonlinear eps predictor; optional dependence on t and on the conditioning."""
    out = 0.8 * torch.tanh(0.7 * x) + 0.1 * torch.sin(1.3 * x + 0.2)
    if time_dependent:
        t = torch.as_tensor(t, dtype=torch.float32).reshape(-1, *([1] * (x.ndim - 1)))
        out = out + 2e-4 * t * torch.cos(x)
    if cond is not None:
        out = out + 0.05 * cond.float().mean(dim=(1, 2)).reshape(-1, *([1] * (x.ndim - 1)))
    return out


class FakeModel:
    """The checkpoint interface the samplers use: apply_model, alphas_cumprod, parameterization."""

    def __init__(self, time_dependent: bool = True, parameterization: str = "eps", inpainting: bool = False):
        self.alphas_cumprod = sd_alphas_cumprod()
        self.parameterization = parameterization
        self.is_inpainting = inpainting
        self.is_sdxl = False
        self.time_dependent = time_dependent
        self.calls: list[dict] = []

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        self.calls.append({"x": x, "t": t, "cond": cond})
        latent = x[:, :4]
        out = fake_eps(latent, t, cond, self.time_dependent)
        if x.shape[1] > 4:
            out = out + 0.01 * x[:, 4:].mean(dim=1, keepdim=True)
        return out


class FakeRNG:
    """Per-image generators like ImageRNG: `next()` draws one B×C×H×W tensor."""

    def __init__(self, shape, seeds):
        self.shape = tuple(shape)
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.calls = 0

    def next(self) -> torch.Tensor:
        self.calls += 1
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.generators])


def fake_p(sampler_name: str = "Euler", scheduler: str = "Automatic", steps: int = 6, batch: int = 1,
           seeds=None, **kw) -> Any:
    """A processing object with the fields the samplers read (defaults as processing fills them)."""
    seeds = list(seeds or range(100, 100 + batch))
    fields = dict(steps=steps, cfg_scale=5.0, sampler_name=sampler_name, scheduler=scheduler, eta=None,
                  s_churn=None, s_tmin=None, s_tmax=None, s_noise=None, s_min_uncond=None,
                  denoising_strength=0.75, seeds=seeds, subseeds=seeds, all_seeds=seeds, iteration=0,
                  batch_size=batch, extra_generation_params={}, sampler_noise_scheduler_override=None,
                  scripts=None, rng=FakeRNG((4, 8, 8), seeds), is_hr_pass=False, mask=None, nmask=None)
    fields.update(kw)
    return types.SimpleNamespace(**fields)


def conds(batch: int = 1, value: float = 1.0, tokens: int = 77, dim: int = 8, weights=(1.0,)):
    """(cond, uncond) in prompt_parser's structures, without a text encoder."""
    from modules import prompt_parser as pp
    cond = pp.MulticondLearnedConditioning(shape=(batch,), batch=[
        [pp.ComposableScheduledPromptConditioning([pp.ScheduledPromptConditioning(1000, torch.full((tokens, dim), value * (k + 1)))], w)
         for k, w in enumerate(weights)] for _ in range(batch)])
    uncond = [[pp.ScheduledPromptConditioning(1000, torch.zeros(tokens, dim))] for _ in range(batch)]
    return cond, uncond
