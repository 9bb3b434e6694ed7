"""Precision and memory format (issue 13): each fast path is deterministic (the same request with
the same flags gives the same bytes twice), stays close to float32, keeps the sampler's maths in
float32, and the float32 test configuration is untouched by it."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from modules import cmd_args, devices, processing, sd_models
from test_processing_helpers import env, fresh_state, pixels  # noqa: F401  (fixtures)

PATHS = {
    # name: flags, and whether this CPU's fast bfloat16 is assumed (the automatic path needs it)
    "auto-bf16": ([], True),
    "precision-half": (["--precision", "half"], False),
    "half-vae-float32": (["--precision", "half", "--no-half-vae"], False),
    "upcast-sampling": (["--precision", "half", "--upcast-sampling"], False),
    "fp32-channelslast": (["--no-half", "--opt-channelslast"], False),
}


def txt2img(**kwargs) -> processing.Processed:
    base = dict(prompt="a red cube on a table", negative_prompt="blurry", seed=4321, steps=4, width=64, height=64,
                sampler_name="Euler", do_not_save_samples=True, do_not_save_grid=True)
    base.update(kwargs)
    return processing.process_images(processing.StableDiffusionProcessingTxt2Img(**base))


def png_bytes(result: processing.Processed) -> list[bytes]:
    out = []
    for image in result.images:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


@pytest.fixture
def load_with(monkeypatch):
    """Load the demo checkpoint with the device configuration `flags` choose; the float32 model is
    loaded again afterwards."""
    def load(flags: list[str], fast_bf16: bool) -> sd_models.StableDiffusionModel:
        config = devices.choose(cmd_args.parse(["--use-cpu", "all", *flags], environ={}), fast_cpu_bf16=fast_bf16)
        for name, value in (("config", config), ("device", config.device), ("dtype", config.dtype),
                            ("dtype_vae", config.dtype_vae), ("dtype_unet", config.dtype_unet)):
            monkeypatch.setattr(devices, name, value)
        return sd_models.load_model(sd_models.get_checkpoint_info("demo"))
    yield load
    monkeypatch.undo()
    sd_models.load_model(sd_models.get_checkpoint_info("demo"))


# --- the choice -------------------------------------------------------------------------------------------
def choose(*flags: str, cuda: bool = False, fast_bf16: bool = True) -> devices.DeviceConfig:
    return devices.choose(cmd_args.parse(list(flags), environ={}), cuda_available=cuda, mps_available=False,
                          fast_cpu_bf16=fast_bf16)


def test_a_cpu_with_fast_bfloat16_gets_a_bfloat16_channels_last_unet_and_vae_and_a_float32_text_encoder():
    c = choose()
    assert (c.device.type, c.dtype, c.dtype_vae, c.text_dtype) == ("cpu", torch.bfloat16, torch.bfloat16, torch.float32)
    assert c.channels_last and not c.autocast and "--no-cpu-bf16" in c.reason
    assert choose("--no-half-vae").dtype_vae == torch.float32  # A1111's flag keeps the VAE in float32


@pytest.mark.parametrize("flags", [["--no-cpu-bf16"], ["--no-half"], ["--precision", "full"]])
def test_the_automatic_bfloat16_path_is_turned_off_by_flags(flags):
    c = choose(*flags)
    assert (c.dtype, c.dtype_vae, c.text_dtype, c.channels_last) == (torch.float32, torch.float32, torch.float32, False)


def test_a_cpu_without_fast_bfloat16_stays_float32_unless_half_is_asked_for():
    assert choose(fast_bf16=False).dtype == torch.float32
    half = choose("--precision", "half", fast_bf16=False)
    assert (half.dtype, half.dtype_vae, half.channels_last) == (torch.bfloat16, torch.bfloat16, False)


def test_upcast_sampling_and_channels_last_flags():
    assert choose("--upcast-sampling").autocast
    assert not choose("--upcast-sampling", "--no-half").autocast
    gpu = choose("--upcast-sampling", "--opt-channelslast", cuda=True)
    assert (gpu.dtype, gpu.autocast, gpu.channels_last) == (torch.float16, True, True)
    assert choose("--no-half", "--opt-channelslast").channels_last


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f avx512_bf16\n\nprocessor\t: 1\nflags\t: fpu\n")
    flags = devices.cpu_flags(str(info))
    assert "avx512_bf16" in flags and flags & devices.FAST_BF16_FLAGS
    assert devices.cpu_flags(str(tmp_path / "missing")) == frozenset()


def test_setup_records_upcast_for_extensions(monkeypatch):
    for name in ("config", "device", "dtype", "dtype_vae", "dtype_unet", "dtype_inference", "unet_needs_upcast"):
        monkeypatch.setattr(devices, name, getattr(devices, name))
    config = devices.setup(cmd_args.parse(["--use-cpu", "all", "--precision", "half", "--upcast-sampling"], environ={}))
    assert devices.current() is config
    assert (devices.dtype, devices.dtype_inference, devices.unet_needs_upcast) == (torch.bfloat16, torch.float32, True)


# --- the paths, end to end on the demo model ------------------------------------------------------------------
def test_the_float32_test_configuration_is_plain_float32():
    model = sd_models.model_data.sd_model
    assert (model.dtype, model.dtype_vae, model.text_encoder.dtype) == (torch.float32,) * 3
    assert not model.device_config.channels_last and not model.device_config.autocast


@pytest.mark.parametrize("name", sorted(PATHS))
def test_each_fast_path_is_deterministic_and_close_to_float32(load_with, name):
    reference = txt2img()
    flags, fast = PATHS[name]
    model = load_with(flags, fast)
    config = model.device_config
    assert model.dtype == config.dtype and model.dtype_vae == config.dtype_vae
    assert model.text_encoder.dtype == torch.float32
    if config.channels_last:
        for conv in (model.unet.conv_in.weight, model.vae.decoder.conv_in.weight):
            assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    first, second = txt2img(), txt2img()
    assert png_bytes(first) == png_bytes(second)  # same request, same flags, same bytes
    difference = np.abs(pixels(first.images[0]) - pixels(reference.images[0]))
    assert difference.mean() < 6.0, f"{name}: mean difference {difference.mean():.2f}/255 from float32"
    assert first.infotexts == reference.infotexts  # the infotext records nothing new


def test_the_sampler_maths_stays_float32_on_a_bfloat16_unet(load_with):
    model = load_with(*PATHS["auto-bf16"])
    x = torch.randn(2, 4, 8, 8)
    cond = model.get_learned_conditioning(["a", "b"])
    assert cond.dtype == torch.float32  # the text encoder stays float32
    out = model.apply_model(x, torch.tensor([500.0, 500.0]), cond)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert out.is_contiguous() or out.is_contiguous(memory_format=torch.channels_last)


def test_a_vae_file_swapped_in_takes_the_models_dtype_and_format(load_with):
    from modules import demo_checkpoint
    model = load_with(*PATHS["auto-bf16"])
    own = model.vae
    vae = sd_models.build_vae(demo_checkpoint.build_demo_vae_state_dict(), model, "demo-vae.safetensors")
    model.swap_vae(vae, "demo-vae.safetensors", own)
    weight = model.vae.decoder.conv_in.weight
    assert model.vae is vae and weight.dtype == torch.bfloat16
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    first, second = txt2img(), txt2img()
    assert png_bytes(first) == png_bytes(second)


def test_img2img_and_inpainting_on_the_bfloat16_path_are_deterministic(load_with):
    from PIL import Image
    load_with(*PATHS["auto-bf16"])
    init = Image.fromarray((np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8))
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))

    def img2img(**kw) -> list[bytes]:
        p = processing.StableDiffusionProcessingImg2Img(
            init_images=[init], prompt="a cat", steps=3, width=64, height=64, denoising_strength=0.6, seed=5,
            sampler_name="Euler", do_not_save_samples=True, do_not_save_grid=True, **kw)
        return png_bytes(processing.process_images(p))
    assert img2img() == img2img()
    inpainted = img2img(mask=mask)
    assert inpainted == img2img(mask=mask)
    outside = np.abs(pixels(Image.open(io.BytesIO(inpainted[0])))[:8] - np.asarray(init, dtype=np.int16)[:8])
    assert outside.mean() < 1.0  # the unmasked area keeps the init image (overlay), bf16 VAE or not
