"""Device and dtype choice: the one place that decides where the model runs and in which precision.

A1111 extensions read `devices.device`, `devices.dtype`, `devices.dtype_vae`, `devices.dtype_unet`
and `devices.cpu`; those names are kept. At import they hold the safe CPU / float32 defaults and
nothing is probed; the composition root calls :func:`setup` with the parsed flags, which fills them
from :func:`choose` (a pure function of the flags and of what the machine offers, so tests can
ask it about CUDA without having a GPU).
"""
from __future__ import annotations

import gc
from dataclasses import dataclass
from typing import Any

import torch

cpu: torch.device = torch.device("cpu")

# Filled by setup(); the defaults are what a CPU-only machine gets.
device: torch.device = cpu
dtype: torch.dtype = torch.float32
dtype_vae: torch.dtype = torch.float32
dtype_unet: torch.dtype = torch.float32


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
    global device, dtype, dtype_vae, dtype_unet
    config = choose(cmd_opts)
    device, dtype, dtype_vae, dtype_unet = config.device, config.dtype, config.dtype_vae, config.dtype_unet
    return config


def current() -> DeviceConfig:
    """The configuration `setup` chose (CPU / float32 before it runs)."""
    return DeviceConfig(device, dtype, dtype_vae)


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
