"""What every sampler glue object shares: the registry record, img2img step arithmetic, noise from
`p.rng`, progress/interrupt handling and the A1111 infotext rules for eta and the churn knobs.

Kept under A1111's module name because extensions import `SamplerData` and
`InterruptedException` from here.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from modules import shared
from modules.runtime import context


class InterruptedException(BaseException):
    """Raised inside the sampling loop to stop it; `launch_sampling` turns it into the last latent."""


@dataclass(frozen=True)
class SamplerData:
    """A registry entry: A1111 display name, constructor(model) -> sampler, aliases, options."""

    name: str
    constructor: Callable[[Any], Any]
    aliases: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)

    def total_steps(self, steps: int) -> int:
        """Model calls a prompt schedule sees: doubled for second-order samplers."""
        return steps * 2 if self.options.get("second_order", False) else steps

    def api_options(self) -> dict[str, str]:
        """Options as the `/sdapi/v1/samplers` route shows them (values as strings)."""
        return {k: str(v) for k, v in self.options.items()}


def setup_img2img_steps(p: Any, steps: int | None = None) -> tuple[int, int]:
    """(schedule length, t_enc) for img2img: truncate by denoising strength, or stretch so that
    exactly `steps` run when `img2img_fix_steps` is on or steps are passed explicitly (hires)."""
    if shared.opts.img2img_fix_steps or steps is not None:
        requested = steps or p.steps
        steps = int(requested / min(p.denoising_strength, 0.999)) if p.denoising_strength > 0 else 0
        t_enc = requested - 1
    else:
        steps = p.steps
        t_enc = int(min(p.denoising_strength, 0.999) * steps)
    return steps, t_enc


def is_sampler_using_eta_noise_seed_delta(p: Any) -> bool:
    """Whether ENSD affects this job's images (infotext writes ENSD only then)."""
    from modules import sd_samplers
    config = sd_samplers.find_sampler_config(p.sampler_name)
    eta = p.eta
    if eta is None and getattr(p, "sampler", None) is not None:
        eta = p.sampler.eta
    if eta is None:
        eta = 0 if config.options.get("default_eta_is_0", False) else 1.0
    return eta != 0 and bool(config.options.get("uses_ensd", False))


def rng_noise_sampler(p: Any, x: torch.Tensor) -> Callable[[Any, Any], torch.Tensor]:
    """Per-step noise from the job's per-image generators (`p.rng.next()`), so a batch matches
    single images; falls back to `torch.randn_like` when there is no rng or the shape differs."""
    rng = getattr(p, "rng", None)

    def sample(sigma: Any, sigma_next: Any) -> torch.Tensor:
        if rng is not None:
            noise = rng.next()
            if noise.shape == x.shape:
                return noise.to(device=x.device, dtype=x.dtype)
        return torch.randn_like(x)

    return sample


def _opt_or(p: Any, name: str, default: Any = None) -> Any:
    value = getattr(p, name, None)
    return value if value is not None else getattr(shared.opts, name, default)


class Sampler:
    """Base of the glue objects `create_sampler` returns (k-diffusion and timestep families)."""

    eta_option_field = "eta_ancestral"
    eta_infotext_field = "Eta"
    eta_default = 1.0

    def __init__(self, func: Callable[..., torch.Tensor], model: Any):
        self.func = func
        self.funcname = getattr(func, "__name__", str(func))
        self.sd_model = model
        self.config: SamplerData | None = None  # set by create_sampler
        self.extra_params: list[str] = []
        self.eta: float | None = None
        self.s_min_uncond = 0.0
        self.last_latent: torch.Tensor | None = None
        self.stop_at: int | None = None
        self.p: Any = None
        self.model_wrap_cfg: Any = None
        self.sampler_extra_args: dict[str, Any] = {}
        self.total_sampling_steps = 0

    # --- progress ------------------------------------------------------------------------------
    def callback_state(self, d: dict) -> None:
        """Per-step report: progress, live latent, and the stop/interrupt check."""
        step = int(d["i"])
        ctx = context.active()
        ctx.progress.step(step, self.total_sampling_steps, d.get("denoised"))
        if (self.stop_at is not None and step > self.stop_at) or ctx.cancel.stop_now:
            raise InterruptedException

    def launch_sampling(self, steps: int, func: Callable[[], torch.Tensor]) -> torch.Tensor:
        """Run `func`; on interrupt/skip return the latest denoised latent (what was made so far)."""
        self.total_sampling_steps = steps
        self.model_wrap_cfg.total_steps = self.config.total_steps(steps) if self.config else steps
        context.active().progress.start_sampling(steps)
        try:
            return func()
        except InterruptedException:
            return self.last_latent

    def number_of_needed_noises(self, p: Any) -> int:
        return p.steps

    # --- parameters ----------------------------------------------------------------------------
    def accepts(self, name: str) -> bool:
        return name in inspect.signature(self.func).parameters

    def initialize(self, p: Any) -> dict[str, Any]:
        """Reset the CFG wrapper for `p` and return the knob kwargs for `self.func`, writing the
        infotext keys of values that differ from A1111's defaults."""
        self.p = p
        cfg = self.model_wrap_cfg
        cfg.p = p
        cfg.mask = getattr(p, "mask", None)
        cfg.nmask = getattr(p, "nmask", None)
        cfg.step = 0
        cfg.image_cfg_scale = getattr(p, "image_cfg_scale", None)
        self.eta = p.eta if getattr(p, "eta", None) is not None else getattr(shared.opts, self.eta_option_field, 0.0)
        self.s_min_uncond = _opt_or(p, "s_min_uncond", 0.0) or 0.0
        kwargs: dict[str, Any] = {}
        if self.accepts("eta"):
            if self.eta != self.eta_default:
                p.extra_generation_params[self.eta_infotext_field] = self.eta
            kwargs["eta"] = self.eta
        defaults = {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": float("inf"), "s_noise": 1.0}
        labels = {"s_churn": "Sigma churn", "s_tmin": "Sigma tmin", "s_tmax": "Sigma tmax", "s_noise": "Sigma noise"}
        for name in self.extra_params:
            if not self.accepts(name):
                continue
            value = _opt_or(p, name, defaults[name])
            if name == "s_tmax":
                value = value or float("inf")  # 0 means infinity
            if value != defaults[name]:
                kwargs[name] = value
                setattr(p, name, value)
                p.extra_generation_params[labels[name]] = value
        return kwargs

    # --- model switch (refiner) ----------------------------------------------------------------
    def switch_model(self, model: Any) -> None:
        """Continue sampling with `model` (the refiner): rebuild the denoiser adapter around it."""
        self.sd_model = model
        self.model_wrap = self.make_model_wrap(model)
        self.model_wrap_cfg.inner_model = self.model_wrap
        self.model_wrap_cfg.use_image_cond = bool(getattr(model, "is_inpainting", False))

    def make_model_wrap(self, model: Any) -> Any:
        """The denoiser adapter this sampler family puts around a model."""
        raise NotImplementedError(f"{type(self).__name__} cannot switch models")


def refiner_completed_ratio(cfg_denoiser: Any, sigma: Any) -> float:
    """How far sampling is, for the refiner switch: by model timestep (A1111's default: the
    timestep nearest to the largest sigma of the batch, as (999 - t) / 1000), or by sampling steps
    with the option `refiner_switch_by_sample_steps`."""
    if shared.opts.refiner_switch_by_sample_steps or sigma is None:
        cfg_denoiser.p.extra_generation_params["Refiner switch by sampling steps"] = True
        return cfg_denoiser.step / max(cfg_denoiser.total_steps, 1)
    if cfg_denoiser.timesteps:  # timestep samplers pass the DDPM timestep where sigma would be
        timestep = int(torch.max(sigma).item())
    else:
        sigmas = cfg_denoiser.inner_model.sigmas.to(sigma.device)
        timestep = int(torch.argmin(torch.abs(sigmas - torch.max(sigma))).item())
    return (999 - timestep) / 1000


def apply_refiner(cfg_denoiser: Any, sigma: Any = None) -> bool:
    """Switch the job to its refiner checkpoint when sampling has come far enough (A1111 name).

    Returns whether it switched; the caller then takes the new conditioning from
    `sampler.sampler_extra_args`. With hires fix, the option `hires_fix_refiner_pass` picks the
    pass ("first pass", "second pass", "both passes").
    """
    p = cfg_denoiser.p
    info = getattr(p, "refiner_checkpoint_info", None)
    if info is None or getattr(shared.sd_model, "sd_checkpoint_info", None) is info:
        return False
    switch_at = p.refiner_switch_at
    if switch_at is not None and refiner_completed_ratio(cfg_denoiser, sigma) < switch_at:
        return False
    if getattr(p, "enable_hr", False):
        which = shared.opts.hires_fix_refiner_pass
        second = bool(getattr(p, "is_hr_pass", False))
        if (which == "first pass" and second) or (which == "second pass" and not second):
            return False
        if which != "second pass":
            p.extra_generation_params["Hires refiner"] = which
    from modules import devices, sd_models
    model = sd_models.reload_model_weights(info=info)
    devices.torch_gc()
    p.extra_generation_params["Refiner"] = info.short_title  # after loading, which hashes a new file
    p.extra_generation_params["Refiner switch at"] = switch_at
    if getattr(p, "is_hr_pass", False):
        p.calculate_hr_conds()
        cond, uncond = p.hr_c, p.hr_uc
    else:
        p.setup_conds()
        cond, uncond = p.get_conds()
    sampler = cfg_denoiser.sampler
    sampler.switch_model(model)
    sampler.sampler_extra_args["cond"] = cond
    sampler.sampler_extra_args["uncond"] = uncond
    return True



# --- A1111's latent → picture helpers (live previews; extensions showing previews call them) -----------
approximation_indexes = {"Full": 0, "Approx NN": 1, "Approx cheap": 2, "TAESD": 3}
"""A1111's live-preview methods by index. "Approx NN" needs a downloaded network Serena does not
ship, so it is served by "Approx cheap"; "TAESD" is used only when its decoder weights exist."""

# Linear latent → RGB factors (4 latent channels × RGB), A1111's "Approx cheap" for SD1/SD2 and SDXL.
CHEAP_APPROX_SD1 = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264), (-0.184, -0.271, -0.473))
CHEAP_APPROX_SDXL = ((0.3448, 0.4168, 0.4395), (-0.1953, -0.0290, 0.0250), (0.1074, 0.0886, -0.0163),
                     (-0.3730, -0.2499, -0.2088))


def _is_sdxl(model: Any = None) -> bool:
    model = shared.sd_model if model is None else model
    return bool(getattr(model, "is_sdxl", False))


def cheap_approximation(sample: torch.Tensor, sdxl: bool = False) -> torch.Tensor:
    """Latent(s) (…×4×H×W) → RGB in about [-1, 1] (…×3×H×W) by a fixed linear map, no VAE."""
    coefs = torch.tensor(CHEAP_APPROX_SDXL if sdxl else CHEAP_APPROX_SD1, dtype=torch.float32, device=sample.device)
    return torch.einsum("...lhw,lr->...rhw", sample.float(), coefs)


def taesd_decoder_path(sdxl: bool = False) -> str:
    """Where A1111 keeps the TAESD decoder weights: `<models>/VAE-taesd/taesd[xl]_decoder.pth`."""
    import os
    from modules import paths
    return os.path.join(paths.models_path, "VAE-taesd", "taesdxl_decoder.pth" if sdxl else "taesd_decoder.pth")


class _TaesdClamp(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class _TaesdBlock(torch.nn.Module):
    """Three 3×3 convolutions with ReLUs between them, plus a skip path, then ReLU."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        c = torch.nn.Conv2d
        self.conv = torch.nn.Sequential(c(n_in, n_out, 3, padding=1), torch.nn.ReLU(), c(n_out, n_out, 3, padding=1),
                                        torch.nn.ReLU(), c(n_out, n_out, 3, padding=1))
        self.skip = c(n_in, n_out, 1, bias=False) if n_in != n_out else torch.nn.Identity()
        self.fuse = torch.nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(self.conv(x) + self.skip(x))


def taesd_decoder_network(latent_channels: int = 4) -> torch.nn.Sequential:
    """The TAESD decoder's layer layout (its weight files are state dicts of this Sequential):
    latents → RGB in [0, 1] at 8× the latent size."""
    layers: list[torch.nn.Module] = [_TaesdClamp(), torch.nn.Conv2d(latent_channels, 64, 3, padding=1), torch.nn.ReLU()]
    for _ in range(3):
        layers += [_TaesdBlock(64, 64), _TaesdBlock(64, 64), _TaesdBlock(64, 64), torch.nn.Upsample(scale_factor=2),
                   torch.nn.Conv2d(64, 64, 3, padding=1, bias=False)]
    layers += [_TaesdBlock(64, 64), torch.nn.Conv2d(64, 3, 3, padding=1)]
    return torch.nn.Sequential(*layers)


_taesd_cache: dict[str, torch.nn.Module] = {}


def taesd_decoder(sdxl: bool = False) -> torch.nn.Module | None:
    """The TAESD decoder loaded from its weight file, or None when the file is not there."""
    import os
    path = taesd_decoder_path(sdxl)
    if path in _taesd_cache:
        return _taesd_cache[path]
    if not os.path.isfile(path):
        return None
    network = taesd_decoder_network()
    network.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    network.eval().requires_grad_(False)
    _taesd_cache[path] = network
    return network


def preview_method(approximation: int | None = None) -> str:
    """The live-preview method to use: `approximation` (an index) or the option `show_progress_type`,
    with "Approx NN" → "Approx cheap" and "TAESD" → "Approx cheap" when its weights are missing."""
    method = _requested_method(approximation)
    if method not in approximation_indexes or method == "Approx NN":
        return "Approx cheap"
    if method == "TAESD" and not __import__("os").path.isfile(taesd_decoder_path(_is_sdxl())):
        return "Approx cheap"
    return method


def _requested_method(approximation: int | None) -> str:
    """The method `approximation` (an index of `approximation_indexes`) names, else the option's."""
    names = {v: k for k, v in approximation_indexes.items()}
    method = names.get(approximation) if approximation is not None else None
    return method or getattr(shared.opts, "show_progress_type", "Full")


def samples_to_images_tensor(samples: torch.Tensor, approximation: int | None = None) -> torch.Tensor:
    """Latents (B×C×H×W) → images in [0, 1] (B×3×h×w) with the chosen preview method."""
    method = preview_method(approximation)
    if method == "TAESD":
        network = taesd_decoder(_is_sdxl())
        if network is not None:
            weight = next(network.parameters())
            return network(samples.to(weight.device, weight.dtype)).float().clamp(0.0, 1.0)
    if method == "Approx cheap" and samples.shape[1] == 4:  # other latent layouts: decode with the VAE
        images = ((cheap_approximation(samples, _is_sdxl()) + 1.0) / 2.0).clamp(0.0, 1.0)
        if _requested_method(approximation) == "Approx NN":
            # standing in for A1111's network, whose images are full size: callers size by them
            images = torch.nn.functional.interpolate(images, scale_factor=8, mode="bilinear", align_corners=False)
        return images
    from modules import processing
    decoded = processing.decode_first_stage(shared.sd_model, samples)
    return torch.clamp((decoded.float() + 1.0) / 2.0, 0.0, 1.0)


def _to_pil(image: torch.Tensor) -> Any:
    from PIL import Image
    array = image.detach().float().cpu().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array)


def single_sample_to_image(sample: torch.Tensor, approximation: int | None = None) -> Any:
    """One latent (C×H×W) → RGB PIL image with the chosen preview method (default: the option)."""
    return _to_pil(samples_to_images_tensor(sample.unsqueeze(0), approximation)[0])


def sample_to_image(samples: torch.Tensor, index: int = 0, approximation: int | None = None) -> Any:
    """Latent `index` of a batch → RGB PIL image."""
    return single_sample_to_image(samples[index], approximation)


def samples_to_image_grid(samples: torch.Tensor, approximation: int | None = None) -> Any:
    """Every latent of a batch, decoded, as one grid image."""
    from modules import images
    decoded = samples_to_images_tensor(samples, approximation)
    return images.image_grid([_to_pil(image) for image in decoded])


def images_tensor_to_samples(image: torch.Tensor, approximation: int | None = None, model: Any = None) -> torch.Tensor:
    """Images in [0, 1] (B×3×H×W) → scaled latents of `model` (default: the current model)."""
    from modules import processing
    return processing.images_tensor_to_samples(image, model if model is not None else shared.sd_model)


def store_latent(decoded: torch.Tensor) -> None:
    """Make `decoded` (the latest latent) the state's current latent, as A1111's samplers do."""
    context.active().progress.current_latent = decoded
