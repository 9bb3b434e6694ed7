"""Karras-style samplers over a denoiser D(x; sigma), after k-diffusion (Crowson) and the papers named.

Each sampler is `sample_x(model, x, sigmas, extra_args=None, callback=None, disable=None, **knobs)`:
`model(x, sigma_batch, **extra_args)` returns the denoised estimate, `x` is already scaled to
`sigmas[0]`, and `callback` receives `{'x', 'i', 'sigma', 'sigma_hat', 'denoised'}` once per step
(DPM adaptive: once per attempted step, after it, with k-diffusion's extra keys).
Stochastic samplers draw noise through `noise_sampler(sigma, sigma_next)`, default fresh Gaussian.
`disable` is accepted for k-diffusion signature compatibility (no progress bars here).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from modules.samplers.schedules import karras
from modules.samplers.utils import (BrownianTreeNoiseSampler, Callback, NoiseSampler, default_noise_sampler,
                                    get_ancestral_step, to_d)


def _sigma_fn(t: torch.Tensor) -> torch.Tensor:
    return t.neg().exp()


def _t_fn(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.log().neg()


def _churn(sigma, n_steps: int, s_churn: float, s_tmin: float, s_tmax: float) -> float:
    return min(s_churn / n_steps, 2 ** 0.5 - 1) if s_tmin <= sigma <= s_tmax else 0.0


def _churned_denoise(model, x, sigmas, i: int, s_in, extra_args: dict, callback: Callback | None,
                     noise_sampler: NoiseSampler, churn: tuple[float, float, float, float]):
    """Step i's start in Karras' Algorithm 2: raise sigma_i to sigma_hat with fresh noise (churn),
    denoise there and report. Returns (x, sigma_hat, denoised, d).

    One noise is drawn on every step, churned or not (gamma may be 0 because s_churn is 0 or
    sigma_i lies outside [s_tmin, s_tmax]); it is only added when gamma > 0. k-diffusion draws the
    same way, so the noise stream (A1111's per-image RNG) advances exactly as in A1111 and a seed
    gives the same image there and here."""
    s_churn, s_tmin, s_tmax, s_noise = churn
    gamma = _churn(sigmas[i], len(sigmas) - 1, s_churn, s_tmin, s_tmax)
    sigma_hat = sigmas[i] * (gamma + 1)
    churn_noise = noise_sampler(sigmas[i], sigma_hat) * s_noise
    if gamma > 0:
        x = x + churn_noise * (sigma_hat ** 2 - sigmas[i] ** 2) ** 0.5
    denoised = model(x, sigma_hat * s_in, **extra_args)
    d = to_d(x, sigma_hat, denoised)
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigma_hat, "denoised": denoised})
    return x, sigma_hat, denoised, d


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback: Callback | None = None, disable=None,
                 s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0, noise_sampler: NoiseSampler | None = None):
    """Euler steps of the probability-flow ODE (Karras et al. 2022, Algorithm 2 with optional churn)."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat, denoised, d = _churned_denoise(model, x, sigmas, i, s_in, extra_args, callback,
                                                     noise_sampler, (s_churn, s_tmin, s_tmax, s_noise))
        x = x + d * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_euler_ancestral(model, x, sigmas, extra_args=None, callback: Callback | None = None, disable=None,
                           eta=1.0, s_noise=1.0, noise_sampler: NoiseSampler | None = None):
    """Ancestral Euler (Ho et al. 2020 ancestral sampling in Karras' ODE form)."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


@torch.no_grad()
def sample_heun(model, x, sigmas, extra_args=None, callback: Callback | None = None, disable=None,
                s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0, noise_sampler: NoiseSampler | None = None):
    """Heun's 2nd-order method (Karras et al. 2022, Algorithm 2)."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat, denoised, d = _churned_denoise(model, x, sigmas, i, s_in, extra_args, callback,
                                                     noise_sampler, (s_churn, s_tmin, s_tmax, s_noise))
        dt = sigmas[i + 1] - sigma_hat
        if sigmas[i + 1] == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigmas[i + 1], model(x_2, sigmas[i + 1] * s_in, **extra_args))
            x = x + (d + d_2) / 2 * dt
    return x


@torch.no_grad()
def sample_dpm_2(model, x, sigmas, extra_args=None, callback: Callback | None = None, disable=None,
                 s_churn=0.0, s_tmin=0.0, s_tmax=float("inf"), s_noise=1.0, noise_sampler: NoiseSampler | None = None):
    """DPM-Solver-2 midpoint in log-sigma (Lu et al., "DPM-Solver", 2022; Karras-style churn)."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        x, sigma_hat, denoised, d = _churned_denoise(model, x, sigmas, i, s_in, extra_args, callback,
                                                     noise_sampler, (s_churn, s_tmin, s_tmax, s_noise))
        if sigmas[i + 1] == 0:
            x = x + d * (sigmas[i + 1] - sigma_hat)
        else:
            sigma_mid = sigma_hat.log().lerp(sigmas[i + 1].log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigma_hat)
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid * s_in, **extra_args))
            x = x + d_2 * (sigmas[i + 1] - sigma_hat)
    return x


@torch.no_grad()
def sample_dpm_2_ancestral(model, x, sigmas, extra_args=None, callback: Callback | None = None, disable=None,
                           eta=1.0, s_noise=1.0, noise_sampler: NoiseSampler | None = None):
    """Ancestral DPM-Solver-2 (Lu et al. 2022)."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        d = to_d(x, sigmas[i], denoised)
        if sigma_down == 0:
            x = x + d * (sigma_down - sigmas[i])
        else:
            sigma_mid = sigmas[i].log().lerp(torch.as_tensor(sigma_down).log(), 0.5).exp()
            x_2 = x + d * (sigma_mid - sigmas[i])
            d_2 = to_d(x_2, sigma_mid, model(x_2, sigma_mid * s_in, **extra_args))
            x = x + d_2 * (sigma_down - sigmas[i])
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def linear_multistep_coeff(order: int, t: np.ndarray, i: int, j: int) -> float:
    """Integral over [t_i, t_{i+1}] of the j-th Lagrange basis polynomial on t_i, t_{i-1}, ..."""
    if order - 1 > i:
        raise ValueError(f"order {order} too high for step {i}")
    nodes, weights = np.polynomial.legendre.leggauss(4)  # exact for the degree <= 3 integrand
    a, b = float(t[i]), float(t[i + 1])
    taus = (b - a) / 2 * nodes + (a + b) / 2
    basis = np.ones_like(taus)
    for k in range(order):
        if k != j:
            basis *= (taus - t[i - k]) / (t[i - j] - t[i - k])
    return float((b - a) / 2 * np.sum(weights * basis))


@torch.no_grad()
def sample_lms(model, x, sigmas, extra_args=None, callback: Callback | None = None, disable=None, order=4):
    """Linear multistep (Adams-Bashforth in sigma), as in Karras' k-diffusion / Katherine Crowson."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    sigmas_np = sigmas.detach().cpu().double().numpy()
    ds: list[torch.Tensor] = []
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        ds = (ds + [to_d(x, sigmas[i], denoised)])[-order:]
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        cur_order = min(i + 1, order)
        coeffs = [linear_multistep_coeff(cur_order, sigmas_np, i, j) for j in range(cur_order)]
        x = x + sum(c * d for c, d in zip(coeffs, reversed(ds)))
    return x


@torch.no_grad()
def sample_dpmpp_2s_ancestral(model, x, sigmas, extra_args=None, callback: Callback | None = None, disable=None,
                              eta=1.0, s_noise=1.0, noise_sampler: NoiseSampler | None = None):
    """Ancestral DPM-Solver++(2S) (Lu et al., "DPM-Solver++", 2022)."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        sigma_down, sigma_up = get_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigma_down == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigma_down - sigmas[i])
        else:
            t, t_next = _t_fn(sigmas[i]), _t_fn(torch.as_tensor(sigma_down))
            h = t_next - t
            s = t + h / 2
            x_2 = (_sigma_fn(s) / _sigma_fn(t)) * x - (-h / 2).expm1() * denoised
            denoised_2 = model(x_2, _sigma_fn(s) * s_in, **extra_args)
            x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised_2
        if sigmas[i + 1] > 0:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * s_noise * sigma_up
    return x


def _brownian_default(x, sigmas, extra_args) -> NoiseSampler:
    positive = sigmas[sigmas > 0]
    return BrownianTreeNoiseSampler(x, positive.min(), sigmas.max(), seed=extra_args.get("seed"))


@torch.no_grad()
def sample_dpmpp_sde(model, x, sigmas, extra_args=None, callback: Callback | None = None, disable=None,
                     eta=1.0, s_noise=1.0, noise_sampler: NoiseSampler | None = None, r=1 / 2):
    """DPM-Solver++ stochastic 2nd order, midpoint at ratio r (Lu et al. 2022; k-diffusion's SDE variant)."""
    if len(sigmas) <= 1:
        return x
    extra_args = dict(extra_args or {})
    noise_sampler = noise_sampler or _brownian_default(x, sigmas, extra_args)
    extra_args.pop("seed", None)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = x + to_d(x, sigmas[i], denoised) * (sigmas[i + 1] - sigmas[i])
            continue
        t, t_next = _t_fn(sigmas[i]), _t_fn(sigmas[i + 1])
        s = t + (t_next - t) * r
        fac = 1 / (2 * r)
        sd, su = get_ancestral_step(_sigma_fn(t), _sigma_fn(s), eta)
        s_ = _t_fn(torch.as_tensor(sd))
        x_2 = (_sigma_fn(s_) / _sigma_fn(t)) * x - (t - s_).expm1() * denoised
        x_2 = x_2 + noise_sampler(_sigma_fn(t), _sigma_fn(s)) * s_noise * su
        denoised_2 = model(x_2, _sigma_fn(s) * s_in, **extra_args)
        sd, su = get_ancestral_step(_sigma_fn(t), _sigma_fn(t_next), eta)
        t_next_ = _t_fn(torch.as_tensor(sd))
        denoised_d = (1 - fac) * denoised + fac * denoised_2
        x = (_sigma_fn(t_next_) / _sigma_fn(t)) * x - (t - t_next_).expm1() * denoised_d
        x = x + noise_sampler(_sigma_fn(t), _sigma_fn(t_next)) * s_noise * su
    return x


@torch.no_grad()
def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback: Callback | None = None, disable=None):
    """DPM-Solver++(2M) (Lu et al., "DPM-Solver++", 2022)."""
    extra_args = extra_args or {}
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        t, t_next = _t_fn(sigmas[i]), _t_fn(sigmas[i + 1])
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            denoised_d = denoised
        else:
            r = (t - _t_fn(sigmas[i - 1])) / h
            denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
        x = (_sigma_fn(t_next) / _sigma_fn(t)) * x - (-h).expm1() * denoised_d
        old_denoised = denoised
    return x


@torch.no_grad()
def sample_dpmpp_2m_sde(model, x, sigmas, extra_args=None, callback: Callback | None = None, disable=None,
                        eta=1.0, s_noise=1.0, noise_sampler: NoiseSampler | None = None, solver_type="midpoint"):
    """DPM-Solver++(2M) SDE (Lu et al. 2022), midpoint or Heun correction of the 2nd-order term."""
    if solver_type not in ("heun", "midpoint"):
        raise ValueError(f"solver_type must be 'heun' or 'midpoint', got {solver_type!r}")
    if len(sigmas) <= 1:
        return x
    extra_args = dict(extra_args or {})
    noise_sampler = noise_sampler or _brownian_default(x, sigmas, extra_args)
    extra_args.pop("seed", None)
    s_in = x.new_ones([x.shape[0]])
    old_denoised, h_last, h = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _t_fn(sigmas[i + 1]) - _t_fn(sigmas[i])
            eta_h = eta * h
            phi = (-h - eta_h).expm1().neg()
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + phi * denoised
            if old_denoised is not None:
                r = h_last / h
                if solver_type == "heun":
                    x = x + (phi / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
                else:
                    x = x + 0.5 * phi * (1 / r) * (denoised - old_denoised)
            if eta:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt() * s_noise
        old_denoised, h_last = denoised, h
    return x


@torch.no_grad()
def sample_dpmpp_3m_sde(model, x, sigmas, extra_args=None, callback: Callback | None = None, disable=None,
                        eta=1.0, s_noise=1.0, noise_sampler: NoiseSampler | None = None):
    """DPM-Solver++(3M) SDE (Lu et al. 2022; k-diffusion's 3rd-order multistep SDE)."""
    if len(sigmas) <= 1:
        return x
    extra_args = dict(extra_args or {})
    noise_sampler = noise_sampler or _brownian_default(x, sigmas, extra_args)
    extra_args.pop("seed", None)
    s_in = x.new_ones([x.shape[0]])
    denoised_1 = denoised_2 = None
    h = h_1 = h_2 = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            h = _t_fn(sigmas[i + 1]) - _t_fn(sigmas[i])
            h_eta = h * (eta + 1)
            x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
            phi_2 = h_eta.neg().expm1() / h_eta + 1
            if h_2 is not None:
                r0, r1 = h_1 / h, h_2 / h
                d1_0 = (denoised - denoised_1) / r0
                d1_1 = (denoised_1 - denoised_2) / r1
                d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                x = x + phi_2 * d1 - (phi_2 / h_eta - 0.5) * d2
            elif h_1 is not None:
                x = x + phi_2 * (denoised - denoised_1) / (h_1 / h)
            if eta:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * h * eta).expm1().neg().sqrt() * s_noise
        denoised_1, denoised_2 = denoised, denoised_1
        h_1, h_2 = h, h_1
    return x


@torch.no_grad()
def sample_lcm(model, x, sigmas, extra_args=None, callback: Callback | None = None, disable=None,
               noise_sampler: NoiseSampler | None = None):
    """Latent Consistency Model multistep sampling (Luo et al. 2023, Algorithm 1)."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x)
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in, **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = denoised
        if sigmas[i + 1] > 0:
            x = x + sigmas[i + 1] * noise_sampler(sigmas[i], sigmas[i + 1])
    return x


def _restart_plan(sigmas: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (sigma, sigma_next) pairs of Restart sampling with A1111's automatic restart list."""
    steps = sigmas.shape[0] - 1
    restart = {}
    if steps >= 20:
        restart_steps, restart_times = (steps // 4, 2) if steps >= 36 else (9, 1)
        sigmas = karras(steps - restart_steps * restart_times, sigmas[-2].item(), sigmas[0].item()).to(sigmas.device)
        restart = {0.1: (restart_steps + 1, restart_times, 2.0)}
    at_index = {int(torch.argmin((sigmas - key).abs(), dim=0)): v for key, v in restart.items()}
    plan = []
    for i in range(len(sigmas) - 1):
        plan.append((sigmas[i], sigmas[i + 1]))
        if i + 1 in at_index:
            n_steps, times, s_max = at_index[i + 1]
            max_idx = int(torch.argmin((sigmas - s_max).abs(), dim=0))
            if max_idx < i + 1:
                loop = karras(n_steps, sigmas[i + 1].item(), sigmas[max_idx].item()).to(sigmas.device)[:-1]
                plan.extend(list(zip(loop[:-1], loop[1:])) * times)
    return plan


@torch.no_grad()
def sample_restart(model, x, sigmas, extra_args=None, callback: Callback | None = None, disable=None,
                   s_noise=1.0, noise_sampler: NoiseSampler | None = None):
    """Restart sampling (Xu et al., "Restart Sampling for Improving Generative Processes", 2023), Heun steps."""
    extra_args = extra_args or {}
    noise_sampler = noise_sampler or default_noise_sampler(x)
    s_in = x.new_ones([x.shape[0]])
    last_sigma = None
    for step, (sigma, sigma_next) in enumerate(_restart_plan(sigmas)):
        if last_sigma is not None and last_sigma < sigma:
            x = x + noise_sampler(last_sigma, sigma) * s_noise * (sigma ** 2 - last_sigma ** 2) ** 0.5
        denoised = model(x, sigma * s_in, **extra_args)
        d = to_d(x, sigma, denoised)
        if callback is not None:
            callback({"x": x, "i": step, "sigma": sigma_next, "sigma_hat": sigma, "denoised": denoised})
        dt = sigma_next - sigma
        if sigma_next == 0:
            x = x + d * dt
        else:
            x_2 = x + d * dt
            d_2 = to_d(x_2, sigma_next, model(x_2, sigma_next * s_in, **extra_args))
            x = x + (d + d_2) / 2 * dt
        last_sigma = sigma_next
    return x


class _DPMSolver:
    """DPM-Solver 1/2/3 single steps in t = -log(sigma) (Lu et al., "DPM-Solver", 2022)."""

    def __init__(self, model, extra_args: dict[str, Any], info_callback: Callback | None):
        self.model, self.extra_args, self.info_callback = model, extra_args, info_callback

    @staticmethod
    def t(sigma):
        return sigma.log().neg()

    @staticmethod
    def sigma(t):
        return t.neg().exp()

    def eps(self, cache: dict, key: str, x, t):
        if key not in cache:
            sigma = self.sigma(t) * x.new_ones([x.shape[0]])
            cache[key] = (x - self.model(x, sigma, **self.extra_args)) / self.sigma(t)
        return cache[key]

    def step_1(self, x, t, t_next, cache):
        h = t_next - t
        return x - self.sigma(t_next) * h.expm1() * self.eps(cache, "eps", x, t)

    def step_2(self, x, t, t_next, cache, r1=1 / 2):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1 = t + r1 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        return x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)

    def step_3(self, x, t, t_next, cache, r1=1 / 3, r2=2 / 3):
        h = t_next - t
        eps = self.eps(cache, "eps", x, t)
        s1, s2 = t + r1 * h, t + r2 * h
        u1 = x - self.sigma(s1) * (r1 * h).expm1() * eps
        eps_r1 = self.eps(cache, "eps_r1", u1, s1)
        u2 = (x - self.sigma(s2) * (r2 * h).expm1() * eps
              - self.sigma(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))
        eps_r2 = self.eps(cache, "eps_r2", u2, s2)
        return x - self.sigma(t_next) * h.expm1() * eps - self.sigma(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)

    def ancestral_target(self, t, t_next, t_end, eta):
        """(t to step to deterministically, noise std to add afterwards)."""
        if not eta:
            return t_next, 0.0
        sd, _ = get_ancestral_step(self.sigma(t), self.sigma(t_next), eta)
        t_next_ = torch.minimum(t_end, self.t(torch.as_tensor(sd)))
        return t_next_, (self.sigma(t_next) ** 2 - self.sigma(t_next_) ** 2) ** 0.5

    def denoised(self, x, t, cache):
        """The denoised estimate at (x, t), from the step's cached first model call."""
        return x - self.sigma(t) * self.eps(cache, "eps", x, t)

    def report(self, x, i, t, denoised, **info):
        """The per-step callback dict k-diffusion sends: its t/t_up plus sigma/sigma_hat of t."""
        if self.info_callback is not None:
            self.info_callback({"sigma": self.sigma(t), "sigma_hat": self.sigma(t), "x": x, "i": i, "t": t,
                                "t_up": t, "denoised": denoised, **info})


@torch.no_grad()
def sample_dpm_fast(model, x, sigma_min, sigma_max, n, extra_args=None, callback: Callback | None = None,
                    disable=None, eta=0.0, s_noise=1.0, noise_sampler: NoiseSampler | None = None):
    """DPM-Solver-fast: n model evaluations split into 3rd/2nd/1st-order steps (Lu et al. 2022, §3.4)."""
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError(f"sigma_min and sigma_max must be > 0, got {sigma_min} and {sigma_max}")
    noise_sampler = noise_sampler or default_noise_sampler(x)
    solver = _DPMSolver(model, extra_args or {}, callback)
    t_start = solver.t(torch.as_tensor(sigma_max, dtype=torch.float32, device=x.device))
    t_end = solver.t(torch.as_tensor(sigma_min, dtype=torch.float32, device=x.device))
    m = math.floor(n / 3) + 1
    ts = torch.linspace(float(t_start), float(t_end), m + 1, device=x.device)
    orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
    for i, order in enumerate(orders):
        cache: dict = {}
        t, t_next = ts[i], ts[i + 1]
        t_next_, su = solver.ancestral_target(t, t_next, t_end, eta)
        if callback is not None:
            solver.report(x, i, t, solver.denoised(x, t, cache))
        x = [solver.step_1, solver.step_2, solver.step_3][order - 1](x, t, t_next_, cache)
        x = x + su * s_noise * noise_sampler(solver.sigma(t), solver.sigma(t_next))
    return x


class _PIDStepSize:
    """PID step-size controller on the inverse error (Söderlind, "Digital filters in adaptive time-stepping")."""

    def __init__(self, h, pcoeff, icoeff, dcoeff, order=1.0, accept_safety=0.81, eps=1e-8):
        self.h, self.accept_safety, self.eps = h, accept_safety, eps
        self.b1 = (pcoeff + icoeff + dcoeff) / order
        self.b2 = -(pcoeff + 2 * dcoeff) / order
        self.b3 = dcoeff / order
        self.errs: list[float] = []

    def propose_step(self, error) -> bool:
        inv_error = 1 / (float(error) + self.eps)
        if not self.errs:
            self.errs = [inv_error] * 3
        self.errs[0] = inv_error
        factor = self.errs[0] ** self.b1 * self.errs[1] ** self.b2 * self.errs[2] ** self.b3
        factor = 1 + math.atan(factor - 1)
        accept = factor >= self.accept_safety
        if accept:
            self.errs[2], self.errs[1] = self.errs[1], self.errs[0]
        self.h *= factor
        return accept


@torch.no_grad()
def sample_dpm_adaptive(model, x, sigma_min, sigma_max, extra_args=None, callback: Callback | None = None,
                        disable=None, order=3, rtol=0.05, atol=0.0078, h_init=0.05, pcoeff=0.0, icoeff=1.0,
                        dcoeff=0.0, accept_safety=0.81, eta=0.0, s_noise=1.0,
                        noise_sampler: NoiseSampler | None = None, return_info=False):
    """DPM-Solver-12/23 with adaptive step size (Lu et al. 2022, §3.4 and appendix).

    `callback` runs after every attempt, accepted or rejected, with the x and sigma it leaves,
    the denoised estimate at its start, and t, t_up, error, h and the running counts of `info`."""
    if sigma_min <= 0 or sigma_max <= 0:
        raise ValueError(f"sigma_min and sigma_max must be > 0, got {sigma_min} and {sigma_max}")
    if order not in (2, 3):
        raise ValueError(f"order must be 2 or 3, got {order}")
    noise_sampler = noise_sampler or default_noise_sampler(x)
    solver = _DPMSolver(model, extra_args or {}, callback)
    s = solver.t(torch.as_tensor(sigma_max, dtype=torch.float32, device=x.device))
    t_end = solver.t(torch.as_tensor(sigma_min, dtype=torch.float32, device=x.device))
    atol_t, rtol_t = torch.tensor(atol, device=x.device), torch.tensor(rtol, device=x.device)
    x_prev = x
    pid = _PIDStepSize(abs(h_init), pcoeff, icoeff, dcoeff, 1.5 if eta else order, accept_safety)
    info = {"steps": 0, "nfe": 0, "n_accept": 0, "n_reject": 0}
    while s < t_end - 1e-5:
        cache: dict = {}
        t = torch.minimum(t_end, s + pid.h)
        t_, su = solver.ancestral_target(s, t, t_end, eta)
        denoised = solver.denoised(x, s, cache)  # at the step's start; reported after the step
        if order == 2:
            x_low, x_high = solver.step_1(x, s, t_, cache), solver.step_2(x, s, t_, cache)
        else:
            x_low, x_high = solver.step_2(x, s, t_, cache, r1=1 / 3), solver.step_3(x, s, t_, cache)
        delta = torch.maximum(atol_t, rtol_t * torch.maximum(x_low.abs(), x_prev.abs()))
        error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
        if pid.propose_step(error):
            x_prev = x_low
            x = x_high + su * s_noise * noise_sampler(solver.sigma(s), solver.sigma(t))
            s = t
            info["n_accept"] += 1
        else:
            info["n_reject"] += 1
        info["nfe"] += order
        info["steps"] += 1
        # As k-diffusion: one report per attempt, after it, with the state it leaves (the new x and
        # sigma when accepted, the unchanged ones when rejected) and the start's denoised estimate.
        solver.report(x, info["steps"] - 1, s, denoised, error=error, h=pid.h, **info)
    return (x, info) if return_info else x
