"""Sigma schedules: `(n, sigma_min, sigma_max, ...) -> Tensor` of n sigmas, descending, then 0.

The ones that need the model's own discrete sigmas take a `DiscreteSchedule` (see
`modules.samplers.denoisers`) as `schedule`.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import torch

from modules.samplers.utils import append_zero

if TYPE_CHECKING:
    from modules.samplers.denoisers import DiscreteSchedule

AYS_SD15 = (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029)
AYS_SDXL = (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029)


def karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0, device="cpu") -> torch.Tensor:
    """Karras et al., "Elucidating the Design Space of Diffusion-Based Generative Models" (2022), eq. 5."""
    ramp = torch.linspace(0, 1, n, device=device)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    return append_zero((max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho)


def exponential(n: int, sigma_min: float, sigma_max: float, device="cpu") -> torch.Tensor:
    """Sigmas evenly spaced in log-sigma."""
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, device=device).exp())


def polyexponential(n: int, sigma_min: float, sigma_max: float, rho: float = 1.0, device="cpu") -> torch.Tensor:
    """Log-sigma following a polynomial ramp of degree `rho` (rho=1 is `exponential`)."""
    ramp = torch.linspace(1, 0, n, device=device) ** rho
    return append_zero(torch.exp(ramp * (math.log(sigma_max) - math.log(sigma_min)) + math.log(sigma_min)))


def kl_optimal(n: int, sigma_min: float, sigma_max: float, device="cpu") -> torch.Tensor:
    """Sabour et al., "Align Your Steps" (2024) appendix: tangent of linearly spaced arctan(sigma).

    The last value is sigma_min (not 0), as in A1111.
    """
    alpha_min = torch.arctan(torch.tensor(sigma_min, device=device))
    alpha_max = torch.arctan(torch.tensor(sigma_max, device=device))
    idx = torch.arange(n + 1, device=device)
    return torch.tan(idx / n * alpha_min + (1.0 - idx / n) * alpha_max)


def loglinear_interp(values: Sequence[float], num: int) -> list[float]:
    """Resample a decreasing sequence to `num` points, interpolating linearly in log space."""
    ys = [math.log(v) for v in reversed(values)]
    out = []
    for k in range(num):
        pos = k / (num - 1) * (len(ys) - 1) if num > 1 else 0.0
        lo = min(int(math.floor(pos)), len(ys) - 2)
        w = pos - lo
        out.append(math.exp(ys[lo] * (1 - w) + ys[lo + 1] * w))
    return out[::-1]


def align_your_steps(n: int, sigma_min: float = 0.0, sigma_max: float = 0.0, is_sdxl: bool = False,
                     device="cpu") -> torch.Tensor:
    """Sabour et al., "Align Your Steps" (2024): NVIDIA's 10-step tables, log-linearly resampled."""
    table = list(AYS_SDXL if is_sdxl else AYS_SD15)
    values = table if n == len(table) else loglinear_interp(table, n)
    return torch.tensor([*values, 0.0], dtype=torch.float32, device=device)


def beta(n: int, sigma_min: float, sigma_max: float, alpha: float = 0.6, beta_: float = 0.6,
         device="cpu") -> torch.Tensor:
    """Lee et al., "Beta Sampling is All You Need" (2024): Beta(alpha, beta) quantiles over the sigma range."""
    from scipy import stats  # deferred: scipy is heavy and only this schedule needs it

    qs = [1 - k / (n - 1) if n > 1 else 1.0 for k in range(n)]
    values = [sigma_min + float(stats.beta.ppf(q, alpha, beta_)) * (sigma_max - sigma_min) for q in qs]
    return torch.tensor([*values, 0.0], dtype=torch.float32, device=device)


def uniform(n: int, schedule: DiscreteSchedule, device="cpu") -> torch.Tensor:
    """The model's discrete sigmas, evenly spaced in (continuous) timestep from t_max to 0."""
    return schedule.get_sigmas(n).to(device)


def normal(n: int, sigma_min: float, sigma_max: float, schedule: DiscreteSchedule, sgm: bool = False,
           device="cpu") -> torch.Tensor:
    """n sigmas evenly spaced in timestep between sigma_max and sigma_min (end dropped if `sgm`), then 0."""
    start = schedule.sigma_to_t(torch.tensor(sigma_max))
    end = schedule.sigma_to_t(torch.tensor(sigma_min))
    ts = torch.linspace(start, end, n + 1)[:-1] if sgm else torch.linspace(start, end, n)
    sigmas = [float(schedule.t_to_sigma(t)) for t in ts]
    return torch.tensor([*sigmas, 0.0], dtype=torch.float32, device=device)


def sgm_uniform(n: int, sigma_min: float, sigma_max: float, schedule: DiscreteSchedule, device="cpu") -> torch.Tensor:
    """Stability's SGM "uniform" discretisation: `normal` without its end point."""
    return normal(n, sigma_min, sigma_max, schedule, sgm=True, device=device)


def simple(n: int, schedule: DiscreteSchedule, device="cpu") -> torch.Tensor:
    """ComfyUI's "simple": every (len/n)-th model sigma counting down from the highest."""
    stride = len(schedule.sigmas) / n
    sigmas = [float(schedule.sigmas[-(1 + int(k * stride))]) for k in range(n)]
    return torch.tensor([*sigmas, 0.0], dtype=torch.float32, device=device)


def ddim_uniform(n: int, schedule: DiscreteSchedule, device="cpu") -> torch.Tensor:
    """CompVis DDIM "uniform" timesteps (every len//n-th sigma from index 1), descending, then 0."""
    stride = max(len(schedule.sigmas) // n, 1)
    sigmas = [float(schedule.sigmas[k]) for k in range(1, len(schedule.sigmas), stride)]
    return torch.tensor([*sigmas[::-1], 0.0], dtype=torch.float32, device=device)
