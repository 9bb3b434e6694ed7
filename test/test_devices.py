"""Device and dtype choice from A1111's flags."""
from __future__ import annotations

import torch

from modules import cmd_args, devices


def choose(*flags: str, cuda: bool = True):
    """The choice on a machine whose CPU has no fast bfloat16 (test_precision.py covers the CPU bfloat16 path)."""
    return devices.choose(cmd_args.parse(list(flags), environ={}), cuda_available=cuda, mps_available=False,
                          fast_cpu_bf16=False)


def test_cuda_defaults_to_half():
    c = choose()
    assert (c.device.type, c.dtype, c.dtype_vae) == ("cuda", torch.float16, torch.float16)


def test_use_cpu_all_or_sd_means_cpu_float32():
    for flags in (["--use-cpu", "all"], ["--use-cpu", "sd"], ["--use-cpu", "interrogate", "sd"]):
        c = choose(*flags)
        assert (c.device, c.dtype, c.dtype_vae) == (torch.device("cpu"), torch.float32, torch.float32)


def test_use_cpu_other_task_keeps_gpu():
    assert choose("--use-cpu", "interrogate").device.type == "cuda"


def test_full_precision_flags():
    for flags in (["--no-half"], ["--precision", "full"]):
        c = choose(*flags)
        assert c.device.type == "cuda" and c.dtype == torch.float32 and c.dtype_vae == torch.float32


def test_no_half_vae_and_device_id():
    c = choose("--no-half-vae", "--device-id", "1")
    assert c.device == torch.device("cuda:1") and c.dtype == torch.float16 and c.dtype_vae == torch.float32


def test_no_accelerator_means_cpu():
    c = choose(cuda=False)
    assert c.device.type == "cpu" and c.dtype == torch.float32


def test_setup_fills_a1111_names(monkeypatch):
    monkeypatch.setattr(devices, "device", devices.device)
    monkeypatch.setattr(devices, "dtype", devices.dtype)
    monkeypatch.setattr(devices, "dtype_vae", devices.dtype_vae)
    monkeypatch.setattr(devices, "dtype_unet", devices.dtype_unet)
    monkeypatch.setattr(devices, "config", devices.config)
    config = devices.setup(cmd_args.parse(["--use-cpu", "all", "--no-half"], environ={}))
    assert devices.device == torch.device("cpu") and devices.dtype == torch.float32
    assert devices.current() == config


def test_helpers_on_this_machine(monkeypatch):
    from modules import shared
    monkeypatch.setattr(shared, "cmd_opts", cmd_args.parse(["--use-cpu", "all"], environ={}))
    assert devices.get_device_for("sd") == torch.device("cpu")
    name = devices.get_optimal_device_name()
    assert devices.get_optimal_device() == torch.device(name)
    devices.torch_gc()
