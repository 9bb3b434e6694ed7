"""Sigma schedules (values, lengths, end points) and the scheduler registry of spec §6."""
from __future__ import annotations

import math

import pytest
import torch

from modules import errors, sd_schedulers
from modules.samplers import schedules
from modules.samplers.denoisers import DiscreteSchedule, EpsDenoiser
from test_samplers_fakes import FakeModel, sd_alphas_cumprod

SIGMA_MIN, SIGMA_MAX = 0.0291675, 14.614642


@pytest.fixture(scope="module")
def schedule() -> DiscreteSchedule:
    return DiscreteSchedule(sd_alphas_cumprod())


# --- registry ----------------------------------------------------------------------------------------

def test_registry_names_labels_and_flags_in_a1111_order():
    got = [(s.name, s.label, s.default_rho, s.need_inner_model) for s in sd_schedulers.schedulers]
    assert got == [
        ("automatic", "Automatic", -1, False), ("uniform", "Uniform", -1, True), ("karras", "Karras", 7.0, False),
        ("exponential", "Exponential", -1, False), ("polyexponential", "Polyexponential", 1.0, False),
        ("sgm_uniform", "SGM Uniform", -1, True), ("kl_optimal", "KL Optimal", -1, False),
        ("align_your_steps", "Align Your Steps", -1, False), ("simple", "Simple", -1, True),
        ("normal", "Normal", -1, True), ("ddim", "DDIM", -1, True), ("beta", "Beta", -1, True),
    ]
    assert sd_schedulers.schedulers[5].aliases == ("SGMUniform",)
    assert sd_schedulers.schedulers_map["karras"] is sd_schedulers.schedulers_map["Karras"]


@pytest.mark.parametrize("spelling,name", [("Karras", "karras"), ("karras", "karras"), ("KARRAS", "karras"),
                                           ("SGMUniform", "sgm_uniform"), ("sgm uniform", "sgm_uniform"),
                                           (None, "automatic"), ("", "automatic"), ("Align Your Steps", "align_your_steps")])
def test_find_scheduler_accepts_labels_names_aliases_any_case(spelling, name):
    assert sd_schedulers.find_scheduler(spelling).name == name


def test_unknown_scheduler_raises_listing_valid_labels():
    with pytest.raises(errors.UnknownScheduler) as e:
        sd_schedulers.find_scheduler("Karass")
    assert e.value.field == "scheduler"
    assert "'Karass'" in str(e.value) and "Karras" in str(e.value) and "Beta" in str(e.value)


def test_every_scheduler_function_gives_n_sigmas_then_zero_descending():
    d = EpsDenoiser(FakeModel())
    for s in sd_schedulers.schedulers[1:]:
        kw = {"inner_model": d} if s.need_inner_model else {}
        sig = s.function(n=10, sigma_min=d.sigmas[0].item(), sigma_max=d.sigmas[-1].item(), device="cpu", **kw)
        assert sig.shape == (11,), s.name
        assert bool((sig[:-1] >= sig[1:]).all()), s.name
        if s.name != "kl_optimal":
            assert sig[-1] == 0, s.name


# --- formulas ----------------------------------------------------------------------------------------

def test_karras_formula_and_end_points():
    sig = schedules.karras(5, 0.1, 10.0, rho=7.0)
    ramp = torch.linspace(0, 1, 5)
    expected = (10.0 ** (1 / 7) + ramp * (0.1 ** (1 / 7) - 10.0 ** (1 / 7))) ** 7
    assert torch.allclose(sig[:-1], expected)
    assert sig[0].item() == pytest.approx(10.0, rel=1e-6) and sig[-2].item() == pytest.approx(0.1, rel=1e-5)
    assert sig[-1] == 0 and len(sig) == 6


def test_exponential_is_log_linear_and_polyexponential_rho_1_equals_it():
    sig = schedules.exponential(4, 0.1, 10.0)
    assert torch.allclose(sig[:-1].log(), torch.linspace(math.log(10.0), math.log(0.1), 4), atol=1e-6)
    assert torch.allclose(schedules.polyexponential(4, 0.1, 10.0, rho=1.0), sig, atol=1e-6)
    assert not torch.allclose(schedules.polyexponential(4, 0.1, 10.0, rho=2.0), sig)


def test_kl_optimal_is_tangent_of_linear_arctan_and_ends_at_sigma_min():
    sig = schedules.kl_optimal(4, 0.1, 10.0)
    expected = torch.tan(torch.linspace(math.atan(10.0), math.atan(0.1), 5))
    assert torch.allclose(sig, expected, atol=1e-6)


def test_align_your_steps_table_at_10_steps_and_interpolated_otherwise():
    assert schedules.align_your_steps(11)[:-1].tolist() == pytest.approx(list(schedules.AYS_SD15), rel=1e-6)
    assert schedules.align_your_steps(11, is_sdxl=True)[:-1].tolist() == pytest.approx(list(schedules.AYS_SDXL), rel=1e-6)
    sig = schedules.align_your_steps(21)
    assert len(sig) == 22 and sig[-1] == 0
    assert sig[0].item() == pytest.approx(14.615, rel=1e-6) and sig[-2].item() == pytest.approx(0.029, rel=1e-6)
    assert sig[2].item() == pytest.approx(6.475, rel=1e-6)  # every other point is a table entry
    assert sig[1].item() == pytest.approx(math.sqrt(14.615 * 6.475), rel=1e-6)  # log-linear midpoint


def test_beta_schedule_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    sig = schedules.beta(5, 0.1, 10.0, 0.6, 0.6)
    qs = [stats.beta.ppf(1 - k / 4, 0.6, 0.6) for k in range(5)]
    assert sig[:-1].tolist() == pytest.approx([0.1 + q * 9.9 for q in qs], rel=1e-6)
    assert sig[0].item() == pytest.approx(10.0) and sig[4].item() == pytest.approx(0.1)


# --- schedules over the model's discrete sigmas ------------------------------------------------------

def test_discrete_schedule_range_and_t_round_trip(schedule):
    assert schedule.sigma_min.item() == pytest.approx(SIGMA_MIN, rel=1e-5)
    assert schedule.sigma_max.item() == pytest.approx(SIGMA_MAX, rel=1e-6)
    t = torch.tensor([0.0, 10.5, 500.25, 999.0])
    assert torch.allclose(schedule.sigma_to_t(schedule.t_to_sigma(t)), t, atol=1e-3)
    assert schedule.sigma_to_t(schedule.sigmas[37:38], quantize=True).item() == 37


def test_uniform_is_model_sigmas_evenly_in_t(schedule):
    sig = schedules.uniform(5, schedule)
    assert torch.allclose(sig[:-1], schedule.t_to_sigma(torch.linspace(999, 0, 5)))
    assert sig[0].item() == pytest.approx(SIGMA_MAX, rel=1e-6) and sig[-2].item() == pytest.approx(SIGMA_MIN, rel=1e-5)


def test_normal_includes_end_and_sgm_uniform_drops_it(schedule):
    normal = schedules.normal(4, SIGMA_MIN, SIGMA_MAX, schedule)
    sgm = schedules.sgm_uniform(4, SIGMA_MIN, SIGMA_MAX, schedule)
    assert torch.allclose(normal[:-1], schedule.t_to_sigma(torch.linspace(999, 0, 4)), rtol=1e-4)
    assert torch.allclose(sgm[:-1], schedule.t_to_sigma(torch.linspace(999, 0, 5)[:-1]), rtol=1e-4)
    assert normal[-2].item() == pytest.approx(SIGMA_MIN, rel=1e-3) and sgm[-2] > normal[-2]


def test_simple_and_ddim_pick_model_sigmas(schedule):
    simple = schedules.simple(4, schedule)
    assert simple[:-1].tolist() == pytest.approx([schedule.sigmas[i].item() for i in (999, 749, 499, 249)])
    ddim = schedules.ddim_uniform(4, schedule)
    assert ddim[:-1].tolist() == pytest.approx([schedule.sigmas[i].item() for i in (751, 501, 251, 1)])
