"""The sampler objects `create_sampler` returns: sigmas from options, img2img steps, CFG with AND
weights and NGMS, inpainting, noise from p.rng and Brownian trees, infotext keys, progress and
interruption. The model is a fake behind the model interface (`apply_model`)."""
from __future__ import annotations

import pytest
import torch

from modules import errors, sd_samplers, shared
from modules.samplers import kdiffusion as k, schedules
from modules.samplers.denoisers import EpsDenoiser
from modules.sd_samplers_cfg_denoiser import CFGDenoiser
from test_samplers_fakes import FakeModel, conds, fake_p

SHAPE = (1, 4, 8, 8)


@pytest.fixture(autouse=True)
def _clean_state():
    shared.state.reset()
    yield
    shared.state.reset()


def unit_noise(batch=1, seed=0):
    return torch.randn(batch, 4, 8, 8, generator=torch.Generator().manual_seed(seed))


def run(name, p=None, model=None, batch=1, img2img=False, **pkw):
    model = model or FakeModel()
    p = p or fake_p(name, batch=batch, **pkw)
    c, uc = conds(batch)
    sampler = sd_samplers.create_sampler(name, model)
    x = unit_noise(batch)
    if img2img:
        return sampler.sample_img2img(p, x, unit_noise(batch, 1), c, uc), p, model, sampler
    return sampler.sample(p, x, c, uc), p, model, sampler


# --- sigmas and steps --------------------------------------------------------------------------------

def test_txt2img_equals_pure_sampler_on_the_same_karras_sigmas_when_cfg_is_neutral():
    """cfg_scale 1 with one prompt is just the conditional denoiser: the glue adds nothing else."""
    out, p, model, sampler = run("DPM++ 2M", cfg_scale=1.0)
    d = EpsDenoiser(FakeModel())
    sigmas = schedules.karras(6, d.sigmas[0].item(), d.sigmas[-1].item())
    c, _ = conds(1)
    cond = c.batch[0][0].schedules[0].cond[None]
    expected = k.sample_dpmpp_2m(d, unit_noise() * sigmas[0], sigmas, extra_args={"cond": cond})
    assert torch.allclose(out, expected, atol=1e-5)
    assert p.extra_generation_params == {"Schedule type": "Karras"}


def test_scheduler_choice_and_discard_and_overrides_reach_the_sigmas():
    sampler = sd_samplers.create_sampler("Euler", FakeModel())
    p = fake_p("Euler", scheduler="Exponential")
    sig = sampler.get_sigmas(p, 5)
    assert len(sig) == 6 and p.extra_generation_params["Schedule type"] == "Exponential"
    assert sampler.get_sigmas(fake_p("Euler"), 5).tolist() == pytest.approx(sampler.model_wrap.get_sigmas(5).tolist())
    dpm2 = sd_samplers.create_sampler("DPM2", FakeModel())
    assert len(dpm2.get_sigmas(fake_p("DPM2"), 5)) == 6  # steps + 1, then the next-to-last dropped
    with shared.opts.override({"sigma_min": 0.5, "sigma_max": 5.0, "rho": 3.0, "always_discard_next_to_last_sigma": True}):
        p = fake_p("Euler", scheduler="Karras")
        sig = sampler.get_sigmas(p, 5)
    assert sig[0].item() == pytest.approx(5.0) and len(sig) == 6
    assert p.extra_generation_params == {"Discard penultimate sigma": True, "Schedule type": "Karras",
                                         "Schedule min sigma": 0.5, "Schedule max sigma": 5.0, "Schedule rho": 3.0}
    with shared.opts.override({"use_old_karras_scheduler_sigmas": True}):
        assert sampler.get_sigmas(fake_p("Euler", scheduler="karras"), 4)[0].item() == pytest.approx(10.0)


@pytest.mark.parametrize("sampler_name, scheduler, hr_scheduler, written", [
    ("DPM++ 2M", "Automatic", "Automatic", None),   # Karras on both passes: nothing new to say
    ("DPM++ 2M", "Automatic", "Karras", None),
    ("DPM++ 2M", "Automatic", "Exponential", "Exponential"),
    ("Euler", "Automatic", "Karras", "Karras"),        # first pass had no schedule type
    ("Euler", "Karras", "Karras", None),
])
def test_hires_schedule_type_written_only_when_it_differs_from_the_first_pass(sampler_name, scheduler,
                                                                              hr_scheduler, written):
    """A1111 writes "Hires schedule type" when the hires label differs from the first pass's "Schedule type"."""
    sampler = sd_samplers.create_sampler(sampler_name, FakeModel())
    p = fake_p(sampler_name, scheduler=scheduler, hr_scheduler=hr_scheduler)
    sampler.get_sigmas(p, 4)
    p.is_hr_pass = True
    sampler.get_sigmas(p, 3)
    assert p.extra_generation_params.get("Hires schedule type") == written


def test_unknown_scheduler_on_p_raises():
    with pytest.raises(errors.UnknownScheduler):
        run("Euler", scheduler="Karass")


def test_noise_scheduler_override_wins():
    sampler = sd_samplers.create_sampler("Euler", FakeModel())
    p = fake_p("Euler", sampler_noise_scheduler_override=lambda n: torch.linspace(3, 0, n + 1))
    assert sampler.get_sigmas(p, 3).tolist() == [3.0, 2.0, 1.0, 0.0]


@pytest.mark.parametrize("fix,steps,denoise,calls", [(False, 10, 0.5, 6), (True, 10, 0.5, 10), (False, 10, 1.0, 10)])
def test_img2img_truncates_or_stretches_the_schedule(fix, steps, denoise, calls):
    with shared.opts.override({"img2img_fix_steps": fix}):
        _, p, model, _ = run("Euler", img2img=True, steps=steps, denoising_strength=denoise)
    assert len(model.calls) == calls  # CFG batches cond+uncond into one model call per step


def test_img2img_starts_from_init_latent_plus_noise_at_first_sigma():
    sampler = sd_samplers.create_sampler("Euler", FakeModel())
    p = fake_p("Euler", steps=10, denoising_strength=0.5)
    sigmas = sampler.get_sigmas(p, 10)
    model = sampler.sd_model
    c, uc = conds(1)
    x, noise = unit_noise(), unit_noise(1, 1)
    sampler.sample_img2img(p, x, noise, c, uc)
    first = model.calls[0]["x"][:1]
    sigma0 = sigmas[10 - 5 - 1]
    assert torch.allclose(first, (x + noise * sigma0) / (sigma0 ** 2 + 1) ** 0.5, atol=1e-5)


def test_sgm_noise_multiplier():
    with shared.opts.override({"sgm_noise_multiplier": True}):
        _, p, model, sampler = run("Euler")
    sigma0 = sampler.get_sigmas(fake_p("Euler"), 6)[0]
    assert torch.allclose(model.calls[0]["x"][:1], unit_noise() * (1 + sigma0 ** 2) ** 0.5 / (1 + sigma0 ** 2) ** 0.5, atol=1e-5)
    assert p.extra_generation_params["SGM noise multiplier"] is True


# --- knobs and infotext ------------------------------------------------------------------------------

def test_eta_written_only_when_not_default():
    assert "Eta" not in run("Euler a")[1].extra_generation_params
    assert run("Euler a", eta=0.5)[1].extra_generation_params["Eta"] == 0.5
    assert "Eta" not in run("Euler", eta=0.5)[1].extra_generation_params  # Euler takes no eta
    assert run("DDIM")[1].extra_generation_params == {}
    assert run("DDIM", eta=0.3)[1].extra_generation_params == {"Eta DDIM": 0.3}
    with shared.opts.override({"eta_ancestral": 0.7}):
        assert run("Euler a")[1].extra_generation_params["Eta"] == 0.7


def test_churn_knobs_from_p_or_options_with_infotext():
    _, p, _, _ = run("Euler", s_churn=0.5, s_noise=1.0, s_tmax=0)
    assert p.extra_generation_params == {"Sigma churn": 0.5}
    with shared.opts.override({"s_noise": 0.9}):
        _, p, _, _ = run("DPM++ 2S a")
    assert p.extra_generation_params["Sigma noise"] == 0.9
    _, p, _, _ = run("Euler a", s_noise=0.9)  # Euler a takes no s_noise in A1111
    assert "Sigma noise" not in p.extra_generation_params


def test_churn_changes_euler_and_draws_from_p_rng():
    plain, *_ = run("Euler")
    churned, p, _, _ = run("Euler", s_churn=1.0)
    assert not torch.allclose(plain, churned) and p.rng.calls == 6


def test_ancestral_noise_comes_from_p_rng():
    _, p, _, _ = run("Euler a")
    assert p.rng.calls == 5  # one draw per step except the last


# --- noise determinism ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["DPM++ SDE", "DPM++ 2M SDE", "DPM++ 3M SDE", "Euler a"])
def test_batch_images_match_single_images(name):
    """Noise per image (Brownian tree per seed, or p.rng per image): image 2 of a batch equals the
    same seed run alone."""
    model = FakeModel()
    c2, uc2 = conds(2)
    c1, uc1 = conds(1)
    x = unit_noise(2)
    both = sd_samplers.create_sampler(name, model).sample(fake_p(name, batch=2, seeds=[5, 6]), x, c2, uc2)
    alone = sd_samplers.create_sampler(name, model).sample(fake_p(name, batch=1, seeds=[6]), x[1:], c1, uc1)
    assert torch.allclose(both[1:], alone, atol=1e-5)


def test_brownian_noise_depends_on_seed():
    a, *_ = run("DPM++ 2M SDE", seeds=[1])
    b, *_ = run("DPM++ 2M SDE", seeds=[2])
    assert not torch.allclose(a, b)


# --- CFG -------------------------------------------------------------------------------------------

class FakeInner(torch.nn.Module):
    """Denoiser whose output is the mean of its conditioning, so CFG arithmetic is visible."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def forward(self, x, sigma, cond=None, image_cond=None):
        self.batches.append(x.shape[0])
        return torch.zeros_like(x) + cond.mean(dim=(1, 2)).view(-1, 1, 1, 1)


def make_cfg(**kw):
    class FakeSampler:
        last_latent = None
    cfg = CFGDenoiser(FakeInner(), FakeSampler(), **kw)
    cfg.p = fake_p()
    return cfg


def test_cfg_and_weights():
    cfg = make_cfg()
    c, uc = conds(1, value=1.0, weights=(0.5, 1.5))  # parts have means 1 and 2, uncond 0
    out = cfg(torch.zeros(SHAPE), torch.tensor([1.0]), uc, c, 7.0)
    assert torch.allclose(out, torch.full(SHAPE, 0 + 0.5 * 7 * 1 + 1.5 * 7 * 2))
    assert cfg.inner_model.batches == [3]  # two parts + uncond in one call
    assert cfg.step == 1


def test_ngms_skips_uncond_on_odd_steps_below_threshold():
    cfg = make_cfg()
    c, uc = conds(1, value=1.0)
    x = torch.zeros(SHAPE)
    for step in range(2):
        out = cfg(x, torch.tensor([0.5]), uc, c, 7.0, s_min_uncond=1.0)
    assert cfg.inner_model.batches == [2, 1]
    assert torch.allclose(out, torch.ones(SHAPE))  # cond alone, scale 1
    assert cfg.p.extra_generation_params["NGMS"] == 1.0


def test_cfg_mask_blend_keeps_init_latent_where_masked():
    cfg = make_cfg()
    c, uc = conds(1)
    cfg.init_latent = torch.full(SHAPE, 5.0)
    cfg.mask = torch.zeros(SHAPE)
    cfg.mask[..., :4] = 1
    cfg.nmask = 1 - cfg.mask
    out = cfg(torch.zeros(SHAPE), torch.tensor([1.0]), uc, c, 7.0)
    assert (out[..., :4] == 5.0).all() and (out[..., 4:] == 7.0).all()


def test_inpainting_mask_fully_kept_returns_init_latent():
    init = unit_noise(1, 3)
    p = fake_p("Euler", mask=torch.ones(SHAPE), nmask=torch.zeros(SHAPE))
    c, uc = conds(1)
    out = sd_samplers.create_sampler("Euler", FakeModel()).sample_img2img(p, init, unit_noise(1, 1), c, uc)
    assert torch.allclose(out, init, atol=1e-5)


def test_image_conditioning_concatenated_only_for_inpainting_models():
    image_cond = torch.ones(1, 5, 8, 8)
    c, uc = conds(1)
    inpaint = FakeModel(inpainting=True)
    sd_samplers.create_sampler("Euler", inpaint).sample(fake_p(), unit_noise(), c, uc, image_conditioning=image_cond)
    assert inpaint.calls[0]["x"].shape[1] == 9
    plain = FakeModel()
    sd_samplers.create_sampler("Euler", plain).sample(fake_p(), unit_noise(), c, uc, image_conditioning=torch.zeros(1, 5, 1, 1))
    assert plain.calls[0]["x"].shape[1] == 4
    ddim = FakeModel(inpainting=True)
    sd_samplers.create_sampler("DDIM", ddim).sample(fake_p("DDIM"), unit_noise(), c, uc, image_conditioning=image_cond)
    assert ddim.calls[0]["x"].shape[1] == 9


def test_second_order_sampler_advances_prompt_schedule_per_model_call():
    _, _, model, sampler = run("Heun", steps=5)
    assert sampler.model_wrap_cfg.step == 9  # 4 Heun steps x 2 + final Euler step
    assert sampler.model_wrap_cfg.total_steps == 10


def test_cfg_denoiser_hook_sees_each_step():
    from modules import script_callbacks
    seen = []

    def hook(params):
        seen.append(params.x.shape[0])
    script_callbacks.on_cfg_denoiser(hook)
    try:
        run("Euler", steps=3)
    finally:
        script_callbacks.remove_callbacks_for_function(hook)
    assert seen == [2, 2, 2]


# --- progress and interruption -------------------------------------------------------------------------

def test_progress_reported_per_step():
    from modules.runtime import context
    seen = []
    unsubscribe = context.active().progress.subscribe(lambda e: seen.append((e.kind, e.step, e.steps)))
    try:
        run("Euler", steps=4)
    finally:
        unsubscribe()
    assert seen == [("step", 1, 4), ("step", 2, 4), ("step", 3, 4), ("step", 4, 4)]
    assert shared.state.current_latent is not None and shared.state.sampling_step == 4


@pytest.mark.parametrize("name", ["Euler", "DPM++ 2M", "DDIM", "UniPC", "LCM"])
def test_interrupt_returns_latest_denoised_latent(name):
    model = FakeModel()
    sampler = sd_samplers.create_sampler(name, model)
    orig = sampler.callback_state

    def callback(d):
        if d["i"] == 1:
            shared.state.interrupt()
        orig(d)
    sampler.callback_state = callback
    c, uc = conds(1)
    out = sampler.sample(fake_p(name, steps=8), unit_noise(), c, uc)
    assert out is sampler.last_latent and out.shape == SHAPE
    assert len(model.calls) <= 3


# --- every sampler, both entry points ---------------------------------------------------------------

@pytest.mark.parametrize("name", [s.name for s in sd_samplers.all_samplers])
def test_every_sampler_runs_txt2img_and_img2img(name):
    out, *_ = run(name, steps=5)
    out2, *_ = run(name, steps=5, img2img=True)
    assert out.shape == out2.shape == SHAPE and torch.isfinite(out).all() and torch.isfinite(out2).all()


def test_v_prediction_model_runs():
    out, *_ = run("Euler", model=FakeModel(parameterization="v"))
    out2, *_ = run("DDIM", model=FakeModel(parameterization="v"))
    assert torch.isfinite(out).all() and torch.isfinite(out2).all()


def test_timestep_samplers_step_counts():
    assert len(run("DDIM", steps=10)[2].calls) == 9  # A1111 runs steps - 1 DDIM updates
    assert len(run("PLMS", steps=10)[2].calls) == 10  # plus one for the improved-Euler start
    assert len(run("UniPC", steps=10)[2].calls) == 10
    with shared.opts.override({"img2img_fix_steps": True}):
        # A1111: timesteps[:t_enc] with t_enc = steps - 1, then len - 1 updates
        assert len(run("DDIM", steps=10, img2img=True, denoising_strength=0.5)[2].calls) == 8


def test_cond_and_uncond_of_different_lengths_run_separately_or_padded():
    from modules import prompt_parser as pp
    c, _ = conds(1, tokens=154)
    uc = [[pp.ScheduledPromptConditioning(1000, torch.zeros(77, 8))]]
    cfg = make_cfg()
    cfg(torch.zeros(SHAPE), torch.tensor([1.0]), uc, c, 7.0)
    assert cfg.inner_model.batches == [1, 1]
    with shared.opts.override({"pad_cond_uncond_v0": True}):
        cfg = make_cfg()
        cfg(torch.zeros(SHAPE), torch.tensor([1.0]), uc, c, 7.0)
    assert cfg.inner_model.batches == [2] and cfg.p.extra_generation_params["Pad conds v0"] is True
