"""The sampler registry: A1111 display names, aliases and options, and name resolution.

Unlike A1111, which silently falls back to the first sampler / Automatic, an unknown sampler or
scheduler raises `errors.UnknownSampler` / `errors.UnknownScheduler` listing the valid names.
"""
from __future__ import annotations

from typing import Any

from modules import errors, sd_samplers_kdiffusion, sd_samplers_timesteps, sd_schedulers
from modules.sd_samplers_common import SamplerData, sample_to_image, samples_to_image_grid  # noqa: F401 (A1111 re-exports)

all_samplers: list[SamplerData] = [
    *sd_samplers_kdiffusion.samplers_data_k_diffusion,
    *sd_samplers_timesteps.samplers_data_timesteps,
    *sd_samplers_kdiffusion.samplers_data_lcm,
]
all_samplers_map: dict[str, SamplerData] = {x.name: x for x in all_samplers}

# A1111 names kept for extensions; Serena hides nothing, so all three lists are the same.
samplers: list[SamplerData] = all_samplers
samplers_for_img2img: list[SamplerData] = all_samplers
samplers_map: dict[str, str] = {}
for _s in all_samplers:
    samplers_map[_s.name.lower()] = _s.name
    for _alias in _s.aliases:
        samplers_map[_alias.lower()] = _s.name


def set_samplers() -> None:
    """Rebuild the name maps from `all_samplers` (A1111 name; extensions call it after appending
    their own `SamplerData` to `all_samplers`). The lists and maps are updated in place."""
    all_samplers_map.clear()
    all_samplers_map.update({x.name: x for x in all_samplers})
    samplers_map.clear()
    for data in all_samplers:
        samplers_map[data.name.lower()] = data.name
        for alias in data.aliases:
            samplers_map[alias.lower()] = data.name


def _unknown_sampler(name: Any) -> errors.UnknownSampler:
    valid = ", ".join(s.name for s in all_samplers)
    return errors.UnknownSampler(f"unknown sampler {name!r}; valid samplers: {valid}", field="sampler_name")


def find_sampler_config(name: str | None) -> SamplerData:
    """The registry entry for a display name or alias (case-insensitive); None means the first sampler.

    Raises:
        errors.UnknownSampler: nothing matches; the message lists the valid names.
    """
    if name is None:
        return all_samplers[0]
    if name in all_samplers_map:
        return all_samplers_map[name]
    canonical = samplers_map.get(str(name).strip().lower())
    if canonical is None:
        raise _unknown_sampler(name)
    return all_samplers_map[canonical]


def create_sampler(name: str | None, model: Any) -> Any:
    """A fresh sampler object for `model` (see `KDiffusionSampler` / `CompVisSampler`)."""
    config = find_sampler_config(name)
    if getattr(model, "is_sdxl", False) and config.options.get("no_sdxl", False):
        raise errors.InvalidParameter(f"sampler {config.name!r} does not support SDXL", field="sampler_name")
    sampler = config.constructor(model)
    sampler.config = config
    return sampler


def get_sampler_and_scheduler(sampler_name: str | None, scheduler_name: str | None, *,
                              convert_automatic: bool = True) -> tuple[str, str]:
    """Resolve a request's sampler and scheduler to (sampler display name, scheduler label).

    A sampler name ending in " <scheduler label/name/alias>" (e.g. "DPM++ 2M Karras") has the
    suffix split off as the scheduler. A scheduler equal to the sampler's default is reported as
    "Automatic" unless `convert_automatic` is False.

    Raises:
        errors.UnknownSampler / errors.UnknownScheduler: with the valid names in the message.
    """
    scheduler = sd_schedulers.find_scheduler(scheduler_name)
    name = sampler_name or all_samplers[0].name
    if name not in all_samplers_map and name.strip().lower() not in samplers_map:
        name, scheduler = _split_scheduler_suffix(name, scheduler)
    config = find_sampler_config(name)
    if convert_automatic and config.options.get("scheduler") == scheduler.name:
        scheduler = sd_schedulers.schedulers[0]
    return config.name, scheduler.label


def _split_scheduler_suffix(name: str, scheduler: sd_schedulers.Scheduler) -> tuple[str, sd_schedulers.Scheduler]:
    """Split off the longest scheduler spelling that ends `name` ("SGM Uniform" before "Uniform")."""
    lowered = name.lower()
    matches = [(option, candidate) for candidate in sd_schedulers.schedulers
               for option in sd_schedulers.scheduler_names(candidate) if lowered.endswith(" " + option.lower())]
    if not matches:
        return name, scheduler
    option, candidate = max(matches, key=lambda m: len(m[0]))
    return name[:-(len(option) + 1)], candidate


def get_hr_sampler_and_scheduler(p: Any) -> tuple[str, str]:
    """The hires pass's sampler and scheduler ("Use same ..." falls back to the first pass's)."""
    hr_sampler = p.hr_sampler_name if p.hr_sampler_name and p.hr_sampler_name != "Use same sampler" else p.sampler_name
    hr_scheduler = p.hr_scheduler if p.hr_scheduler and p.hr_scheduler != "Use same scheduler" else p.scheduler
    return get_sampler_and_scheduler(hr_sampler, hr_scheduler)


def get_sampler_from_infotext(d: dict) -> str:
    return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[0]


def get_scheduler_from_infotext(d: dict) -> str:
    return get_sampler_and_scheduler(d.get("Sampler"), d.get("Schedule type"))[1]


def visible_sampler_names() -> list[str]:
    return [s.name for s in all_samplers]


def sampler_api_items() -> list[dict[str, Any]]:
    """The `/sdapi/v1/samplers` payload: name, aliases, options with string values, in A1111 order."""
    return [{"name": s.name, "aliases": list(s.aliases), "options": s.api_options()} for s in all_samplers]
