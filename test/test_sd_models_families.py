"""Loading SD2.x and SDXL checkpoints: recognition, key conversion and module building, checked
against diffusers' own single-file loader (with local config folders written here: no hub)."""
from __future__ import annotations

import hashlib
import json
import math
import os

import pytest
import torch

from modules import demo_checkpoint, errors, safe_load, sd_models, sd_models_config, sd_models_convert

NEW_KINDS = ("sd2", "sd2-v", "sd2-inpainting", "sdxl", "sdxl-refiner", "sdxl-inpainting")
CPU = torch.device("cpu")

# kind → (architecture, inpainting, refiner, prediction, has text_encoder, has text_encoder_2)
EXPECTED = {
    "sd1": ("SD1", False, False, "eps", True, False),
    "sd1-inpainting": ("SD1", True, False, "eps", True, False),
    "sd2": ("SD2", False, False, "eps", True, False),
    "sd2-v": ("SD2", False, False, "v", True, False),
    "sd2-inpainting": ("SD2", True, False, "eps", True, False),
    "sdxl": ("SDXL", False, False, "eps", True, True),
    "sdxl-refiner": ("SDXL", False, True, "eps", False, True),
    "sdxl-inpainting": ("SDXL", True, False, "eps", True, True),
}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("families")
    for kind in demo_checkpoint.DEMO_KINDS:
        demo_checkpoint.write_demo_checkpoint(str(folder / demo_checkpoint.demo_filename(kind)), kind)
    return str(folder)


def _path(demo_dir: str, kind: str) -> str:
    return os.path.join(demo_dir, demo_checkpoint.demo_filename(kind))


def _sd(demo_dir: str, kind: str) -> dict[str, torch.Tensor]:
    return safe_load.load_state_dict(_path(demo_dir, kind))


def _build(sd: dict[str, torch.Tensor], **kwargs) -> sd_models.StableDiffusionModel:
    return sd_models.build_model(sd, device=CPU, dtype=torch.float32, dtype_vae=torch.float32, **kwargs)


# --- recognition -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(EXPECTED))
def test_every_demo_kind_is_recognised_and_built(demo_dir, kind):
    arch, inpainting, refiner, prediction, has_te, has_te2 = EXPECTED[kind]
    path = _path(demo_dir, kind)
    config = sd_models_config.infer_config(_sd(demo_dir, kind), path)
    assert (config.architecture, config.is_inpainting, config.is_refiner) == (arch, inpainting, refiner)
    assert (config.clip is not None, config.clip2 is not None) == (has_te, has_te2)
    assert config.unet["in_channels"] == (9 if inpainting else 4)
    assert config.vae["scaling_factor"] == (0.13025 if arch == "SDXL" else 0.18215)
    model = _build(_sd(demo_dir, kind), filename=path)
    assert model.config.prediction == model.parameterization == prediction
    assert (model.text_encoder is not None, model.text_encoder_2 is not None) == (has_te, has_te2)
    if has_te2:
        assert type(model.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    if has_te:
        assert type(model.text_encoder).__name__ == "CLIPTextModel"
    assert torch.allclose(model.alphas_cumprod, sd_models.sd1_alphas_cumprod())
    assert not any(t.is_meta for t in model.state_dict().values())


def test_inferred_configs_are_the_demo_configs(demo_dir):
    for kind, spec in demo_checkpoint.DEMO_SPECS.items():
        if kind == "sd2-depth":
            continue
        config = sd_models_config.infer_config(_sd(demo_dir, kind))
        assert config.unet == spec.unet, kind
        assert config.vae == spec.vae, kind
        by_slot = {source.slot: clip for source, clip in spec.encoders}
        assert config.clip == by_slot.get("text_encoder"), kind
        assert config.clip2 == by_slot.get("text_encoder_2"), kind


def test_sdxl_per_level_transformer_depth(demo_dir):
    sd = _sd(demo_dir, "sdxl")
    unet = sd_models_config.infer_unet_config(sd, "SDXL")
    assert unet["transformer_layers_per_block"] == (0, 1, 2)
    assert unet["down_block_types"][0] == "DownBlock2D"
    assert unet["class_embed_type"] == "projection" and "addition_embed_type" not in unet
    assert unet["projection_class_embeddings_input_dim"] == sd["model.diffusion_model.label_emb.0.0.weight"].shape[1]
    model = _build(sd)
    blocks = model.unet.down_blocks
    assert len(blocks[1].attentions[0].transformer_blocks) == 1 and len(blocks[2].attentions[0].transformer_blocks) == 2
    assert len(model.unet.mid_block.attentions[0].transformer_blocks) == 2


def test_sd2_depth_is_refused_clearly(demo_dir):
    with pytest.raises(errors.UnsupportedModel, match=r"depth.*not supported") as e:
        _build(_sd(demo_dir, "sd2-depth"), filename="depth.safetensors")
    assert "depth.safetensors" in str(e.value)
    sd = _sd(demo_dir, "sd2")
    sd["depth_model.model.scratch.output_conv.0.weight"] = torch.zeros(1)
    with pytest.raises(errors.UnsupportedModel, match="depth"):
        sd_models_config.infer_config(sd)


def test_half_written_sd2_and_sdxl_files_name_the_missing_tensor(demo_dir):
    """SD1 keys plus a stray SD2/SDXL marker are not a model: the error names what is missing."""
    sd1 = _sd(demo_dir, "sd1")
    sd2 = dict(sd1)
    sd2["cond_stage_model.model.ln_final.weight"] = torch.zeros(1)
    with pytest.raises(errors.CheckpointLoadError, match=r"SD2.*x\.safetensors.*cond_stage_model\.model\.token_embedding"):
        sd_models.build_model(sd2, filename="x.safetensors")
    sdxl = {k: v for k, v in sd1.items() if not k.startswith("cond_stage_model.")}
    sdxl["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] = torch.zeros(1)
    with pytest.raises(errors.CheckpointLoadError, match=r"SDXL.*token_embedding"):
        sd_models.build_model(sdxl)
    wide = dict(sd1)  # an SD1 file whose cross-attention reads 1024 channels: SD2 by width, no OpenCLIP
    for key in [k for k in wide if k.endswith(("attn2.to_k.weight", "attn2.to_v.weight"))]:
        wide[key] = torch.zeros(wide[key].shape[0], 1024)
    with pytest.raises(errors.CheckpointLoadError, match=r"SD2.*cond_stage_model\.model\.token_embedding"):
        sd_models.build_model(wide)


@pytest.mark.parametrize("kind,key", [
    ("sdxl", "conditioner.embedders.1.model.transformer.resblocks.0.attn.bogus.weight"),
    ("sdxl", "conditioner.embedders.2.model.token_embedding.weight"),
    ("sdxl", "model.diffusion_model.label_emb.0.9.weight"),
    ("sdxl-refiner", "conditioner.embedders.0.model.transformer.resblocks.0.mlp.c_fc3.weight"),
    ("sd2", "cond_stage_model.model.transformer.resblocks.1.ln_3.weight"),
    ("sd2", "cond_stage_model.transformer.text_model.final_layer_norm.weight"),
])
def test_unknown_keys_are_named(demo_dir, kind, key):
    sd = _sd(demo_dir, kind)
    sd[key] = torch.zeros(1)
    with pytest.raises(errors.CheckpointLoadError) as e:
        _build(sd, filename="x.safetensors")
    assert key in str(e.value) and "x.safetensors" in str(e.value)


def test_missing_text_projection_is_named(demo_dir):
    sd = _sd(demo_dir, "sdxl")
    del sd["conditioner.embedders.1.model.text_projection"]
    with pytest.raises(errors.CheckpointLoadError, match=r"OpenCLIP.*text_projection\.weight"):
        _build(sd, filename="x.safetensors")


def test_text_projection_stored_as_a_linear_weight_loads_the_same(demo_dir):
    sd = _sd(demo_dir, "sdxl")
    reference = _build(dict(sd)).text_encoder_2.text_projection.weight
    key = "conditioner.embedders.1.model.text_projection"
    sd[key + ".weight"] = sd.pop(key).T.contiguous()
    model = _build(sd)
    assert torch.equal(model.text_encoder_2.text_projection.weight, reference)
    sd2 = _sd(demo_dir, "sd2")  # SD2's projection is unused, whichever way it is stored
    sd2["cond_stage_model.model.text_projection.weight"] = sd2.pop("cond_stage_model.model.text_projection").T
    assert _build(sd2, prediction="eps").text_encoder is not None


# --- v-prediction ----------------------------------------------------------------------------------

def test_probe_reads_the_demo_files_as_documented(demo_dir):
    for kind, expected in (("sd2", False), ("sd2-v", True)):
        config = sd_models_config.infer_config(_sd(demo_dir, kind))
        assert config.needs_prediction_probe
        model = _build(_sd(demo_dir, kind), prediction="eps")  # no probe: eps by order
        assert model.parameterization == "eps" and not model.config.needs_prediction_probe
        assert sd_models_config.is_v_prediction(model.unet) is expected
    a, b = _sd(demo_dir, "sd2"), _sd(demo_dir, "sd2-v")
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert differing == ["model.diffusion_model.out.2.bias"]


def test_probe_value_matches_a1111s_definition(demo_dir):
    """mean(unet(0.5, 999, 0.5 context) - 0.5): about +0.05 for the eps file, 2 lower for the v file."""
    readings = {}
    for kind in ("sd2", "sd2-v"):
        unet = _build(_sd(demo_dir, kind), prediction="eps").unet
        x = torch.full((1, 4, 8, 8), 0.5)
        with torch.no_grad():
            out = unet(x, torch.tensor([999]), encoder_hidden_states=torch.full((1, 2, 64), 0.5)).sample
        readings[kind] = (out - x).mean().item()
    assert readings["sd2"] == pytest.approx(0.05, abs=0.02)
    assert readings["sd2"] - readings["sd2-v"] == pytest.approx(2.0, abs=0.01)


def test_fp16_build_probes_in_float32_and_keeps_dtype(demo_dir):
    model = sd_models.build_model(_sd(demo_dir, "sd2-v"), device=CPU, dtype=torch.float16, dtype_vae=torch.float16)
    assert model.parameterization == "v" and model.dtype == torch.float16
    assert "probe" in model.config.notes[-1]


def test_yaml_beside_the_file_wins(demo_dir, tmp_path):
    for kind, written, expected in (("sd2-v", 'parameterization: "eps"', "eps"), ("sd2", "parameterization: v", "v"),
                                    ("sdxl", '  parameterization: "v"  # v-pred finetune', "v"),
                                    ("sd2-inpainting", "parameterization: 'v'", "v")):
        path = tmp_path / f"{kind}.safetensors"
        path.write_bytes(open(_path(demo_dir, kind), "rb").read())
        (tmp_path / f"{kind}.yaml").write_text(f"model:\n  params:\n  {written}\n")
        model = _build(safe_load.load_state_dict(str(path)), filename=str(path))
        assert model.parameterization == expected, kind
        assert not model.config.needs_prediction_probe
        assert "yaml" in model.config.notes[0]
    path = tmp_path / "sd2.safetensors"
    assert _build(safe_load.load_state_dict(str(path)), filename=str(path), prediction="eps").parameterization == "eps"
    (tmp_path / "sd2.yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")  # says nothing: probe decides
    assert _build(safe_load.load_state_dict(str(path)), filename=str(path)).parameterization == "eps"
    with pytest.raises(ValueError, match="prediction"):
        sd_models_config.infer_config(safe_load.load_state_dict(str(path)), prediction="x0")


def test_v_pred_marker_tensor_says_v_and_ztsnr_is_noted(demo_dir, tmp_path):
    sd = _sd(demo_dir, "sdxl")
    sd["v_pred"] = torch.tensor([])
    sd["ztsnr"] = torch.tensor([])
    model = _build(sd)
    assert model.parameterization == "v" and "v_pred" in model.config.notes[0]
    assert any("zero-terminal-SNR" in note for note in model.config.notes)
    assert _build(dict(sd), prediction="eps").parameterization == "eps"
    path = tmp_path / "m.safetensors"
    (tmp_path / "m.yaml").write_text('parameterization: "eps"\n')
    assert _build(dict(sd), filename=str(path)).parameterization == "eps"  # the yaml beside it wins


# --- demo files --------------------------------------------------------------------------------------

def test_demo_files_are_deterministic(tmp_path):
    for kind in ("sd2-v", "sdxl-refiner"):
        a = demo_checkpoint.write_demo_checkpoint(str(tmp_path / "a" / f"{kind}.safetensors"), kind)
        b = demo_checkpoint.write_demo_checkpoint(str(tmp_path / "b" / f"{kind}.safetensors"), kind)
        digests = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in (a, b)]
        assert digests[0] == digests[1]
    with pytest.raises(ValueError, match="unknown demo checkpoint kind"):
        demo_checkpoint.demo_filename("sd3")


def test_ensure_demo_checkpoint_writes_each_kind_once(tmp_path, demo_dir):
    path = demo_checkpoint.ensure_demo_checkpoint(str(tmp_path), "sd2-inpainting")
    assert os.path.basename(path) == "serena-demo-tiny-sd2-inpainting.safetensors"
    assert open(path, "rb").read() == open(_path(demo_dir, "sd2-inpainting"), "rb").read()
    mtime = os.path.getmtime(path)
    assert demo_checkpoint.ensure_demo_checkpoint(str(tmp_path), "sd2-inpainting") == path
    assert os.path.getmtime(path) == mtime
    assert os.path.basename(demo_checkpoint.ensure_demo_checkpoint(str(tmp_path))) == "serena-demo-tiny.safetensors"


def test_demo_files_have_the_real_layouts(demo_dir):
    sd2 = _sd(demo_dir, "sd2")
    for key in ("cond_stage_model.model.token_embedding.weight", "cond_stage_model.model.positional_embedding",
                "cond_stage_model.model.transformer.resblocks.2.attn.in_proj_weight",
                "cond_stage_model.model.transformer.resblocks.0.mlp.c_proj.bias", "cond_stage_model.model.ln_final.weight",
                "cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale", "alphas_cumprod",
                "model.diffusion_model.input_blocks.1.1.proj_in.weight", "first_stage_model.decoder.mid.attn_1.q.weight"):
        assert key in sd2, key
    assert sd2["cond_stage_model.model.token_embedding.weight"].shape == (49408, 64)
    assert sd2["cond_stage_model.model.positional_embedding"].shape == (77, 64)
    assert sd2["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"].shape == (192, 64)
    assert sd2["model.diffusion_model.input_blocks.1.1.proj_in.weight"].ndim == 2  # linear projections
    sdxl = _sd(demo_dir, "sdxl")
    for key in ("conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight",
                "conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
                "conditioner.embedders.1.model.text_projection", "conditioner.embedders.1.model.logit_scale",
                "model.diffusion_model.label_emb.0.0.weight", "model.diffusion_model.label_emb.0.2.bias",
                "model.diffusion_model.input_blocks.5.1.transformer_blocks.1.attn2.to_k.weight", "betas"):
        assert key in sdxl, key
    assert not any(k.startswith("model.diffusion_model.input_blocks.1.1.") for k in sdxl)  # level 0: no attention
    assert not any(k.startswith("cond_stage_model.") for k in sdxl)
    refiner = _sd(demo_dir, "sdxl-refiner")
    assert "conditioner.embedders.0.model.text_projection" in refiner
    assert not any(k.startswith("conditioner.embedders.1.") for k in refiner)


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_round_trip_demo_to_loaded_modules(demo_dir, kind):
    """The built modules' weights, written back through the same tables, are the file's tensors."""
    sd = _sd(demo_dir, kind)
    model = sd_models.build_model(sd, device=CPU, dtype=torch.float16, dtype_vae=torch.float16, prediction="eps")
    config = model.config
    back = sd_models_convert.part_to_ldm(model.unet.state_dict(), "model.diffusion_model.",
                                         sd_models_convert.unet_table(config.unet))
    back.update(sd_models_convert.part_to_ldm(model.vae.state_dict(), "first_stage_model.",
                                              sd_models_convert.vae_table(config.vae)))
    for source in config.encoders:
        module = getattr(model, source.slot)
        clip = config.clip if source.slot == "text_encoder" else config.clip2
        weights = module.state_dict()
        if source.layout == sd_models_config.HF_CLIP:
            back.update({source.prefix + k: v for k, v in weights.items()})
        else:
            table = sd_models_convert.open_clip_table(clip, source.projection, "text_model." if source.projection else "")
            back.update(sd_models_convert.part_to_ldm(weights, source.prefix, table))
    skipped = {k for k in sd if k not in back}
    assert all(sd_models_convert.is_ignored_key(k) or k.endswith(("logit_scale", "model.text_projection"))
               for k in skipped), skipped
    if kind.startswith("sd2"):
        assert "cond_stage_model.model.text_projection" in skipped  # SD2: unused on purpose
    for key, tensor in back.items():
        assert torch.equal(tensor, sd[key]), key


# --- diffusers' single-file loader as the oracle -------------------------------------------------------

def _write_config(folder, name: str, class_name: str, config: dict) -> None:
    os.makedirs(folder / name, exist_ok=True)
    (folder / name / "config.json").write_text(json.dumps({"_class_name": class_name, **config}))


def _diffusers_unet_config(spec_unet: dict) -> dict:
    """diffusers' own SDXL form: the vector split into text_embeds + time_ids ("text_time")."""
    config = dict(spec_unet)
    if config.pop("class_embed_type", None) == "projection":
        config["addition_embed_type"] = "text_time"
        config["addition_time_embed_dim"] = demo_checkpoint.ADM_TIME_EMBED
    return config


@pytest.fixture(scope="module")
def oracle_configs(tmp_path_factory):
    """A local config folder per new demo kind (unet/, vae/, text_encoder/, text_encoder_2/)."""
    from transformers import CLIPTextConfig

    root = tmp_path_factory.mktemp("oracle-configs")
    folders = {}
    for kind in NEW_KINDS:
        spec = demo_checkpoint.DEMO_SPECS[kind]
        folder = root / kind
        _write_config(folder, "unet", "UNet2DConditionModel", _diffusers_unet_config(spec.unet))
        _write_config(folder, "vae", "AutoencoderKL", spec.vae)
        for source, clip in spec.encoders:
            CLIPTextConfig(**clip).save_pretrained(str(folder / source.slot))
        folders[kind] = str(folder)
    return folders


def _timestep_embedding(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding, cos first (flip_sin_to_cos=True, shift 0), as sgm's ADM numbers use."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = values.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _sdxl_inputs(model, batch: int = 2):
    g = torch.Generator().manual_seed(7)
    pooled = torch.randn(batch, model.config.clip2["projection_dim"], generator=g)
    numbers = 5 if model.config.is_refiner else 6
    time_ids = torch.tensor([[1024.0, 768.0, 0.0, 16.0, 6.0][:numbers] + ([1024.0] if numbers == 6 else [])] * batch)
    time_ids[1] *= 0.5
    vector = torch.cat([pooled, _timestep_embedding(time_ids.flatten(), 256).reshape(batch, -1)], dim=1)
    return pooled, time_ids, vector


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_unet_equals_diffusers_single_file(demo_dir, oracle_configs, kind):
    """For SDXL this is the vector mapping: our projection class embedding fed the whole vector
    equals diffusers' text_time embedding fed pooled text + time ids."""
    from diffusers import UNet2DConditionModel

    path = _path(demo_dir, kind)
    model = _build(safe_load.load_state_dict(path), filename=path)
    theirs = UNet2DConditionModel.from_single_file(path, config=oracle_configs[kind], subfolder="unet",
                                                   local_files_only=True, torch_dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(3)
    config = model.config.unet
    x = torch.randn(2, config["in_channels"], 8, 8, generator=g)
    context = torch.randn(2, 5, config["cross_attention_dim"], generator=g)
    t = torch.tensor([999.0, 10.0])
    with torch.no_grad():
        if model.config.architecture == "SDXL":
            pooled, time_ids, vector = _sdxl_inputs(model)
            assert vector.shape[1] == config["projection_class_embeddings_input_dim"]
            ours = model.unet(x, t, encoder_hidden_states=context, class_labels=vector).sample
            ref = theirs(x, t, encoder_hidden_states=context,
                         added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        else:
            ours = model.unet(x, t, encoder_hidden_states=context).sample
            ref = theirs(x, t, encoder_hidden_states=context).sample
    assert ours.std() > 0
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ("sd2", "sdxl"))
def test_vae_equals_diffusers_single_file(demo_dir, oracle_configs, kind):
    from diffusers import AutoencoderKL

    path = _path(demo_dir, kind)
    model = _build(safe_load.load_state_dict(path), filename=path)
    theirs = AutoencoderKL.from_single_file(path, config=oracle_configs[kind], subfolder="vae",
                                            local_files_only=True, torch_dtype=torch.float32).eval()
    assert theirs.config.scaling_factor == model.scale_factor == model.config.vae["scaling_factor"]
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        z = model.vae.encode(image).latent_dist.mean
        torch.testing.assert_close(z, theirs.encode(image).latent_dist.mean, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.vae.decode(z).sample, theirs.decode(z).sample, rtol=1e-5, atol=1e-5)


def _token_ids(batch: int = 2) -> torch.Tensor:
    ids = torch.randint(1, 49406, (batch, 77), generator=torch.Generator().manual_seed(11))
    ids[:, 0] = 49406
    ids[0, 9:] = 49407  # end token, then padding with the end token (CLIP-L style)
    ids[1, 30] = 49407
    ids[1, 31:] = 0     # padding with 0 (OpenCLIP style)
    return ids


@pytest.mark.parametrize("kind,slot", [("sd2", "text_encoder"), ("sdxl", "text_encoder"), ("sdxl", "text_encoder_2"),
                                       ("sdxl-refiner", "text_encoder_2")])
def test_text_encoders_equal_diffusers_single_file(demo_dir, oracle_configs, kind, slot):
    from diffusers.loaders import single_file_utils as dsf
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    path = _path(demo_dir, kind)
    model = _build(safe_load.load_state_dict(path), filename=path)
    ours = getattr(model, slot)
    cls = CLIPTextModelWithProjection if slot == "text_encoder_2" else CLIPTextModel
    assert type(ours) is cls
    theirs = dsf.create_diffusers_clip_model_from_ldm(
        cls, safe_load.load_state_dict(path), config=oracle_configs[kind], subfolder=slot,
        local_files_only=True, torch_dtype=torch.float32).eval()
    ids = _token_ids()
    with torch.no_grad():
        a = ours(ids, output_hidden_states=True)
        b = theirs(ids, output_hidden_states=True)
    assert len(a.hidden_states) == model.config.__dict__["clip" if slot == "text_encoder" else "clip2"][
        "num_hidden_layers"] + 1  # every layer of the file is kept
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, rtol=1e-5, atol=1e-5)
    if slot == "text_encoder_2":
        torch.testing.assert_close(a.text_embeds, b.text_embeds, rtol=1e-5, atol=1e-5)
        # OpenCLIP's pooled output: final-norm state at the end token, times text_projection [width, proj]
        prefix = "conditioner.embedders.0.model." if kind == "sdxl-refiner" else "conditioner.embedders.1.model."
        projection = safe_load.load_state_dict(path)[prefix + "text_projection"].float()
        eos = (ids == 49407).int().argmax(dim=-1)
        pooled = a.last_hidden_state[torch.arange(2), eos] @ projection
        torch.testing.assert_close(a.text_embeds, pooled, rtol=1e-5, atol=1e-5)


# --- full-size layouts, on meta tensors (mapping and shape reading only; nothing is allocated) -------

FULL_SIZE_UNETS = {
    "SD2 768-v": ("SD2", {
        "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2, "cross_attention_dim": 1024,
        "attention_head_dim": (5, 10, 20, 20), "use_linear_projection": True, "transformer_layers_per_block": 1,
        "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3}),
    "SDXL base": ("SDXL", {
        "block_out_channels": (320, 640, 1280), "layers_per_block": 2, "cross_attention_dim": 2048,
        "attention_head_dim": (5, 10, 20), "use_linear_projection": True, "transformer_layers_per_block": (0, 2, 10),
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "class_embed_type": "projection", "projection_class_embeddings_input_dim": 2816}),
    "SDXL refiner": ("SDXL", {
        "block_out_channels": (384, 768, 1536, 1536), "layers_per_block": 2, "cross_attention_dim": 1280,
        "attention_head_dim": (6, 12, 24, 24), "use_linear_projection": True, "transformer_layers_per_block": 4,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "class_embed_type": "projection", "projection_class_embeddings_input_dim": 2560}),
}


@pytest.mark.parametrize("name", list(FULL_SIZE_UNETS))
def test_full_size_unet_layouts_read_back_and_map_like_diffusers(name):
    from diffusers import UNet2DConditionModel
    from diffusers.loaders import single_file_utils as dsf

    arch, config = FULL_SIZE_UNETS[name]
    with torch.device("meta"):
        unet = UNet2DConditionModel(**config)
    table = sd_models_convert.unet_table(config)
    ldm = sd_models_convert.part_to_ldm(unet.state_dict(), "model.diffusion_model.", table)
    inferred = sd_models_config.infer_unet_config(ldm, arch)
    assert {k: inferred[k] for k in config} == config
    if arch == "SDXL":
        assert "model.diffusion_model.label_emb.0.0.weight" in ldm
        assert not any(".input_blocks.1.1." in k for k in ldm)  # sgm: no attention on the first level
    ours, unmapped = sd_models_convert.convert_part(ldm, "model.diffusion_model.", table)
    theirs = dsf.convert_ldm_unet_checkpoint(ldm, config)
    assert not unmapped
    assert sorted(ours) == sorted(theirs) == sorted(unet.state_dict())


@pytest.mark.parametrize("width,layers,projection", [(1024, 24, False), (1280, 32, True)])
def test_full_size_open_clip_layouts_map_like_diffusers(width, layers, projection):
    """ViT-H (SD2) and bigG (SDXL): our table's OpenCLIP keys and q/k/v split equal diffusers'."""
    from diffusers.loaders import single_file_utils as dsf
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    prefix = "conditioner.embedders.1.model." if projection else "cond_stage_model.model."
    clip = {"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": layers,
            "num_attention_heads": width // 64, "projection_dim": 1280 if projection else width, "hidden_act": "gelu"}
    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    with torch.device("meta"):
        module = cls(CLIPTextConfig(**clip))
    table = sd_models_convert.open_clip_table(clip, projection, "text_model." if projection else "")
    ldm = sd_models_convert.part_to_ldm(module.state_dict(), prefix, table)
    assert ldm[prefix + "transformer.resblocks.0.attn.in_proj_weight"].shape == (3 * width, width)
    assert ldm[prefix + "positional_embedding"].shape == (77, width)
    if projection:
        assert ldm[prefix + "text_projection"].shape == (width, 1280)  # OpenCLIP: [width, proj], used as x @ P
    else:
        ldm[prefix + "text_projection"] = torch.empty(width, width, device="meta")  # SD2 files carry one
    assert sd_models_config.infer_open_clip_config(ldm, prefix)["num_hidden_layers"] == layers
    source = sd_models_config.EncoderSource("text_encoder_2" if projection else "text_encoder", prefix,
                                            sd_models_config.OPEN_CLIP, projection)
    ours, unmapped = sd_models_convert.convert_text_encoder(ldm, source, clip)
    theirs = dsf.convert_open_clip_checkpoint(module, ldm, prefix=prefix)
    if not projection:  # diffusers drops SD2's layer 23 (its penultimate-layer trick) and keeps the projection
        theirs = {k: v for k, v in theirs.items() if "layers.23." not in k and k != "text_projection.weight"}
        ours = {k: v for k, v in ours.items() if "layers.23." not in k}
    theirs = {(k.removeprefix("text_model.") if not projection else k): v for k, v in theirs.items()}
    assert not unmapped
    assert sorted(ours) == sorted(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)
