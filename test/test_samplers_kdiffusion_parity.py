"""Details where a sampler must do what k-diffusion (the code A1111 runs) does, so that a seed gives
the same image, the same noise stream and the same progress reports as in A1111.

* Karras churn (Euler, Heun, DPM2): one noise draw per step whatever gamma is, added only when
  gamma > 0. The oracle is a reference loop written here from Karras et al. 2022, Algorithm 2, with
  that draw rule; the noise source counts its draws.
* DPM adaptive: one callback per attempted step, sent after the attempt with the state it leaves.
  The oracle is the exact denoiser of Gaussian data, which gives every reported `denoised`.
* Brownian tree noise: query times keep the sigmas' dtype. The oracle is diffusers'
  `BrownianTreeNoiseSampler`, a port of k-diffusion's.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch

from modules import sd_samplers, shared
from modules.samplers import kdiffusion as k, schedules
from modules.samplers.denoisers import EpsDenoiser
from test_samplers_fakes import FakeModel, FakeRNG, conds, fake_p

SHAPE = (2, 4, 6, 6)


@pytest.fixture(autouse=True)
def _clean_state():
    shared.state.reset()
    yield
    shared.state.reset()


class CountingNoise:
    """Unit Gaussian noise from a seeded generator, counting the draws (a noise_sampler)."""

    def __init__(self, seed: int, shape=SHAPE):
        self.generator = torch.Generator().manual_seed(seed)
        self.shape = shape
        self.draws = 0

    def __call__(self, *_sigmas) -> torch.Tensor:
        self.draws += 1
        return torch.randn(self.shape, generator=self.generator)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


# --- (a) churn: Euler, Heun, DPM2 ---------------------------------------------------------------------

def algorithm_2(method: str, denoise, x, sigmas, randn, s_churn=0.0, s_tmin=0.0, s_tmax=math.inf, s_noise=1.0):
    """Karras et al. 2022, Algorithm 2, drawing noise as k-diffusion does: z is taken from `randn`
    at the top of every step, used only when that step is churned. Returns (x, reports), one
    report (x, sigma, sigma_hat, denoised) per step."""
    steps = len(sigmas) - 1
    batch = torch.ones(x.shape[0])
    reports = []
    for i in range(steps):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        gamma = min(s_churn / steps, math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        z = randn() * s_noise
        sigma_hat = sigma * (1 + gamma)
        if gamma > 0:
            x = x + z * (sigma_hat ** 2 - sigma ** 2) ** 0.5
        x0 = denoise(x, sigma_hat * batch)
        slope = (x - x0) / sigma_hat
        reports.append((x, sigma, sigma_hat, x0))
        h = sigma_next - sigma_hat
        if method == "euler" or sigma_next == 0:
            x = x + h * slope
        elif method == "heun":  # trapezoid: average the slopes at both ends
            x_end = x + h * slope
            slope_end = (x_end - denoise(x_end, sigma_next * batch)) / sigma_next
            x = x + h * (slope + slope_end) / 2
        else:  # DPM2: the slope at the geometric midpoint of sigma_hat and sigma_next
            sigma_mid = (sigma_hat * sigma_next) ** 0.5
            x_mid = x + (sigma_mid - sigma_hat) * slope
            slope_mid = (x_mid - denoise(x_mid, sigma_mid * batch)) / sigma_mid
            x = x + h * slope_mid
    return x, reports


CHURN_FUNCS = {"euler": k.sample_euler, "heun": k.sample_heun, "dpm2": k.sample_dpm_2}
CHURN_KNOBS = [
    {},                                                   # A1111's defaults: never churned
    {"s_churn": 1.0, "s_tmin": 0.5, "s_tmax": 5.0},       # churned only inside the window
    {"s_churn": 2.5, "s_tmin": 0.0, "s_tmax": 3.0, "s_noise": 1.003},
]


@pytest.mark.parametrize("knobs", CHURN_KNOBS, ids=["no-churn", "window", "window-s_noise"])
@pytest.mark.parametrize("method", sorted(CHURN_FUNCS))
def test_churn_samplers_draw_one_noise_per_step_like_k_diffusion(method, knobs):
    """Same seed, same knobs: the same latent, the same callbacks and the same number of draws as
    k-diffusion's loop. Outside [s_tmin, s_tmax] a step is not churned but still takes its noise,
    so the noise of later steps is the same as in A1111."""
    d = EpsDenoiser(FakeModel())
    n = 8
    sigmas = schedules.karras(n, d.sigmas[0].item(), d.sigmas[-1].item())
    churned = [s for s in sigmas[:-1] if knobs and knobs["s_tmin"] <= s <= knobs["s_tmax"]]
    assert not knobs or 0 < len(churned) < n  # some steps in the window, some out
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * sigmas[0]

    ours_noise, seen = CountingNoise(21), []
    ours = CHURN_FUNCS[method](d, x, sigmas, callback=seen.append, noise_sampler=ours_noise, **knobs)
    ref_noise = CountingNoise(21)
    ref, reports = algorithm_2(method, d, x, sigmas, ref_noise, **knobs)

    assert ours_noise.draws == ref_noise.draws == n
    assert max_diff(ours, ref) < 1e-5
    assert len(seen) == len(reports)
    for got, (x_i, sigma, sigma_hat, x0) in zip(seen, reports):
        assert max_diff(got["x"], x_i) < 1e-5 and max_diff(got["denoised"], x0) < 1e-5
        assert float(got["sigma"]) == float(sigma)
        assert float(got["sigma_hat"]) == pytest.approx(float(sigma_hat), rel=1e-6)


@pytest.mark.parametrize("name", ["Euler", "Heun", "DPM2"])
def test_churn_samplers_take_one_draw_per_step_from_p_rng(name):
    """A1111 routes k-diffusion's randn_like to p.rng.next(): one call per step, churned or not."""
    sampler = sd_samplers.create_sampler(name, FakeModel())
    p = fake_p(name, steps=6)
    c, uc = conds(1)
    sampler.sample(p, torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0)), c, uc)
    assert p.rng.calls == 6


def test_euler_with_a_churn_window_gives_a1111_image_through_the_glue():
    """The whole txt2img path (CFG, sigmas from options, noise from p.rng): the same latent as
    Algorithm 2 run with the same denoiser and the same per-image generators."""
    knobs = {"s_churn": 1.0, "s_tmin": 0.5, "s_tmax": 5.0}
    sampler = sd_samplers.create_sampler("Euler", FakeModel())
    p = fake_p("Euler", steps=8, batch=2, seeds=[7, 8], **knobs)
    c, uc = conds(2)
    unit = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    ours = sampler.sample(p, unit, c, uc)

    sigmas = sampler.get_sigmas(fake_p("Euler", steps=8), 8)
    cfg, extra = sampler.model_wrap_cfg, dict(sampler.sampler_extra_args)
    cfg.step = 0
    rng = FakeRNG((4, 8, 8), [7, 8])
    ref, _ = algorithm_2("euler", lambda x, s: cfg(x, s, **extra), unit * sigmas[0], sigmas, rng.next, **knobs)
    assert rng.calls == p.rng.calls == 8
    assert max_diff(ours, ref) < 1e-5


# --- (b) DPM adaptive progress reports ------------------------------------------------------------------

MU, S = 0.3, 0.5


def gaussian_denoiser(x, sigma, **_):
    """The exact denoiser of data ~ N(MU, S^2)."""
    sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return MU + S ** 2 / (S ** 2 + sigma ** 2) * (x - MU)


def test_dpm_adaptive_reports_each_attempt_after_it_like_k_diffusion():
    """k-diffusion calls back once per attempted step, after it: `x` and `sigma` are where the
    attempt left the sample (the new ones when accepted, the old ones when rejected), `denoised`
    is the estimate at the attempt's start, `i` counts attempts. So the last report is the result."""
    sigma_min, sigma_max = 0.0292, 14.6146
    x_T = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * sigma_max
    seen = []
    out, info = k.sample_dpm_adaptive(gaussian_denoiser, x_T, sigma_min, sigma_max, callback=seen.append,
                                      h_init=4.0, return_info=True)  # long steps: some get rejected
    assert info["n_reject"] > 0 and info["n_accept"] > 0
    assert [d["i"] for d in seen] == list(range(info["steps"]))
    assert torch.equal(seen[-1]["x"], out)
    assert float(seen[-1]["sigma"]) == pytest.approx(sigma_min, rel=1e-5)
    assert {"x", "i", "sigma", "sigma_hat", "denoised", "t", "t_up", "error", "h",
            "steps", "nfe", "n_accept", "n_reject"} <= set(seen[0])
    prev_x, prev_sigma, accepted = x_T, torch.tensor(sigma_max), 0
    for d in seen:
        expected = gaussian_denoiser(prev_x, prev_sigma.expand(x_T.shape[0]))
        assert max_diff(d["denoised"], expected) < 1e-5
        assert float(d["sigma_hat"]) == float(d["sigma"])
        assert d["steps"] == d["i"] + 1 and d["n_accept"] + d["n_reject"] == d["steps"]
        if d["n_accept"] > accepted:
            assert float(d["sigma"]) < float(prev_sigma) and not torch.equal(d["x"], prev_x)
        else:
            assert torch.equal(d["x"], prev_x)
            assert float(d["sigma"]) == pytest.approx(float(prev_sigma), rel=1e-6)
        accepted, prev_x, prev_sigma = d["n_accept"], d["x"], d["sigma"]


# --- (c) Brownian tree query times keep their dtype ---------------------------------------------------

def _reference_brownian():
    pytest.importorskip("torchsde")
    sde = pytest.importorskip("diffusers.schedulers.scheduling_dpmsolver_sde")
    return sde.BrownianTreeNoiseSampler


def karras_in(dtype: torch.dtype, n: int) -> torch.Tensor:
    """A Karras schedule computed in `dtype` (float64 sigmas are not float32 values)."""
    ramp = torch.linspace(0, 1, n, dtype=dtype)
    lo, hi = 0.0292 ** (1 / 7), 14.6146 ** (1 / 7)
    return torch.cat([(hi + ramp * (lo - hi)) ** 7, torch.zeros(1, dtype=dtype)])


@pytest.mark.parametrize("seed", [3, [3, 4]], ids=["one-tree", "tree-per-image"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_brownian_noise_equals_k_diffusion_noise_bit_for_bit(dtype, seed):
    """Every query of a DPM++ SDE run gives exactly k-diffusion's noise: the times reach torchsde in
    the sigmas' dtype and sqrt|dt| is taken on those tensors."""
    from modules.samplers.utils import BrownianTreeNoiseSampler
    reference = _reference_brownian()
    x = torch.zeros(2, 4, 8, 8)
    for n in (10, 20, 30):
        sigmas = karras_in(dtype, n)
        lo, hi = sigmas[sigmas > 0].min(), sigmas.max()
        ours, theirs = BrownianTreeNoiseSampler(x, lo, hi, seed=seed), reference(x, lo, hi, seed=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(n - 1):
                a, b = ours(sigmas[i], sigmas[i + 1]), theirs(sigmas[i], sigmas[i + 1])
                assert torch.equal(a, b), f"{dtype}, {n} steps: query {i} differs by {max_diff(a, b):.3g}"
                assert torch.equal(ours(sigmas[i + 1], sigmas[i]), theirs(sigmas[i + 1], sigmas[i]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dpmpp_2m_sde_image_equals_the_one_from_k_diffusion_noise(dtype):
    """The same sampler run on our Brownian noise and on k-diffusion's gives the same latent."""
    from modules.samplers.utils import BrownianTreeNoiseSampler
    reference = _reference_brownian()
    sigmas = karras_in(dtype, 20)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * sigmas[0].float()
    lo, hi = sigmas[sigmas > 0].min(), sigmas.max()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = k.sample_dpmpp_2m_sde(gaussian_denoiser, x, sigmas,
                                     noise_sampler=BrownianTreeNoiseSampler(x, lo, hi, seed=[5, 6]))
        theirs = k.sample_dpmpp_2m_sde(gaussian_denoiser, x, sigmas, noise_sampler=reference(x, lo, hi, seed=[5, 6]))
    assert torch.equal(ours, theirs)
