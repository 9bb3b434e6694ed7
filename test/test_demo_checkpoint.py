"""The demo checkpoint: deterministic bytes, A1111 key layout, and a key mapping equal to diffusers' own."""
from __future__ import annotations

import hashlib
import os

import pytest
import torch

from modules import demo_checkpoint, sd_models_config, sd_models_convert


@pytest.fixture(scope="module")
def demo_sd() -> dict[str, torch.Tensor]:
    return demo_checkpoint.build_demo_state_dict()


def test_bytes_are_identical_on_every_run(tmp_path):
    first = demo_checkpoint.ensure_demo_checkpoint(str(tmp_path / "a"))
    second = demo_checkpoint.ensure_demo_checkpoint(str(tmp_path / "b"))
    digest = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (first, second)]
    assert digest[0] == digest[1]
    assert os.path.basename(first) == "serena-demo-tiny.safetensors"


def test_ensure_is_idempotent_and_leaves_no_temp_files(tmp_path):
    path = demo_checkpoint.ensure_demo_checkpoint(str(tmp_path))
    mtime = os.path.getmtime(path)
    assert demo_checkpoint.ensure_demo_checkpoint(str(tmp_path)) == path
    assert os.path.getmtime(path) == mtime
    assert os.listdir(tmp_path) == ["serena-demo-tiny.safetensors"]


def test_real_a1111_key_layout(demo_sd):
    keys = set(demo_sd)
    for key in ("model.diffusion_model.input_blocks.0.0.weight",
                "model.diffusion_model.input_blocks.3.1.transformer_blocks.0.attn2.to_k.weight",
                "model.diffusion_model.middle_block.1.proj_in.weight",
                "model.diffusion_model.output_blocks.1.2.conv.weight",
                "first_stage_model.encoder.mid.attn_1.q.weight",
                "first_stage_model.decoder.up.3.upsample.conv.weight",
                "cond_stage_model.transformer.text_model.encoder.layers.2.mlp.fc2.weight",
                "cond_stage_model.transformer.text_model.embeddings.position_ids",
                "alphas_cumprod", "betas", "posterior_mean_coef2"):
        assert key in keys, key
    assert demo_sd["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4  # LDM stores 1×1 convs
    assert demo_sd["model.diffusion_model.input_blocks.0.0.weight"].dtype == torch.float16
    config = sd_models_config.infer_config(demo_sd)
    assert config.architecture == "SD1" and not config.is_inpainting
    assert config.unet["block_out_channels"] == (32, 64)
    assert len(config.vae["block_out_channels"]) == 4  # latent factor 8, like SD
    assert config.clip["vocab_size"] == 49408 and config.clip["max_position_embeddings"] == 77
    assert config.clip["num_hidden_layers"] >= 3


def _same(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> None:
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        assert ours[key].shape == theirs[key].shape, key
        assert torch.equal(ours[key], theirs[key]), key


def test_mapping_equals_diffusers_converters(demo_sd):
    from diffusers.loaders import single_file_utils as dsf

    config = sd_models_config.infer_config(demo_sd)
    ours = sd_models_convert.convert_checkpoint(demo_sd, config.unet, config.vae,
                                                sd_models_config.clip_prefix(demo_sd))
    _same(ours.unet, dsf.convert_ldm_unet_checkpoint(demo_sd, dict(config.unet)))
    _same(ours.vae, dsf.convert_ldm_vae_checkpoint(demo_sd, dict(config.vae)))
    theirs_clip = {k.removeprefix("text_model."): v for k, v in dsf.convert_ldm_clip_checkpoint(demo_sd).items()
                   if not k.endswith("position_ids")}
    _same(ours.text_encoder, theirs_clip)


def test_mapping_equals_diffusers_on_an_sd15_shaped_layout():
    """Full-size SD1.5 key layout (4 levels, 2 layers per level, attention on 3): mapping only,
    on meta tensors, so nothing is allocated."""
    from diffusers import UNet2DConditionModel
    from diffusers.loaders import single_file_utils as dsf

    config = {"block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "cross_attention_dim": 768,
              "attention_head_dim": 8,
              "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
              "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3}
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    table = sd_models_convert.unet_table(config)
    ldm = sd_models_convert.part_to_ldm(unet.state_dict(), "model.diffusion_model.", table)
    assert "model.diffusion_model.output_blocks.2.1.conv.weight" in ldm            # upsampler after a plain level
    assert "model.diffusion_model.output_blocks.5.2.conv.weight" in ldm            # upsampler after attention
    assert "model.diffusion_model.input_blocks.11.0.out_layers.3.weight" in ldm
    ours, unmapped = sd_models_convert.convert_part(ldm, "model.diffusion_model.", table)
    theirs = dsf.convert_ldm_unet_checkpoint(ldm, config)
    assert not unmapped
    assert sorted(ours) == sorted(theirs) == sorted(unet.state_dict())
    assert all(ours[k] is theirs[k] for k in ours)


def test_vae_mapping_equals_diffusers_on_an_sd15_shaped_layout():
    from diffusers import AutoencoderKL
    from diffusers.loaders import single_file_utils as dsf

    config = {"block_out_channels": (128, 256, 512, 512), "layers_per_block": 2, "latent_channels": 4,
              "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4}
    with torch.device("meta"):
        vae = AutoencoderKL(**config)
    table = sd_models_convert.vae_table(config)
    ldm = sd_models_convert.part_to_ldm(vae.state_dict(), "first_stage_model.", table)
    assert ldm["first_stage_model.decoder.mid.attn_1.proj_out.weight"].shape == (512, 512, 1, 1)
    assert "first_stage_model.decoder.up.0.block.2.nin_shortcut.weight" not in ldm
    assert "first_stage_model.decoder.up.1.block.0.nin_shortcut.weight" in ldm
    ours, unmapped = sd_models_convert.convert_part(ldm, "first_stage_model.", table)
    theirs = dsf.convert_ldm_vae_checkpoint(ldm, config)
    assert not unmapped
    assert sorted(ours) == sorted(theirs) == sorted(vae.state_dict())
    assert all(ours[k].shape == theirs[k].shape for k in ours)
