"""Loading SD1 checkpoints into diffusers/transformers parts, through the real loading code."""
from __future__ import annotations

import os
import shutil

import pytest
import safetensors.torch
import torch

from modules import cmd_args, demo_checkpoint, errors, options, paths, sd_models, shared


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory) -> str:
    return demo_checkpoint.ensure_demo_checkpoint(str(tmp_path_factory.mktemp("demo")))


@pytest.fixture(scope="module")
def demo_sd(demo_file) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(demo_file)


@pytest.fixture()
def env(tmp_path, monkeypatch, demo_file):
    """A data folder holding the demo checkpoint, fresh options, empty registry and no model."""
    data = tmp_path / "data"
    models = data / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    shutil.copy(demo_file, models / "demo.safetensors")
    monkeypatch.setattr(shared, "data_paths", paths.data_paths(str(data)))
    monkeypatch.setattr(shared, "opts", options.Options())
    monkeypatch.setattr(shared, "cmd_opts", cmd_args.parse(["--data-dir", str(data), "--use-cpu", "all"], environ={}))
    for registry in (sd_models.checkpoints_list, sd_models.checkpoint_aliases):
        registry.clear()
    sd_models.model_data.set_sd_model(None)
    sd_models.model_data.was_loaded_at_least_once = False
    yield models
    sd_models.model_data.set_sd_model(None)
    for registry in (sd_models.checkpoints_list, sd_models.checkpoint_aliases):
        registry.clear()


def test_load_demo_checkpoint(env):
    model = sd_models.load_model()
    assert sd_models.model_data.sd_model is model and shared.sd_model is model
    info = sd_models.get_checkpoint_info("demo")
    assert model.sd_checkpoint_info is info and model.sd_model_hash == info.shorthash and len(info.shorthash) == 10
    assert model.sd_model_checkpoint == info.filename
    assert shared.opts.sd_model_checkpoint == info.title
    assert (model.is_sd1, model.is_sd2, model.is_sdxl, model.is_inpainting) == (True, False, False, False)
    assert model.device == torch.device("cpu") and model.dtype == torch.float32 and model.dtype_vae == torch.float32
    assert next(model.unet.parameters()).dtype == torch.float32
    assert model.parameterization == "eps" and model.latent_channels == 4 and model.scale_factor == 0.18215
    assert model.alphas_cumprod.dtype == torch.float32 and model.alphas_cumprod.shape == (1000,)
    assert torch.allclose(model.alphas_cumprod, sd_models.sd1_alphas_cumprod())
    assert not any(t.is_meta for t in model.state_dict().values())
    assert not any(b.is_meta for b in model.buffers())


def test_model_surface(env):
    model = sd_models.load_model()
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = torch.randn(2, 77, 64, generator=torch.Generator().manual_seed(1))
    eps = model.apply_model(x, torch.tensor([999.0, 10.0]), cond)
    assert eps.shape == x.shape and torch.isfinite(eps).all() and eps.std() > 0
    assert torch.equal(model.apply_model(x, torch.tensor(500.0), cond), model.apply_model(x, torch.tensor([500.0] * 2), cond))
    image = torch.rand(1, 3, 64, 64) * 2 - 1
    z = model.encode_first_stage(image)
    assert z.shape == (1, 4, 8, 8) and torch.equal(z, model.encode_first_stage(image))  # deterministic
    posterior = model.vae.encode(image).latent_dist.mean
    assert torch.allclose(z, posterior * 0.18215)
    decoded = model.decode_first_stage(z)
    assert decoded.shape == (1, 3, 64, 64) and torch.allclose(decoded, model.vae.decode(z / 0.18215).sample)


def test_learned_conditioning_and_clip_skip(env):
    from modules import clip_tokenizer
    if not clip_tokenizer.has_vocab(os.path.join(shared.data_paths.tokenizers_dir, sd_models.TOKENIZER_SUBDIR)):
        pytest.skip("CLIP tokenizer files not set up (python -m modules.clip_tokenizer)")
    model = sd_models.load_model()
    c1 = model.get_learned_conditioning(["a cat", "a dog"])
    assert c1.shape == (2, 77, 64) and torch.isfinite(c1).all()
    with shared.opts.override({"CLIP_stop_at_last_layers": 2}):
        c2 = model.get_learned_conditioning(["a cat", "a dog"])
    assert not torch.allclose(c1, c2)


def test_ckpt_file_loads_like_safetensors(env, demo_sd):
    torch.save({"state_dict": demo_sd}, env / "pickled.ckpt")
    a = sd_models.load_model(sd_models.get_checkpoint_info("demo"))
    b = sd_models.load_model(sd_models.get_checkpoint_info("pickled"))
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_alphas_cumprod_come_from_the_file(demo_sd):
    sd = dict(demo_sd)
    sd["alphas_cumprod"] = torch.linspace(0.99, 0.01, 1000)
    assert torch.equal(sd_models.build_model(sd).alphas_cumprod, torch.linspace(0.99, 0.01, 1000))
    del sd["alphas_cumprod"]
    assert torch.allclose(sd_models.build_model(sd).alphas_cumprod, sd_models.sd1_alphas_cumprod())


def test_fp16_load_keeps_file_tensors(demo_sd):
    model = sd_models.build_model(demo_sd, dtype=torch.float16, dtype_vae=torch.float16)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    assert model.unet.conv_in.weight.dtype == torch.float16
    assert model.unet.conv_in.weight.data_ptr() == demo_sd[key].data_ptr()  # assigned, not copied


def test_missing_key_is_named(demo_sd):
    sd = dict(demo_sd)
    del sd["model.diffusion_model.out.2.bias"]
    del sd["cond_stage_model.transformer.text_model.final_layer_norm.weight"]
    with pytest.raises(errors.CheckpointLoadError, match=r"conv_out\.bias"):
        sd_models.build_model(sd, filename="x.safetensors")
    sd = dict(demo_sd)
    del sd["cond_stage_model.transformer.text_model.final_layer_norm.weight"]
    with pytest.raises(errors.CheckpointLoadError, match=r"final_layer_norm\.weight"):
        sd_models.build_model(sd)


def test_unexpected_keys_are_named(demo_sd):
    for key in ("model.diffusion_model.input_blocks.1.0.extra.weight", "model.diffusion_model.bogus.weight",
                "something_else.weight", "first_stage_model.encoder.down.0.block.0.extra.weight",
                "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc3.weight"):
        sd = dict(demo_sd)
        sd[key] = torch.zeros(1)
        with pytest.raises(errors.CheckpointLoadError) as e:
            sd_models.build_model(sd, filename="x.safetensors")
        assert key.split(".")[-2] in str(e.value) and "x.safetensors" in str(e.value)
    sd = dict(demo_sd)
    sd["first_stage_model.encoder.down.9.block.0.conv1.weight"] = torch.zeros(1)
    with pytest.raises(errors.CheckpointLoadError, match=r"x\.safetensors.*\[0, 1, 2, 3, 9\]"):
        sd_models.build_model(sd, filename="x.safetensors")


def test_known_non_weight_keys_are_ignored(demo_sd):
    sd = dict(demo_sd)
    sd["model_ema.diffusion_modelinput_blocks00weight"] = torch.zeros(1)
    sd["model_ema.num_updates"] = torch.tensor(3)
    sd["lvlb_weights"] = torch.zeros(1000)
    sd_models.build_model(sd)


def test_shape_mismatch_is_an_error(demo_sd):
    sd = dict(demo_sd)
    sd["model.diffusion_model.out.2.bias"] = torch.zeros(5, dtype=torch.float16)
    with pytest.raises(errors.CheckpointLoadError, match="UNet"):
        sd_models.build_model(sd)


def test_inpainting_unet_is_recognised(demo_sd):
    sd = dict(demo_sd)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    sd[key] = torch.cat([sd[key], torch.zeros(32, 5, 3, 3, dtype=sd[key].dtype)], dim=1)
    model = sd_models.build_model(sd)
    assert model.is_inpainting and model.unet.config.in_channels == 9
    x = torch.randn(1, 4, 8, 8)
    eps = model.apply_model(x, torch.tensor([5.0]), torch.randn(1, 77, 64), c_concat=torch.randn(1, 5, 8, 8))
    assert eps.shape == x.shape


def test_not_an_sd_checkpoint(tmp_path):
    with pytest.raises(errors.CheckpointLoadError, match="not a Stable Diffusion checkpoint"):
        sd_models.build_model({"lora_unet_down.weight": torch.zeros(1)})


def test_truncated_file_names_it_and_previous_model_stays(env, demo_file):
    data = open(demo_file, "rb").read()
    (env / "broken.safetensors").write_bytes(data[: len(data) // 3])
    sd_models.list_models()
    demo = sd_models.load_model(sd_models.get_checkpoint_info("demo"))
    with pytest.raises(errors.CheckpointLoadError, match="broken.safetensors"):
        sd_models.reload_model_weights(info=sd_models.get_checkpoint_info("broken"))
    assert sd_models.model_data.sd_model is demo
    assert sd_models.reload_model_weights(info=sd_models.get_checkpoint_info("demo")) is demo  # no reload


def test_option_hook_switches_and_keeps_previous_on_failure(env, demo_file):
    shutil.copy(demo_file, env / "second.safetensors")
    data = open(demo_file, "rb").read()
    (env / "broken.safetensors").write_bytes(data[:1000])
    opts = shared.opts
    sd_models.setup_option_hooks(opts)
    demo = sd_models.load_model(sd_models.get_checkpoint_info("demo"))
    title = opts.sd_model_checkpoint
    with pytest.raises(errors.CheckpointNotFound):
        opts.set("sd_model_checkpoint", "no-such-model")
    with pytest.raises(errors.CheckpointLoadError, match="broken"):
        opts.set("sd_model_checkpoint", "broken")
    assert opts.sd_model_checkpoint == title and sd_models.model_data.sd_model is demo
    opts.set("sd_model_checkpoint", "second")
    assert sd_models.model_data.sd_model.sd_checkpoint_info.name == "second.safetensors"
    assert opts.sd_model_checkpoint == sd_models.get_checkpoint_info("second").title


def test_unload_then_get_sd_model_loads_again(env):
    model = sd_models.load_model()
    assert sd_models.unload_model_weights() is model
    assert sd_models.model_data.sd_model is None
    assert sd_models.model_data.get_sd_model().sd_checkpoint_info.name == "demo.safetensors"
