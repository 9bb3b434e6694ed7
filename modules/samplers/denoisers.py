"""Adapters from a discrete-time DDPM UNet (`apply_model(x, t, cond)`) to the interfaces samplers use.

* `DiscreteSchedule`: sigma <-> t mapping over `alphas_cumprod` (Karras et al. 2022, appendix on
  "VP" models: sigma = sqrt((1 - alpha_bar) / alpha_bar), log-linear interpolation in t).
* `EpsDenoiser` / `VDenoiser`: Karras denoisers D(x; sigma) for eps- and v-prediction models.
* `LCMDenoiser`: the latent consistency model parameterisation on the 50 LCM timesteps.
* `TimestepEpsModel`: eps at integer timesteps in the VP space, for DDIM/PLMS/UniPC.

An inpainting UNet takes the image conditioning concatenated on dim 1 *after* input scaling, so
every adapter accepts `image_cond` and appends it right before calling the model.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch

from modules.samplers.utils import append_dims, append_zero


class DiffusionModel(Protocol):
    """What the adapters need from a checkpoint."""

    alphas_cumprod: torch.Tensor

    def apply_model(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor: ...


def _model_input(x: torch.Tensor, image_cond: torch.Tensor | None) -> torch.Tensor:
    return x if image_cond is None else torch.cat([x, image_cond.to(x)], dim=1)


class DiscreteSchedule:
    """The sigmas of a discrete DDPM schedule and the continuous sigma <-> t mapping between them."""

    def __init__(self, alphas_cumprod: torch.Tensor, quantize: bool = False):
        ac = alphas_cumprod.detach().float().cpu()
        self.alphas_cumprod = ac
        self.sigmas = ((1 - ac) / ac) ** 0.5
        self.log_sigmas = self.sigmas.log()
        self.quantize = quantize

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def get_sigmas(self, n: int | None = None) -> torch.Tensor:
        """n sigmas evenly spaced in t from the last timestep to 0, then 0 (all of them if n is None)."""
        if n is None:
            return append_zero(self.sigmas.flip(0))
        t = torch.linspace(len(self.sigmas) - 1, 0, n)
        return append_zero(self.t_to_sigma(t))

    def sigma_to_t(self, sigma: torch.Tensor, quantize: bool | None = None) -> torch.Tensor:
        """Continuous timestep of `sigma` (log-sigma interpolation between neighbouring timesteps)."""
        quantize = self.quantize if quantize is None else quantize
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        log_sigma = sigma.log().cpu()
        dists = log_sigma - self.log_sigmas[:, None]
        if quantize:
            return dists.abs().argmin(dim=0).view(sigma.shape).to(sigma.device)
        low_idx = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=self.log_sigmas.shape[0] - 2)
        high_idx = low_idx + 1
        low, high = self.log_sigmas[low_idx], self.log_sigmas[high_idx]
        w = ((low - log_sigma) / (low - high)).clamp(0, 1)
        t = (1 - w) * low_idx + w * high_idx
        return t.view(sigma.shape).to(sigma.device)

    def t_to_sigma(self, t: torch.Tensor) -> torch.Tensor:
        """Sigma at a continuous timestep (inverse of `sigma_to_t`)."""
        t = torch.as_tensor(t).float()
        tc = t.cpu()
        low_idx, high_idx, w = tc.floor().long(), tc.ceil().long(), tc.frac()
        log_sigma = (1 - w) * self.log_sigmas[low_idx] + w * self.log_sigmas[high_idx]
        return log_sigma.exp().to(t.device)


class EpsDenoiser(torch.nn.Module):
    """Karras denoiser for an eps-prediction DDPM: D(x; sigma) = x - sigma * eps(x / sqrt(1 + sigma^2), t(sigma))."""

    def __init__(self, model: DiffusionModel, quantize: bool = False):
        super().__init__()
        self.inner_model = model
        self.schedule = DiscreteSchedule(model.alphas_cumprod, quantize)
        self.sigma_data = 1.0

    # schedule shortcuts under k-diffusion's names, which schedulers and extensions use
    @property
    def sigmas(self) -> torch.Tensor:
        return self.schedule.sigmas

    @property
    def log_sigmas(self) -> torch.Tensor:
        return self.schedule.log_sigmas

    def get_sigmas(self, n: int | None = None) -> torch.Tensor:
        return self.schedule.get_sigmas(n)

    def sigma_to_t(self, sigma, quantize: bool | None = None) -> torch.Tensor:
        return self.schedule.sigma_to_t(sigma, quantize)

    def t_to_sigma(self, t) -> torch.Tensor:
        return self.schedule.t_to_sigma(t)

    def get_scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c_skip, c_out, c_in) of the parameterisation."""
        c_in = 1 / (sigma ** 2 + self.sigma_data ** 2) ** 0.5
        return torch.ones_like(sigma), -sigma, c_in

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None,
                image_cond: torch.Tensor | None = None) -> torch.Tensor:
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in self.get_scalings(sigma))
        out = self.inner_model.apply_model(_model_input(x * c_in, image_cond), self.sigma_to_t(sigma), cond)
        return x * c_skip + out * c_out


class VDenoiser(EpsDenoiser):
    """Karras denoiser for a v-prediction DDPM (Salimans & Ho, "Progressive Distillation", 2022)."""

    def get_scalings(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c_skip = self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)
        c_out = -sigma * self.sigma_data / (sigma ** 2 + self.sigma_data ** 2) ** 0.5
        c_in = 1 / (sigma ** 2 + self.sigma_data ** 2) ** 0.5
        return c_skip, c_out, c_in


class LCMDenoiser(EpsDenoiser):
    """Luo et al., "Latent Consistency Models" (2023): consistency parameterisation on 50 LCM timesteps.

    Timestep k of the reduced schedule is DDPM timestep k * 20 + 19; the boundary condition uses
    c_skip = s^2 / ((10 t)^2 + s^2), c_out = 10 t / sqrt((10 t)^2 + s^2) with s = 0.5, applied (as in
    A1111) to the eps-denoised x0 and the Karras-space input.
    """

    def __init__(self, model: DiffusionModel, original_steps: int = 50):
        super().__init__(model)
        total = len(model.alphas_cumprod)
        self.skip_steps = total // original_steps
        idx = torch.tensor([total - 1 - k * self.skip_steps for k in range(original_steps)][::-1])
        self.schedule = DiscreteSchedule(model.alphas_cumprod.detach().float().cpu()[idx])

    def get_sigmas(self, n: int | None = None) -> torch.Tensor:
        if n is None:
            return append_zero(self.sigmas.flip(0))
        start = self.sigma_to_t(self.schedule.sigma_max)
        end = self.sigma_to_t(self.schedule.sigma_min)
        return append_zero(self.t_to_sigma(torch.linspace(float(start), float(end), n)))

    def sigma_to_t(self, sigma, quantize: bool | None = None) -> torch.Tensor:
        """DDPM timestep (integer-valued) of the nearest LCM sigma."""
        return self.schedule.sigma_to_t(sigma, quantize=True) * self.skip_steps + (self.skip_steps - 1)

    def t_to_sigma(self, t) -> torch.Tensor:
        k = ((torch.as_tensor(t).float() - (self.skip_steps - 1)) / self.skip_steps).clamp(0, len(self.sigmas) - 1)
        return self.schedule.t_to_sigma(k)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Any = None,
                image_cond: torch.Tensor | None = None) -> torch.Tensor:
        c_in = append_dims(1 / (sigma ** 2 + 1) ** 0.5, x.ndim)
        t = self.sigma_to_t(sigma)
        eps = self.inner_model.apply_model(_model_input(x * c_in, image_cond), t, cond)
        x0 = x - eps * append_dims(sigma, x.ndim)
        st = append_dims(t.float() * 10.0, x.ndim)
        c_skip = 0.25 / (st ** 2 + 0.25)
        c_out = st / (st ** 2 + 0.25) ** 0.5
        return c_out * x0 + c_skip * x


class TimestepEpsModel(torch.nn.Module):
    """eps(x_t, t) at DDPM timesteps in the VP space; converts v-prediction to eps."""

    def __init__(self, model: DiffusionModel, parameterization: str = "eps"):
        super().__init__()
        if parameterization not in ("eps", "v"):
            raise ValueError(f"parameterization must be 'eps' or 'v', got {parameterization!r}")
        self.inner_model = model
        self.parameterization = parameterization
        self.alphas_cumprod = model.alphas_cumprod.detach().float()

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None,
                image_cond: torch.Tensor | None = None) -> torch.Tensor:
        out = self.inner_model.apply_model(_model_input(x, image_cond), t, cond)
        if self.parameterization == "eps":
            return out
        a = append_dims(self.alphas_cumprod.to(x.device)[t.long()], x.ndim)
        return a.sqrt() * out + (1 - a).sqrt() * x
