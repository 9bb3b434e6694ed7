"""Sampler maths checked against diffusers' schedulers as oracles.

Both sides run on the same analytic eps model (`fake_eps`), the same sigmas/timesteps and the same
noise (a generator with the same seed, drawn in the same order), and must agree within 1e-4.
Samplers without a diffusers twin (DPM++ 2S a, DPM++ 3M SDE, DPM fast, DPM adaptive, Restart) are
checked against the closed-form probability-flow ODE of a Gaussian data distribution instead.
"""
from __future__ import annotations

import pytest
import torch

from modules.samplers import kdiffusion as k, schedules, timesteps as ts
from modules.samplers.denoisers import EpsDenoiser, LCMDenoiser, TimestepEpsModel
from test_samplers_fakes import FakeModel, fake_eps

diffusers = pytest.importorskip("diffusers")

SHAPE = (2, 4, 6, 6)
SD = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def start_noise(seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


def generator_noise(seed: int):
    """A noise sampler drawing from a generator seeded like the diffusers side."""
    g = torch.Generator().manual_seed(seed)
    return lambda sigma, sigma_next: torch.randn(SHAPE, generator=g)


def run_diffusers(sched, x, time_dependent=True, generator=None, limit=None, **step_kw):
    """The standard diffusers denoising loop with `fake_eps` as the UNet."""
    for i, t in enumerate(sched.timesteps[:limit] if limit else sched.timesteps):
        model_in = sched.scale_model_input(x, t)
        eps = fake_eps(model_in, t.expand(x.shape[0]), time_dependent=time_dependent)
        kw = dict(step_kw)
        if generator is not None:
            kw["generator"] = generator
        x = sched.step(eps, t, x, **kw).prev_sample
    return x


def karras_sigmas(n: int) -> torch.Tensor:
    d = EpsDenoiser(FakeModel())
    return schedules.karras(n, d.sigmas[0].item(), d.sigmas[-1].item())


def assert_close(a, b, tol=1e-4):
    diff = (a.double() - b.double()).abs().max().item()
    assert diff < tol, f"max abs difference {diff:.3g} >= {tol}"


# --- schedule and sigma/t mapping --------------------------------------------------------------------

def test_karras_sigmas_match_diffusers_karras_over_full_range():
    sched = diffusers.EulerDiscreteScheduler(**SD, use_karras_sigmas=True, timestep_spacing="linspace")
    sched.set_timesteps(12)
    assert_close(karras_sigmas(12), sched.sigmas, 1e-4)


def test_sigma_to_t_matches_diffusers_log_interpolation():
    sched = diffusers.EulerDiscreteScheduler(**SD, use_karras_sigmas=True, timestep_spacing="linspace")
    sched.set_timesteps(12)
    d = EpsDenoiser(FakeModel())
    assert_close(d.sigma_to_t(sched.sigmas[:-1]), sched.timesteps, 2e-3)


# --- Karras-sigma samplers ----------------------------------------------------------------------------

def k_run(func, sigmas, x0, model=None, **kw):
    model = model or FakeModel()
    return func(EpsDenoiser(model), x0 * sigmas[0], sigmas, extra_args={"cond": None}, **kw)


@pytest.mark.parametrize("func,cls", [
    (k.sample_euler, "EulerDiscreteScheduler"),
    (k.sample_heun, "HeunDiscreteScheduler"),
    (k.sample_lms, "LMSDiscreteScheduler"),
    (k.sample_dpm_2, "KDPM2DiscreteScheduler"),
])
def test_deterministic_k_samplers_match_diffusers(func, cls):
    n = 8
    sched = getattr(diffusers, cls)(**SD, use_karras_sigmas=True, timestep_spacing="linspace")
    sched.set_timesteps(n)
    x0 = start_noise()
    ours = k_run(func, karras_sigmas(n), x0)
    theirs = run_diffusers(sched, x0 * sched.init_noise_sigma)
    assert_close(ours, theirs)


def test_euler_ancestral_matches_diffusers_with_same_noise():
    """diffusers' Euler a has no Karras option: it gets our uniform sigmas and timesteps written in."""
    n = 8
    d = EpsDenoiser(FakeModel())
    sigmas = d.get_sigmas(n)
    sched = diffusers.EulerAncestralDiscreteScheduler(**SD)
    sched.set_timesteps(n)
    sched.sigmas = sigmas.clone()
    sched.timesteps = d.sigma_to_t(sigmas[:-1])
    x0 = start_noise()
    ours = k.sample_euler_ancestral(d, x0 * sigmas[0], sigmas, noise_sampler=generator_noise(7))
    theirs = run_diffusers(sched, x0 * sigmas[0], generator=torch.Generator().manual_seed(7))
    assert_close(ours, theirs)


def test_dpm2_ancestral_matches_diffusers_with_same_noise():
    """diffusers rounds this scheduler's (non-midpoint) timesteps to integers, so the model ignores t."""
    n = 8
    sched = diffusers.KDPM2AncestralDiscreteScheduler(**SD, use_karras_sigmas=True, timestep_spacing="linspace")
    sched.set_timesteps(n)
    x0 = start_noise()
    ours = k_run(k.sample_dpm_2_ancestral, karras_sigmas(n), x0, model=FakeModel(time_dependent=False),
                 noise_sampler=generator_noise(3))
    theirs = run_diffusers(sched, x0 * sched.init_noise_sigma, time_dependent=False,
                           generator=torch.Generator().manual_seed(3))
    assert_close(ours, theirs)


def vp_start(x0: torch.Tensor, sigma0: torch.Tensor) -> torch.Tensor:
    """The same starting point in diffusers' variance-preserving space: x_vp = x_k / sqrt(1 + sigma^2)."""
    return x0 * sigma0 / (1 + sigma0 ** 2) ** 0.5


def test_dpmpp_2m_matches_diffusers_dpmsolver_plus_plus_order_2():
    """diffusers rounds the Karras timesteps it feeds the UNet, so the model here ignores t."""
    n = 10
    sched = diffusers.DPMSolverMultistepScheduler(**SD, algorithm_type="dpmsolver++", solver_order=2,
                                                  solver_type="midpoint", use_karras_sigmas=True,
                                                  timestep_spacing="linspace", lower_order_final=True,
                                                  final_sigmas_type="zero")
    sched.set_timesteps(n)
    sigmas, x0 = karras_sigmas(n), start_noise()
    ours = k_run(k.sample_dpmpp_2m, sigmas, x0, model=FakeModel(time_dependent=False))
    theirs = run_diffusers(sched, vp_start(x0, sigmas[0]), time_dependent=False)
    assert_close(ours, theirs)


@pytest.mark.parametrize("solver_type", ["midpoint", "heun"])
def test_dpmpp_2m_sde_matches_diffusers_sde_dpmsolver_plus_plus(solver_type):
    n = 10
    sched = diffusers.DPMSolverMultistepScheduler(**SD, algorithm_type="sde-dpmsolver++", solver_order=2,
                                                  solver_type=solver_type, use_karras_sigmas=True,
                                                  timestep_spacing="linspace", lower_order_final=True,
                                                  final_sigmas_type="zero")
    sched.set_timesteps(n)
    sigmas, x0 = karras_sigmas(n), start_noise()
    ours = k_run(k.sample_dpmpp_2m_sde, sigmas, x0, model=FakeModel(time_dependent=False),
                 noise_sampler=generator_noise(5), solver_type=solver_type)
    theirs = run_diffusers(sched, vp_start(x0, sigmas[0]), time_dependent=False,
                           generator=torch.Generator().manual_seed(5))
    assert_close(ours, theirs)


def test_dpmpp_sde_matches_diffusers_dpmsolver_sde_with_same_brownian_tree():
    """A Brownian tree's samples depend on its end points, so both sides use diffusers' own sigmas
    (a float32 rounding difference in sigma_min would give a different path)."""
    pytest.importorskip("torchsde")
    from modules.samplers.utils import BrownianTreeNoiseSampler
    n = 6
    sched = diffusers.DPMSolverSDEScheduler(**SD, use_karras_sigmas=True, timestep_spacing="linspace",
                                            noise_sampler_seed=11)
    sched.set_timesteps(n)
    sigmas, x0 = torch.cat([sched.sigmas[:1], sched.sigmas[1::2]]), start_noise()
    assert_close(sigmas, karras_sigmas(n))
    x = x0 * sigmas[0]
    noise = BrownianTreeNoiseSampler(x, sigmas[sigmas > 0].min(), sigmas.max(), seed=11)
    ours = k.sample_dpmpp_sde(EpsDenoiser(FakeModel()), x, sigmas, noise_sampler=noise)
    theirs = run_diffusers(sched, x0 * sched.init_noise_sigma)
    assert_close(ours, theirs)


# --- timestep samplers --------------------------------------------------------------------------------

def compvis_timesteps(n: int) -> torch.Tensor:
    """A1111's DDIM/PLMS timesteps: range(0, 1000, 1000 // n) + 1."""
    return torch.tensor(list(range(0, 1000, 1000 // n))) + 1


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_matches_diffusers_ddim(eta):
    """A1111's DDIM runs n-1 steps and stops at alphas_cumprod[1]; diffusers (steps_offset=1,
    "leading") walks the same timesteps, so it is stopped before its final 1 -> 0 step."""
    n = 10
    sched = diffusers.DDIMScheduler(**SD, clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                    timestep_spacing="leading")
    sched.set_timesteps(n)
    assert sched.timesteps.flip(0).tolist() == compvis_timesteps(n).tolist()
    model = FakeModel()
    x0 = start_noise()
    ours = ts.ddim(TimestepEpsModel(model), x0, compvis_timesteps(n), model.alphas_cumprod, eta=eta,
                   noise_sampler=generator_noise(9))
    theirs = run_diffusers(sched, x0, limit=n - 1, eta=eta, generator=torch.Generator().manual_seed(9))
    assert_close(ours, theirs)


def test_plms_matches_diffusers_pndm_skip_prk():
    """diffusers' PLMS repeats the second timestep for the pseudo-improved-Euler start; A1111's run
    ends one step earlier (at alphas_cumprod[1]), so diffusers stops before its last call."""
    n = 10
    sched = diffusers.PNDMScheduler(**SD, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1)
    sched.set_timesteps(n)
    model = FakeModel()
    x0 = start_noise()
    ours = ts.plms(TimestepEpsModel(model), x0, compvis_timesteps(n), model.alphas_cumprod)
    theirs = run_diffusers(sched, x0, limit=n)
    assert_close(ours, theirs)


@pytest.mark.parametrize("variant", ["bh1", "bh2"])
def test_unipc_matches_diffusers_unipc(variant):
    """A1111 steps UniPC in continuous time t = 1 .. 1/N and feeds the model (t - 1/N) * N. With 9
    steps those are the integers 999, 888, ..., 111, 0, which diffusers uses with "linspace"
    spacing and final_sigmas_type="sigma_min" (ending at timestep 0, not at sigma 0). UniPC only uses
    the number of timesteps it is given (A1111 passes range(0, 1000, 1000 // steps), which has 10
    entries for 9 steps), so 9 are passed here."""
    n = 9
    sched = diffusers.UniPCMultistepScheduler(**SD, solver_order=3, predict_x0=True, solver_type=variant,
                                              lower_order_final=True, timestep_spacing="linspace",
                                              final_sigmas_type="sigma_min")
    sched.set_timesteps(n)
    assert sched.timesteps.tolist() == [999 - 111 * k for k in range(n)]
    model = FakeModel()
    x0 = start_noise()
    ours = ts.unipc(TimestepEpsModel(model), x0, torch.arange(n), model.alphas_cumprod, order=3,
                    variant=variant)
    theirs = run_diffusers(sched, x0)
    assert_close(ours, theirs)


def test_lcm_matches_diffusers_lcm_scheduler():
    """Same LCM timesteps on both sides; ours works in Karras space (x / sqrt(alpha_bar)), so the
    VP-space start is converted. A1111 applies c_skip to the Karras-space input where diffusers uses
    the VP one; c_skip <= 7e-6 on LCM timesteps, far below the tolerance."""
    n = 4
    sched = diffusers.LCMScheduler(**SD, original_inference_steps=50, timestep_scaling=10.0)
    sched.set_timesteps(n)
    model = FakeModel()
    ac = model.alphas_cumprod
    t_list = sched.timesteps.long()
    sigmas = torch.cat([((1 - ac[t_list]) / ac[t_list]) ** 0.5, torch.zeros(1)])
    den = LCMDenoiser(model)
    assert den.sigma_to_t(sigmas[:-1]).tolist() == t_list.tolist()
    x_vp = start_noise()
    ours = k.sample_lcm(den, x_vp / ac[t_list[0]] ** 0.5, sigmas, noise_sampler=generator_noise(4))
    theirs = run_diffusers(sched, x_vp, generator=torch.Generator().manual_seed(4))
    assert_close(ours, theirs)


# --- samplers without a diffusers twin: exact ODE of Gaussian data ------------------------------------

MU, S = 0.3, 0.5


def gaussian_denoiser(x, sigma, **_):
    """The exact denoiser of data ~ N(MU, S^2): E[x0 | x] = MU + S^2 / (S^2 + sigma^2) (x - MU)."""
    sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return MU + S ** 2 / (S ** 2 + sigma ** 2) * (x - MU)


def ode_at(x_T, sigma_T, sigma):
    """Probability-flow ODE solution at `sigma` for Gaussian data, from x_T at sigma_T."""
    return MU + (x_T - MU) * (S ** 2 + sigma ** 2) ** 0.5 / (S ** 2 + sigma_T ** 2) ** 0.5


def final_target(x_T, sigmas):
    """Where an exact solver ends: the exact x at the last nonzero sigma, then (as every sampler
    here does on its last step) the denoised estimate there."""
    x_last = ode_at(x_T, sigmas[0], sigmas[-2])
    return gaussian_denoiser(x_last, sigmas[-2].expand(x_T.shape[0]))


@pytest.mark.parametrize("func,kw,tol", [
    (k.sample_dpmpp_2s_ancestral, {"eta": 0.0}, 1e-2),
    (k.sample_dpmpp_3m_sde, {"eta": 0.0}, 3e-3),
    (k.sample_dpmpp_2m_sde, {"eta": 0.0}, 2e-2),
    (k.sample_dpmpp_sde, {"eta": 0.0}, 1e-2),
    (k.sample_dpmpp_2m, {}, 2e-2),
    (k.sample_heun, {}, 2e-2),
    (k.sample_lms, {}, 1e-3),
    (k.sample_euler, {}, 0.15),
])
def test_deterministic_samplers_follow_the_exact_ode(func, kw, tol):
    """Errors shrink with the method's order: 4th-order LMS and 3M are far closer than Euler."""
    sigmas = karras_sigmas(30)
    x_T = start_noise() * sigmas[0]
    assert_close(func(gaussian_denoiser, x_T, sigmas, **kw), final_target(x_T, sigmas), tol)


def test_dpm_fast_and_adaptive_follow_the_exact_ode():
    sigma_min, sigma_max = 0.0292, 14.6146
    x_T = start_noise() * sigma_max
    exact = ode_at(x_T, sigma_max, sigma_min)
    fast = k.sample_dpm_fast(gaussian_denoiser, x_T, sigma_min, sigma_max, 30)
    adaptive, info = k.sample_dpm_adaptive(gaussian_denoiser, x_T, sigma_min, sigma_max, return_info=True)
    assert_close(fast, exact, 2e-3)
    assert_close(adaptive, exact, 5e-2)
    assert info["n_accept"] > 0


@pytest.mark.parametrize("func,steps,tol", [
    (k.sample_euler_ancestral, 40, 0.05),  # first order: visibly biased at 20 steps
    (k.sample_dpmpp_2s_ancestral, 20, 0.03),
    (k.sample_dpm_2_ancestral, 20, 0.03),
    (k.sample_restart, 20, 0.03),
])
def test_stochastic_samplers_reach_the_data_distribution(func, steps, tol):
    """With noise the path is random but the marginals are exact: samples have mean MU and std S."""
    sigmas = karras_sigmas(steps)
    x_T = torch.randn(4000, 1, 1, 1, generator=torch.Generator().manual_seed(1)) * sigmas[0]
    g = torch.Generator().manual_seed(2)
    out = func(gaussian_denoiser, x_T, sigmas, noise_sampler=lambda a, b: torch.randn(x_T.shape, generator=g))
    assert abs(out.mean().item() - MU) < tol and abs(out.std().item() - S) < tol


@pytest.mark.parametrize("steps", [10, 20, 40])
def test_restart_plan_spends_exactly_the_requested_steps(steps):
    """A1111's automatic restart list: 9 restart steps once from 20 steps, steps//4 twice from 36."""
    plan = k._restart_plan(karras_sigmas(steps))
    assert len(plan) == steps
    assert plan[-1][1] == 0
    ups = sum(1 for (a, _), (b, _) in zip(plan, plan[1:]) if b > a)
    assert ups == (0 if steps < 20 else 1 if steps < 36 else 2)


# --- a real (tiny, random) diffusers UNet ------------------------------------------------------------

class TinyUNetModel:
    """The model interface over a tiny random UNet2DConditionModel (fixed seed)."""

    def __init__(self):
        torch.manual_seed(0)
        self.unet = diffusers.UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=8, attention_head_dim=2, norm_num_groups=4).eval()
        self.alphas_cumprod = FakeModel().alphas_cumprod
        self.parameterization = "eps"
        self.cond = torch.randn(1, 4, 8, generator=torch.Generator().manual_seed(1))

    @torch.no_grad()
    def apply_model(self, x, t, cond=None):
        c = self.cond.expand(x.shape[0], -1, -1)
        return self.unet(x, torch.as_tensor(t).float().expand(x.shape[0]), encoder_hidden_states=c).sample


def test_euler_and_ddim_match_diffusers_on_a_tiny_unet():
    model = TinyUNetModel()
    x0 = start_noise()
    n = 5
    sched = diffusers.EulerDiscreteScheduler(**SD, use_karras_sigmas=True, timestep_spacing="linspace")
    sched.set_timesteps(n)
    x = x0 * sched.init_noise_sigma
    for t in sched.timesteps:
        x = sched.step(model.apply_model(sched.scale_model_input(x, t), t), t, x).prev_sample
    sigmas = karras_sigmas(n)
    assert_close(k.sample_euler(EpsDenoiser(model), x0 * sigmas[0], sigmas), x)

    ddim = diffusers.DDIMScheduler(**SD, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    ddim.set_timesteps(n)
    x = x0
    for t in ddim.timesteps[:-1]:
        x = ddim.step(model.apply_model(x, t), t, x).prev_sample
    assert_close(ts.ddim(TimestepEpsModel(model), x0, compvis_timesteps(n), model.alphas_cumprod), x)
