"""Device and dtype choice: the one place that decides where the model runs and in which precision.

A1111 extensions read `devices.device` (and the per-task `device_interrogate`, `device_gfpgan`,
`device_esrgan`, `device_codeformer`), `devices.dtype`, `dtype_vae`, `dtype_unet`, `dtype_inference`
and `devices.cpu`, and call `autocast()`, `without_autocast()`, `test_for_nans()`, `randn()`,
`torch_gc()`; those names are kept, backed by the choice made here (noise by `modules.rng`).
At import they hold the safe CPU / float32 defaults and nothing is probed; the composition root
calls :func:`setup` with the parsed flags, which fills them from :func:`choose` (a pure function
of the flags and of what the machine offers, so tests can ask it about CUDA without having a GPU).
"""
from __future__ import annotations

import contextlib
import functools
import gc
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from modules import errors

cpu: torch.device = torch.device("cpu")

# Filled by setup(); the defaults are what a CPU-only machine gets.
device: torch.device = cpu
device_interrogate: torch.device = cpu
device_gfpgan: torch.device = cpu
device_esrgan: torch.device = cpu
device_codeformer: torch.device = cpu
dtype: torch.dtype = torch.float32
dtype_vae: torch.dtype = torch.float32
dtype_unet: torch.dtype = torch.float32
dtype_inference: torch.dtype = torch.float32
unet_needs_upcast = False
"""A1111 sets this with --upcast-sampling on a half-precision UNet; Serena samples in the model's
dtype, so it stays False and `cond_cast_unet` / `cond_cast_float` return their input."""
fp8 = False
nv_rng = None

TASK_DEVICES = {"device_interrogate": "interrogate", "device_gfpgan": "gfpgan", "device_esrgan": "esrgan",
                "device_codeformer": "codeformer"}
"""The per-task device names A1111 keeps, and the `--use-cpu` task each follows."""


@dataclass(frozen=True)
class DeviceConfig:
    """Where the Stable Diffusion model runs and in which dtypes."""

    device: torch.device
    dtype: torch.dtype
    dtype_vae: torch.dtype

    @property
    def dtype_unet(self) -> torch.dtype:
        return self.dtype


def _flag(cmd_opts: Any, name: str, default: Any) -> Any:
    return getattr(cmd_opts, name, default) if cmd_opts is not None else default


def accelerator_name(cmd_opts: Any = None, cuda_available: bool | None = None,
                     mps_available: bool | None = None) -> str:
    """Name of the best accelerator the machine offers ("cuda", "cuda:N", "mps") or "cpu"."""
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if cuda_available:
        device_id = _flag(cmd_opts, "device_id", None)
        return f"cuda:{device_id}" if device_id not in (None, "") else "cuda"
    if mps_available is None:
        mps = getattr(torch.backends, "mps", None)
        mps_available = bool(mps is not None and mps.is_available())
    return "mps" if mps_available else "cpu"


def choose(cmd_opts: Any = None, task: str = "sd", cuda_available: bool | None = None,
           mps_available: bool | None = None) -> DeviceConfig:
    """Pick device and dtypes for `task` from the A1111 flags.

    Rules: `--use-cpu all` or `--use-cpu <task>` → CPU; CPU always computes in float32;
    `--no-half` or `--precision full` → float32 on any device; otherwise an accelerator runs in
    float16, and the VAE too unless `--no-half-vae`.
    """
    use_cpu = [str(x).lower() for x in (_flag(cmd_opts, "use_cpu", []) or [])]
    if "all" in use_cpu or task.lower() in use_cpu:
        name = "cpu"
    else:
        name = accelerator_name(cmd_opts, cuda_available, mps_available)
    dev = torch.device(name)
    full = bool(_flag(cmd_opts, "no_half", False)) or _flag(cmd_opts, "precision", "autocast") == "full"
    if dev.type == "cpu" or full:
        return DeviceConfig(dev, torch.float32, torch.float32)
    vae = torch.float32 if _flag(cmd_opts, "no_half_vae", False) else torch.float16
    return DeviceConfig(dev, torch.float16, vae)


def setup(cmd_opts: Any) -> DeviceConfig:
    """Fill the module-level A1111 names from the flags (the composition root calls this once)."""
    global device, dtype, dtype_vae, dtype_unet, dtype_inference
    config = choose(cmd_opts)
    device, dtype, dtype_vae, dtype_unet = config.device, config.dtype, config.dtype_vae, config.dtype_unet
    dtype_inference = dtype
    for name, task in TASK_DEVICES.items():
        globals()[name] = choose(cmd_opts, task=task).device
    return config


def current() -> DeviceConfig:
    """The configuration `setup` chose (CPU / float32 before it runs)."""
    return DeviceConfig(device, dtype, dtype_vae)


def has_mps() -> bool:
    """Whether torch can use Apple's Metal device here."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def has_xpu() -> bool:
    """A1111 name (Intel XPU with --use-ipex); Serena does not use XPUs."""
    return False


def get_cuda_device_string() -> str:
    """A1111 name: "cuda", or "cuda:N" with --device-id N."""
    from modules import shared
    device_id = getattr(shared.cmd_opts, "device_id", None)
    return f"cuda:{device_id}" if device_id not in (None, "") else "cuda"


def get_optimal_device_name() -> str:
    """A1111 name: the accelerator's name, or "cpu"."""
    return accelerator_name()


def get_optimal_device() -> torch.device:
    """A1111 name: the accelerator, or the CPU."""
    return torch.device(get_optimal_device_name())


def get_device_for(task: str) -> torch.device:
    """A1111 name: the device for `task` ("sd", "interrogate", …) honouring `--use-cpu`."""
    from modules import shared
    return choose(shared.cmd_opts, task=task).device


def torch_gc() -> None:
    """Release cached accelerator memory after a model is dropped."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.ipc_collect()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        mps.empty_cache()


# --- casting and autocast (A1111 names) ----------------------------------------------------------------
def cond_cast_unet(tensor: Any) -> Any:
    """`tensor` in the UNet's dtype when the UNet is upcast (never in Serena: see `unet_needs_upcast`)."""
    return tensor.to(dtype_unet) if unet_needs_upcast else tensor


def cond_cast_float(tensor: Any) -> Any:
    """`tensor` as float32 when the UNet is upcast (never in Serena), else unchanged."""
    return tensor.float() if unet_needs_upcast else tensor


def autocast(disable: bool = False) -> contextlib.AbstractContextManager:
    """A1111's context for model calls: CUDA autocast to the model's half dtype when the model runs
    in half precision on CUDA; a do-nothing context when `disable`, in float32, or on other devices
    (Serena's models are already in their dtype there)."""
    if disable or dtype == torch.float32 or dtype_inference == torch.float32 or device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def without_autocast(disable: bool = False) -> contextlib.AbstractContextManager:
    """Switch CUDA autocast off inside an autocast region (do nothing when none is active)."""
    if disable or not torch.is_autocast_enabled():
        return contextlib.nullcontext()
    return torch.autocast("cuda", enabled=False)


# --- NaN check (A1111 names) -----------------------------------------------------------------------------
NansException = errors.NansDetected
"""A1111's exception for an all-NaN tensor; the same class as Serena's `errors.NansDetected`, so
catching either catches what the pipeline raises."""


def test_for_nans(x: torch.Tensor, where: str) -> None:
    """Raise NansException when every value of `x` is NaN (A1111's check), unless --disable-nan-check.

    `where` ("unet", "vae", …) names the stage in the message, with the flag that usually helps.
    """
    from modules import shared
    cmd_opts = shared.cmd_opts
    if getattr(cmd_opts, "disable_nan_check", False) or not bool(torch.all(torch.isnan(x)).item()):
        return
    if where == "unet":
        message = "The UNet produced a tensor of NaNs only."
        if not getattr(cmd_opts, "no_half", False):
            message += " Half precision may not hold this image's values: try --no-half."
    elif where == "vae":
        message = "The VAE produced a tensor of NaNs only."
        if not getattr(cmd_opts, "no_half", False) and not getattr(cmd_opts, "no_half_vae", False):
            message += " Half precision may not hold this image's values: try --no-half-vae."
    else:
        message = "A tensor of NaNs only was produced."
    raise NansException(message + " Pass --disable-nan-check to skip this check.")


# --- noise (A1111 names; the work is done by modules.rng) ------------------------------------------------
def manual_seed(seed: int) -> None:
    """Seed torch's global generators (what `randn_without_seed` draws from without a generator)."""
    torch.manual_seed(int(seed))


def randn(seed: int, shape: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
    """Unit normal noise of `shape` for `seed`, on the model's device: the same noise Serena's
    pipeline draws for that seed (option `randn_source` decides where it is drawn)."""
    from modules import rng
    return rng.randn(seed, shape, generator)


def randn_local(seed: int, shape: Sequence[int]) -> torch.Tensor:
    """Like `randn`; A1111 keeps it to draw without touching the global generator (neither does `randn` here)."""
    return randn(seed, shape)


def randn_without_seed(shape: Sequence[int], generator: torch.Generator | None = None) -> torch.Tensor:
    """The next unit normal noise of `shape` from `generator`, or from torch's global generator
    (seeded by `manual_seed`) on the `randn_source` device; returned on the model's device."""
    from modules import rng
    if generator is not None:
        return rng.randn_from(generator, shape)
    return torch.randn(tuple(shape), device=rng.noise_device()).to(rng.compute_device())


def randn_like(x: torch.Tensor) -> torch.Tensor:
    """Unit normal noise shaped and typed like `x`, on `x`'s device, from torch's global generator."""
    from modules import rng
    return torch.randn(tuple(x.shape), device=rng.noise_device(), dtype=x.dtype).to(x.device)


@functools.lru_cache(maxsize=None)
def first_time_calculation() -> None:
    """Run one tiny linear and one tiny convolution on the model's device and dtype, so the first
    real step does not pay the backend's one-off set-up (A1111 calls this at start)."""
    with torch.no_grad():
        torch.nn.Linear(1, 1).to(device, dtype)(torch.zeros((1, 1), device=device, dtype=dtype))
        conv = torch.nn.Conv2d(1, 1, (3, 3)).to(device, dtype)
        conv(torch.zeros((1, 1, 3, 3), device=device, dtype=dtype))
