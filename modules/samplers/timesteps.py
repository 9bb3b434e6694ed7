"""Samplers over DDPM timesteps in the VP space (x_t = sqrt(a) x0 + sqrt(1 - a) eps), as A1111 runs them.

`model(x, t_batch, **extra_args)` returns eps. `timesteps` ascend (e.g. 1, 51, ..., 951); like
A1111, DDIM and PLMS run len(timesteps) - 1 model steps, from the last timestep down to the
second, landing on alphas_cumprod[timesteps[0]]. Noise comes from `noise_sampler(sigma, sigma_next)`.
"""
from __future__ import annotations

from typing import Callable

import torch

from modules.samplers.utils import Callback, NoiseSampler, default_noise_sampler


def _prev_alphas(alphas_cumprod: torch.Tensor, timesteps: torch.Tensor):
    """(a_t, a_prev) per timestep index: a_prev of index k is a[timesteps[k-1]] (a[0] for k=0)."""
    ac = alphas_cumprod.detach().cpu().double()
    ts = timesteps.detach().cpu().long()
    prev = torch.cat([ts.new_zeros([1]), ts[:-1]])
    return ac.float()[ts].double(), ac[prev]


def _ddim_sigmas(a, a_prev, eta: float) -> torch.Tensor:
    return eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()


@torch.no_grad()
def ddim(model, x, timesteps, alphas_cumprod, extra_args=None, callback: Callback | None = None, disable=None,
         eta=0.0, noise_sampler: NoiseSampler | None = None, uncond_eps: Callable[[], torch.Tensor] | None = None):
    """DDIM (Song et al., "Denoising Diffusion Implicit Models", 2021), eq. 12.

    With `uncond_eps` (a callable returning the last unconditional eps) the direction term uses it
    instead of the guided eps: CFG++ (Chung et al., "CFG++: Manifold-constrained Classifier Free
    Guidance", 2024).
    """
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x)
    alphas, alphas_prev = _prev_alphas(alphas_cumprod, timesteps)
    sigmas = _ddim_sigmas(alphas, alphas_prev, eta)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in, **extra_args)
        a_t, a_prev, sigma_t = alphas[index].item(), alphas_prev[index].item(), sigmas[index].item()
        pred_x0 = (x - (1 - a_t) ** 0.5 * e_t) / a_t ** 0.5
        direction = e_t if uncond_eps is None else uncond_eps()
        x = a_prev ** 0.5 * pred_x0 + (1.0 - a_prev - sigma_t ** 2) ** 0.5 * direction
        if sigma_t > 0:
            x = x + sigma_t * noise_sampler(torch.tensor(sigma_t), torch.tensor(0.0))
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})
    return x


@torch.no_grad()
def plms(model, x, timesteps, alphas_cumprod, extra_args=None, callback: Callback | None = None, disable=None):
    """Pseudo linear multistep (Liu et al., "Pseudo Numerical Methods for Diffusion Models", 2022)."""
    extra_args = extra_args or {}
    alphas, alphas_prev = _prev_alphas(alphas_cumprod, timesteps)
    s_in = x.new_ones([x.shape[0]])
    old_eps: list[torch.Tensor] = []

    def step(x, e_t, index):
        a_t, a_prev = alphas[index].item(), alphas_prev[index].item()
        pred_x0 = (x - (1 - a_t) ** 0.5 * e_t) / a_t ** 0.5
        return a_prev ** 0.5 * pred_x0 + (1.0 - a_prev) ** 0.5 * e_t, pred_x0

    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in, **extra_args)
        if not old_eps:  # pseudo improved Euler
            x_prev, _ = step(x, e_t, index)
            e_next = model(x_prev, timesteps[max(index - 1, 0)].item() * s_in, **extra_args)
            e_prime = (e_t + e_next) / 2
        elif len(old_eps) == 1:
            e_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x, pred_x0 = step(x, e_prime, index)
        old_eps = (old_eps + [e_t])[-3:]
        if callback is not None:
            callback({"x": x, "i": i, "sigma": 0, "sigma_hat": 0, "denoised": pred_x0})
    return x


class VPSchedule:
    """Continuous-time view of a discrete VP schedule: log alpha interpolated linearly in t in (0, 1]."""

    def __init__(self, alphas_cumprod: torch.Tensor):
        self.total_n = len(alphas_cumprod)
        self.t_array = torch.linspace(0.0, 1.0, self.total_n + 1)[1:].double()
        self.log_alpha_array = 0.5 * alphas_cumprod.detach().cpu().double().log()

    @staticmethod
    def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
        """Piecewise-linear interpolation with linear extrapolation beyond the ends (xp ascending)."""
        idx = torch.searchsorted(xp, x.reshape(-1)).clamp(1, len(xp) - 1)
        x0, x1, y0, y1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
        return (y0 + (x.reshape(-1) - x0) * (y1 - y0) / (x1 - x0)).reshape(x.shape)

    def log_alpha(self, t):
        return self._interp(torch.as_tensor(t, dtype=torch.float64), self.t_array, self.log_alpha_array)

    def alpha(self, t):
        return self.log_alpha(t).exp()

    def std(self, t):
        return (1.0 - (2.0 * self.log_alpha(t)).exp()).sqrt()

    def lambda_(self, t):
        la = self.log_alpha(t)
        return la - 0.5 * (1.0 - (2.0 * la).exp()).log()

    def inverse_lambda(self, lamb):
        log_alpha = -0.5 * torch.logaddexp(torch.zeros_like(lamb), -2.0 * lamb)
        return self._interp(log_alpha, self.log_alpha_array.flip(0), self.t_array.flip(0))

    def time_steps(self, skip_type: str, t_T: float, t_0: float, n: int) -> torch.Tensor:
        if skip_type == "logSNR":
            lambdas = torch.linspace(float(self.lambda_(t_T)), float(self.lambda_(t_0)), n + 1, dtype=torch.float64)
            return self.inverse_lambda(lambdas)
        if skip_type == "time_uniform":
            return torch.linspace(t_T, t_0, n + 1, dtype=torch.float64)
        if skip_type == "time_quadratic":
            return torch.linspace(t_T ** 0.5, t_0 ** 0.5, n + 1, dtype=torch.float64) ** 2
        raise ValueError(f"skip_type must be logSNR, time_uniform or time_quadratic, got {skip_type!r}")


def _unipc_update(model_fn, ns: VPSchedule, x, model_prev: list, t_prev: list, t, order: int, variant: str,
                  use_corrector: bool):
    """One UniPC step in data-prediction form: UniP predictor, then the UniC corrector if asked.

    Returns (x_t, model output at the predicted x_t or None).
    """
    m0, t0 = model_prev[-1], t_prev[-1]
    lambda_0, lambda_t = ns.lambda_(t0), ns.lambda_(t)
    sigma_0, sigma_t, alpha_t = ns.std(t0), ns.std(t), ns.alpha(t)
    h = lambda_t - lambda_0
    rks, d1s = [], []
    for i in range(1, order):
        rk = (ns.lambda_(t_prev[-(i + 1)]) - lambda_0) / h
        rks.append(float(rk))
        d1s.append((model_prev[-(i + 1)] - m0) / float(rk))
    rks.append(1.0)
    rks_t = torch.tensor(rks, dtype=torch.float64)
    hh = -h
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    if variant == "bh1":
        b_h = hh
    elif variant == "bh2":
        b_h = torch.expm1(hh)
    else:
        raise ValueError(f"UniPC variant must be 'bh1' or 'bh2', got {variant!r}")
    rows, b, factorial = [], [], 1
    for i in range(1, order + 1):
        rows.append(rks_t ** (i - 1))
        b.append(float(h_phi_k * factorial / b_h))
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    r_mat, b_vec = torch.stack(rows), torch.tensor(b, dtype=torch.float64)
    d1 = torch.stack(d1s, dim=1) if d1s else None
    x_lin = float(sigma_t / sigma_0) * x - float(alpha_t * h_phi_1) * m0
    if d1 is not None:
        rhos_p = torch.tensor([0.5], dtype=torch.float64) if order == 2 else torch.linalg.solve(r_mat[:-1, :-1], b_vec[:-1])
        pred_res = torch.einsum("k,bk...->b...", rhos_p.to(x), d1)
        x_t = x_lin - float(alpha_t * b_h) * pred_res
    else:
        x_t = x_lin
    if not use_corrector:
        return x_t, None
    model_t = model_fn(x_t, t)
    rhos_c = torch.tensor([0.5], dtype=torch.float64) if order == 1 else torch.linalg.solve(r_mat, b_vec)
    corr_res = torch.einsum("k,bk...->b...", rhos_c[:-1].to(x), d1) if d1 is not None else 0
    x_t = x_lin - float(alpha_t * b_h) * (corr_res + float(rhos_c[-1]) * (model_t - m0))
    return x_t, model_t


@torch.no_grad()
def unipc(model, x, timesteps, alphas_cumprod, extra_args=None, callback: Callback | None = None, disable=None,
          is_img2img=False, order=3, variant="bh1", skip_type="time_uniform", lower_order_final=True):
    """UniPC multistep, data prediction (Zhao et al., "UniPC: A Unified Predictor-Corrector Framework", 2023).

    Like A1111, it runs len(timesteps) steps in continuous time from t=1 (or, for img2img, from
    the last given timestep) to t=1/N, feeding the model (t - 1/N) * N.
    """
    extra_args = extra_args or {}
    ns = VPSchedule(alphas_cumprod)
    n = len(timesteps)
    if n == 0:
        return x
    order = min(order, n)  # A1111 asserts here; running at the highest possible order is kinder
    t_T = float(timesteps[-1]) / ns.total_n + 1 / ns.total_n if is_img2img else 1.0
    ts = ns.time_steps(skip_type, t_T, 1.0 / ns.total_n, n)
    s_in = x.new_ones([x.shape[0]])

    def model_fn(x, t):
        eps = model(x, ((t - 1.0 / ns.total_n) * ns.total_n).item() * s_in, **extra_args)
        return (x - float(ns.std(t)) * eps) / float(ns.alpha(t))

    model_prev, t_prev = [model_fn(x, ts[0])], [ts[0]]
    for step in range(1, n + 1):
        step_order = min(order, n + 1 - step) if lower_order_final and step >= order else min(order, step)
        x, model_x = _unipc_update(model_fn, ns, x, model_prev, t_prev, ts[step], step_order, variant,
                                   use_corrector=step < n)
        if step < n and model_x is None:
            model_x = model_fn(x, ts[step])
        if callback is not None:
            callback({"x": x, "i": step - 1, "sigma": 0, "sigma_hat": 0, "denoised": model_x if model_x is not None else x})
        model_prev, t_prev = (model_prev + [model_x])[-order:], (t_prev + [ts[step]])[-order:]
    return x
