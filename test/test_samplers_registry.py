"""The sampler registry: A1111 names, order, aliases, options, and name resolution (spec §6)."""
from __future__ import annotations

import pytest

from modules import errors, sd_samplers
from modules.sd_samplers_kdiffusion import KDiffusionSampler
from modules.sd_samplers_timesteps import CompVisSampler
from test_samplers_fakes import FakeModel

ORDER = ["DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE", "Euler a",
         "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart", "DDIM", "DDIM CFG++",
         "PLMS", "UniPC", "LCM"]


def test_samplers_listed_in_a1111_order():
    assert [s.name for s in sd_samplers.all_samplers] == ORDER
    assert [s.name for s in sd_samplers.samplers_for_img2img] == ORDER


def test_api_items_have_aliases_and_string_options():
    items = {i["name"]: i for i in sd_samplers.sampler_api_items()}
    assert items["DPM++ SDE"] == {"name": "DPM++ SDE", "aliases": ["k_dpmpp_sde"],
                                  "options": {"scheduler": "karras", "second_order": "True", "brownian_noise": "True"}}
    assert items["Euler a"]["aliases"] == ["k_euler_a", "k_euler_ancestral"]
    assert items["DPM++ 2M SDE Heun"]["options"]["solver_type"] == "heun"
    assert items["DPM++ 3M SDE"]["options"]["discard_next_to_last_sigma"] == "True"
    assert items["Euler"]["options"] == {} and items["LCM"]["aliases"] == ["k_lcm"]


@pytest.mark.parametrize("name,expected", [("Euler a", "Euler a"), ("k_euler_a", "Euler a"), ("K_EULER", "Euler"),
                                           ("euler a", "Euler a"), ("ddim_cfgpp", "DDIM CFG++"), ("k_dpm_ad", "DPM adaptive"),
                                           (None, "DPM++ 2M")])
def test_find_sampler_config_by_name_or_alias(name, expected):
    assert sd_samplers.find_sampler_config(name).name == expected


def test_unknown_sampler_raises_listing_valid_names():
    with pytest.raises(errors.UnknownSampler) as e:
        sd_samplers.find_sampler_config("Eulr")
    assert e.value.field == "sampler_name" and e.value.status_code == 422
    assert "'Eulr'" in str(e.value) and "DPM++ 2M" in str(e.value) and "LCM" in str(e.value)


@pytest.mark.parametrize("sampler,scheduler,expected", [
    ("DPM++ 2M Karras", None, ("DPM++ 2M", "Automatic")),  # Karras is its default (spec §6 rule 3)
    ("DPM++ 2M", "Exponential", ("DPM++ 2M", "Exponential")),
    ("Euler a Karras", None, ("Euler a", "Karras")),
    ("Euler sgm_uniform", "Automatic", ("Euler", "SGM Uniform")),
    ("Euler SGMUniform", None, ("Euler", "SGM Uniform")),
    ("Euler SGM Uniform", None, ("Euler", "SGM Uniform")),  # the label, not "Uniform" after "Euler SGM"
    ("dpm++ 2m sgm uniform", None, ("DPM++ 2M", "SGM Uniform")),
    ("Euler a Uniform", None, ("Euler a", "Uniform")),
    ("DPM++ 2M SDE Heun", None, ("DPM++ 2M SDE Heun", "Automatic")),
    ("DPM++ 2M SDE Heun Karras", None, ("DPM++ 2M SDE Heun", "Karras")),
    ("k_lms", "karras", ("LMS", "Karras")),
    (None, None, ("DPM++ 2M", "Automatic")),
    ("DDIM", "DDIM", ("DDIM", "DDIM")),
])
def test_get_sampler_and_scheduler(sampler, scheduler, expected):
    assert sd_samplers.get_sampler_and_scheduler(sampler, scheduler) == expected


def test_get_sampler_and_scheduler_without_automatic_conversion_keeps_label():
    assert sd_samplers.get_sampler_and_scheduler("DPM++ 2M Karras", None, convert_automatic=False) == ("DPM++ 2M", "Karras")


def test_get_sampler_and_scheduler_errors():
    with pytest.raises(errors.UnknownSampler):
        sd_samplers.get_sampler_and_scheduler("Nope Karras", None)
    with pytest.raises(errors.UnknownScheduler) as e:
        sd_samplers.get_sampler_and_scheduler("Euler", "Karass")
    assert e.value.field == "scheduler"


def test_total_steps_doubles_for_second_order():
    cfg = sd_samplers.find_sampler_config
    assert cfg("Heun").total_steps(10) == 20 and cfg("DPM++ SDE").total_steps(10) == 20
    assert cfg("Euler").total_steps(10) == 10 and cfg("DPM2").total_steps(7) == 14


def test_create_sampler_families_and_config():
    model = FakeModel()
    for s in sd_samplers.all_samplers:
        sampler = sd_samplers.create_sampler(s.name, model)
        assert sampler.config is s
        assert isinstance(sampler, CompVisSampler if s.name in ("DDIM", "DDIM CFG++", "PLMS", "UniPC") else KDiffusionSampler)
    with pytest.raises(errors.UnknownSampler):
        sd_samplers.create_sampler("nope", model)
