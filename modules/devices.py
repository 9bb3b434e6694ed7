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
"""True with --upcast-sampling on a half-precision UNet (A1111's name): the UNet then runs under
autocast from float32 inputs, and `dtype_inference` is float32."""
fp8 = False
nv_rng = None

TASK_DEVICES = {"device_interrogate": "interrogate", "device_gfpgan": "gfpgan", "device_esrgan": "esrgan",
                "device_codeformer": "codeformer"}
"""The per-task device names A1111 keeps, and the `--use-cpu` task each follows."""


@dataclass(frozen=True)
class DeviceConfig:
    """Where the Stable Diffusion model runs, in which dtypes, and how the UNet is computed.

    `dtype` is the UNet's weight dtype (A1111's `devices.dtype` / `dtype_unet`); `dtype_text` the
    text encoders'; `dtype_vae` the VAE's. `autocast`: the UNet is called under torch autocast with
    float32 inputs (`--upcast-sampling`), else its inputs are cast to `dtype`. `channels_last`: the
    UNet's weights and inputs use the channels-last memory format. The sampler's own maths (latents,
    sigmas, CFG) always stays in float32: `apply_model` returns the UNet's output in its input's dtype.
    """

    device: torch.device
    dtype: torch.dtype
    dtype_vae: torch.dtype
    dtype_text: torch.dtype | None = None
    autocast: bool = False
    channels_last: bool = False
    reason: str = ""

    @property
    def dtype_unet(self) -> torch.dtype:
        return self.dtype

    @property
    def text_dtype(self) -> torch.dtype:
        return self.dtype_text or self.dtype


def _flag(cmd_opts: Any, name: str, default: Any) -> Any:
    return getattr(cmd_opts, name, default) if cmd_opts is not None else default


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The feature flags of this machine's first CPU, as Linux lists them (empty where unknown)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


FAST_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
"""CPU features with bfloat16 matrix instructions: with one of them a bfloat16 UNet step takes about
half the time of a float32 one (docs/benchmarks.md); without, bfloat16 is emulated and no faster."""


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU computes bfloat16 matrix products in hardware (AVX-512 BF16 or AMX) and
    torch's oneDNN backend can use them."""
    if not (cpu_flags() & FAST_BF16_FLAGS):
        return False
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else True
    except Exception:  # noqa: BLE001 - an old or unusual build: trust the CPU flags
        return True


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
           mps_available: bool | None = None, fast_cpu_bf16: bool | None = None) -> DeviceConfig:
    """Pick device, dtypes and compute mode for `task` from the A1111 flags (a pure function of the
    flags and of what the machine offers, which tests pass in).

    Rules: `--use-cpu all` or `--use-cpu <task>` → CPU. `--no-half` or `--precision full` → float32
    everywhere. On a GPU: float16, the VAE too unless `--no-half-vae`. On a CPU: bfloat16 UNet and
    VAE (the VAE float32 with `--no-half-vae`; the text encoders stay float32: one call per job, so
    bfloat16 would save little and round the conditioning every step reads) with `--precision half`,
    or by default when the CPU has fast bfloat16 (`cpu_has_fast_bf16`) and `--no-cpu-bf16` is not
    given; the automatic CPU path also uses channels-last, measured faster there. `--upcast-sampling`
    on a half-precision UNet computes it under autocast from float32 inputs. `--opt-channelslast`
    asks for channels-last anywhere.
    """
    use_cpu = [str(x).lower() for x in (_flag(cmd_opts, "use_cpu", []) or [])]
    if "all" in use_cpu or task.lower() in use_cpu:
        name = "cpu"
    else:
        name = accelerator_name(cmd_opts, cuda_available, mps_available)
    dev = torch.device(name)
    channels_last = bool(_flag(cmd_opts, "opt_channelslast", False))

    def float32(reason: str) -> DeviceConfig:
        return DeviceConfig(dev, torch.float32, torch.float32, channels_last=channels_last, reason=f"float32: {reason}")

    precision = _flag(cmd_opts, "precision", "autocast")
    if bool(_flag(cmd_opts, "no_half", False)) or precision == "full":
        return float32("--no-half / --precision full")
    upcast = bool(_flag(cmd_opts, "upcast_sampling", False))
    if dev.type == "cpu":
        vae = torch.float32 if _flag(cmd_opts, "no_half_vae", False) else torch.bfloat16
        if precision != "half":
            if _flag(cmd_opts, "no_cpu_bf16", False):
                return float32("--no-cpu-bf16")
            if not (cpu_has_fast_bf16() if fast_cpu_bf16 is None else fast_cpu_bf16):
                return float32("this CPU has no AVX-512 BF16 / AMX")
            return DeviceConfig(dev, torch.bfloat16, vae, torch.float32, autocast=upcast, channels_last=True,
                                reason="bfloat16 UNet and VAE, channels-last (CPU with AVX-512 BF16 / AMX; "
                                       "--no-cpu-bf16 turns it off)")
        return DeviceConfig(dev, torch.bfloat16, vae, torch.float32, autocast=upcast,
                            channels_last=channels_last, reason="bfloat16 UNet and VAE: --precision half on a CPU")
    vae = torch.float32 if _flag(cmd_opts, "no_half_vae", False) else torch.float16
    return DeviceConfig(dev, torch.float16, vae, autocast=upcast, channels_last=channels_last,
                        reason=f"float16 on {dev.type}")


config: DeviceConfig = DeviceConfig(cpu, torch.float32, torch.float32)
"""The configuration `setup` chose (CPU / float32 before it runs)."""


def setup(cmd_opts: Any) -> DeviceConfig:
    """Fill the module-level A1111 names from the flags (the composition root calls this once)."""
    global device, dtype, dtype_vae, dtype_unet, dtype_inference, unet_needs_upcast, config
    config = choose(cmd_opts)
    device, dtype, dtype_vae, dtype_unet = config.device, config.dtype, config.dtype_vae, config.dtype_unet
    unet_needs_upcast = config.autocast
    dtype_inference = torch.float32 if config.autocast else dtype
    for name, task in TASK_DEVICES.items():
        globals()[name] = choose(cmd_opts, task=task).device
    return config


def current() -> DeviceConfig:
    """The configuration `setup` chose (CPU / float32 before it runs), with A1111's module-level
    names as extensions may have set them."""
    if (config.device, config.dtype, config.dtype_vae) == (device, dtype, dtype_vae):
        return config
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
    """`tensor` in the UNet's dtype when the UNet is upcast (`unet_needs_upcast`), else unchanged."""
    return tensor.to(dtype_unet) if unet_needs_upcast else tensor


def cond_cast_float(tensor: Any) -> Any:
    """`tensor` as float32 when the UNet is upcast (`unet_needs_upcast`), else unchanged."""
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
