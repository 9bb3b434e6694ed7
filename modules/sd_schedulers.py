"""The scheduler registry of A1111's "Schedule type" dropdown: name, label, sigma function, flags.

Each function has A1111's keyword signature `(n, sigma_min, sigma_max, [rho], [inner_model], device)`
(`inner_model` is a denoiser from `modules.samplers.denoisers` when `need_inner_model`), and
returns n sigmas then 0. The maths lives in `modules.samplers.schedules`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from modules import errors, shared
from modules.samplers import schedules


@dataclass(frozen=True)
class Scheduler:
    name: str
    label: str
    function: Callable[..., torch.Tensor] | None
    default_rho: float = -1
    need_inner_model: bool = False
    aliases: tuple[str, ...] | None = None


def uniform(n: int, sigma_min: float, sigma_max: float, inner_model: Any, device="cpu") -> torch.Tensor:
    return schedules.uniform(n, inner_model.schedule, device=device)


def sgm_uniform(n: int, sigma_min: float, sigma_max: float, inner_model: Any, device="cpu") -> torch.Tensor:
    return schedules.sgm_uniform(n, sigma_min, sigma_max, inner_model.schedule, device=device)


def get_align_your_steps_sigmas(n: int, sigma_min: float, sigma_max: float, device="cpu") -> torch.Tensor:
    model = getattr(shared, "sd_model", None) if _has_model() else None
    return schedules.align_your_steps(n, sigma_min, sigma_max, is_sdxl=bool(getattr(model, "is_sdxl", False)),
                                      device=device)


def _has_model() -> bool:
    try:
        return shared.sd_model is not None
    except Exception:  # no checkpoint registry yet: treat as SD1.5
        return False


def kl_optimal(n: int, sigma_min: float, sigma_max: float, device="cpu") -> torch.Tensor:
    return schedules.kl_optimal(n, sigma_min, sigma_max, device=device)


def simple_scheduler(n: int, sigma_min: float, sigma_max: float, inner_model: Any, device="cpu") -> torch.Tensor:
    return schedules.simple(n, inner_model.schedule, device=device)


def normal_scheduler(n: int, sigma_min: float, sigma_max: float, inner_model: Any, device="cpu",
                     sgm: bool = False) -> torch.Tensor:
    return schedules.normal(n, sigma_min, sigma_max, inner_model.schedule, sgm=sgm, device=device)


def ddim_scheduler(n: int, sigma_min: float, sigma_max: float, inner_model: Any, device="cpu") -> torch.Tensor:
    return schedules.ddim_uniform(n, inner_model.schedule, device=device)


def beta_scheduler(n: int, sigma_min: float, sigma_max: float, inner_model: Any, device="cpu") -> torch.Tensor:
    return schedules.beta(n, sigma_min, sigma_max, shared.opts.beta_dist_alpha, shared.opts.beta_dist_beta,
                          device=device)


schedulers: list[Scheduler] = [
    Scheduler("automatic", "Automatic", None),
    Scheduler("uniform", "Uniform", uniform, need_inner_model=True),
    Scheduler("karras", "Karras", schedules.karras, default_rho=7.0),
    Scheduler("exponential", "Exponential", schedules.exponential),
    Scheduler("polyexponential", "Polyexponential", schedules.polyexponential, default_rho=1.0),
    Scheduler("sgm_uniform", "SGM Uniform", sgm_uniform, need_inner_model=True, aliases=("SGMUniform",)),
    Scheduler("kl_optimal", "KL Optimal", kl_optimal),
    Scheduler("align_your_steps", "Align Your Steps", get_align_your_steps_sigmas),
    Scheduler("simple", "Simple", simple_scheduler, need_inner_model=True),
    Scheduler("normal", "Normal", normal_scheduler, need_inner_model=True),
    Scheduler("ddim", "DDIM", ddim_scheduler, need_inner_model=True),
    Scheduler("beta", "Beta", beta_scheduler, need_inner_model=True),
]

schedulers_map: dict[str, Scheduler] = {**{s.name: s for s in schedulers}, **{s.label: s for s in schedulers}}


def scheduler_names(s: Scheduler) -> list[str]:
    """Every spelling that selects `s`: label, name, aliases."""
    return [s.label, s.name, *(s.aliases or ())]


def find_scheduler(name: str | None) -> Scheduler:
    """The scheduler with this label, name or alias (case-insensitive); None or "" is Automatic.

    Raises:
        errors.UnknownScheduler: nothing matches; the message lists the valid labels.
    """
    if name is None or name == "":
        return schedulers[0]
    if name in schedulers_map:
        return schedulers_map[name]
    wanted = name.strip().lower()
    for s in schedulers:
        if wanted in (x.lower() for x in scheduler_names(s)):
            return s
    valid = ", ".join(s.label for s in schedulers)
    raise errors.UnknownScheduler(f"unknown scheduler {name!r}; valid schedulers: {valid}", field="scheduler")
