"""The checkpoint merger (`modules.extras`) on real files: tiny demo checkpoints with distinct
weights, merged through `merge_checkpoints` / A1111's `run_modelmerger`, read back with the
safetensors library and checked against torch arithmetic done here, then loaded through Serena's
real loader and used to generate an image."""
from __future__ import annotations

import hashlib
import json
import os
import re

import pytest
import safetensors
import safetensors.torch
import torch

from modules import cmd_args, demo_checkpoint, errors, extras, options, paths, sd_models, sd_vae, shared

POS_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"
CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
ONLY_IN_A = "model.diffusion_model.time_embed.0.bias"  # removed from B: A's tensor must be kept
ONLY_IN_B = "model.diffusion_model.extra_b.weight"     # added to B: must not reach the result
NOT_IN_C = "model.diffusion_model.out.2.bias"          # removed from C: zero difference


def demo_state(seed: int, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """The demo checkpoint's tensors, drawn with another seed (so each file has its own weights)."""
    mp = pytest.MonkeyPatch()
    mp.setattr(demo_checkpoint, "SEED", seed)
    try:
        return demo_checkpoint.build_demo_state_dict(dtype)
    finally:
        mp.undo()


def with_channels(sd: dict[str, torch.Tensor], channels: int, seed: int) -> dict[str, torch.Tensor]:
    """`sd` with a first UNet conv of `channels` input channels (9: inpainting, 8: instruct-pix2pix)."""
    out = dict(sd)
    w = sd[CONV_IN]
    extra = torch.randn(w.shape[0], channels - 4, *w.shape[2:], generator=torch.Generator().manual_seed(seed))
    out[CONV_IN] = torch.cat([w, extra.to(w.dtype)], dim=1).contiguous()
    return out


@pytest.fixture(scope="module")
def states() -> dict[str, dict[str, torch.Tensor]]:
    a, b, c = demo_state(101), demo_state(202), demo_state(303)
    b = dict(b)
    del b[ONLY_IN_A]
    b[ONLY_IN_B] = torch.ones(3)
    c = dict(c)
    del c[NOT_IN_C]
    return {"a": a, "b": b, "c": c, "half": demo_state(404, torch.float16),
            "inpaint": with_channels(a, 9, 1), "pix2pix": with_channels(a, 8, 2), "vae": demo_state(505)}


@pytest.fixture(scope="module")
def env(tmp_path_factory, states):
    """A data folder: checkpoints a, b, c, half, inpaint, pix2pix (with metadata on a); a VAE file."""
    data = tmp_path_factory.mktemp("merge-data")
    models = data / "models" / "Stable-diffusion"
    models.mkdir(parents=True)
    for name in ("b", "c", "half", "inpaint", "pix2pix"):
        safetensors.torch.save_file(states[name], str(models / f"{name}.safetensors"), metadata={"format": "pt"})
    safetensors.torch.save_file(states["a"], str(models / "a.safetensors"),
                                metadata={"format": "pt", "ss_note": "from a", "modelspec.title": "A"})
    vae_dir = data / "models" / "VAE"
    vae_dir.mkdir()
    vae = {k[len("first_stage_model."):]: v for k, v in states["vae"].items() if k.startswith("first_stage_model.")}
    vae["loss.logvar"] = torch.zeros(1)
    vae["model_ema.decay"] = torch.tensor(0.999)
    safetensors.torch.save_file(vae, str(vae_dir / "my.vae.safetensors"))
    safetensors.torch.save_file({"decoder.unrelated.weight": torch.zeros(2)}, str(vae_dir / "nothing.safetensors"))
    vae_list, vae_listed = dict(sd_vae.vae_dict), dict(sd_vae._listing)  # merging re-reads the VAE list
    mp = pytest.MonkeyPatch()
    mp.setattr(shared, "data_paths", paths.data_paths(str(data)))
    mp.setattr(shared, "opts", options.Options())
    mp.setattr(shared, "cmd_opts", cmd_args.parse(["--data-dir", str(data), "--use-cpu", "all"], environ={}))
    for registry in (sd_models.checkpoints_list, sd_models.checkpoint_aliases):
        registry.clear()
    sd_models.list_models()
    yield models
    sd_models.model_data.set_sd_model(None)
    for registry in (sd_models.checkpoints_list, sd_models.checkpoint_aliases):
        registry.clear()
    mp.undo()
    sd_vae.vae_dict.clear()
    sd_vae.vae_dict.update(vae_list)
    sd_vae._listing.update(vae_listed)


def merge(**kwargs) -> extras.MergeResult:
    return extras.merge_checkpoints(extras.MergeRequest(**kwargs))


def read(path: str) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(path)


def raw_metadata(path: str) -> dict[str, str] | None:
    with safetensors.safe_open(path, "pt") as f:
        return f.metadata()


def merged(key: str) -> bool:
    return "model" in key and key != POS_IDS


def sha256(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def legacy_hash(path: str) -> str:
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def listing(folder) -> set[str]:
    return set(os.listdir(folder))


# --- the arithmetic -------------------------------------------------------------------------------

def test_weighted_sum_is_exact_and_follows_a1111_key_rules(env, states):
    result = merge(primary_model_name="a", secondary_model_name="b", interp_method="Weighted sum", multiplier=0.3)
    assert os.path.basename(result.filename) == "0.7(a) + 0.3(b).safetensors"
    assert os.path.dirname(result.filename) == str(env)
    out, a, b = read(result.filename), states["a"], states["b"]
    assert set(out) == set(a)  # keys only in B are dropped
    for key, ta in a.items():
        if merged(key) and key in b:
            expected = (1 - 0.3) * ta + 0.3 * b[key]
            assert torch.equal(out[key], expected), key
        else:  # buffers, position ids, keys missing from B: A's tensor as it was
            assert torch.equal(out[key], ta) and out[key].dtype == ta.dtype, key
    assert not torch.equal(out[CONV_IN], a[CONV_IN]) and not torch.equal(out[CONV_IN], b[CONV_IN])
    assert torch.equal(out[ONLY_IN_A], a[ONLY_IN_A]) and ONLY_IN_B not in out
    assert out["betas"].dtype == torch.float32 and out[POS_IDS].dtype == torch.int64


def test_add_difference_is_exact_and_missing_tertiary_key_is_zero_difference(env, states):
    result = merge(primary_model_name="a", secondary_model_name="b", tertiary_model_name="c",
                   interp_method="Add difference", multiplier=0.75)
    assert os.path.basename(result.filename) == "a + 0.75(b - c).safetensors"
    out, a, b, c = read(result.filename), states["a"], states["b"], states["c"]
    for key, ta in a.items():
        if merged(key) and key in b:
            diff = b[key] - c[key] if key in c else torch.zeros_like(b[key])
            assert torch.equal(out[key], ta + 0.75 * diff), key
        else:
            assert torch.equal(out[key], ta), key
    assert torch.equal(out[NOT_IN_C], a[NOT_IN_C])


def test_half_precision_inputs_are_merged_in_their_dtype(env, states):
    result = merge(primary_model_name="half", secondary_model_name="b", multiplier=0.5, custom_name="mixed")
    out, h, b = read(result.filename), states["half"], states["b"]
    key = "model.diffusion_model.out.2.weight"
    assert torch.equal(out[key], 0.5 * h[key] + 0.5 * b[key]) and out[key].dtype == torch.float32  # promotion
    assert out["betas"].dtype == torch.float32


def test_save_as_half(env, states):
    # A1111 names a "No interpolation" result after the primary, so it would replace the primary itself
    with pytest.raises(errors.InvalidParameter, match=r"a\.safetensors' already exists"):
        merge(primary_model_name="a", interp_method="No interpolation", save_as_half=True)
    none = read(merge(primary_model_name="a", interp_method="No interpolation", save_as_half=True,
                      custom_name="a-fp16").filename)
    for key, ta in states["a"].items():  # every float32 tensor, merged or not
        expected = ta.half() if ta.dtype == torch.float32 else ta
        assert none[key].dtype == expected.dtype and torch.equal(none[key], expected), key
    assert none[POS_IDS].dtype == torch.int64 and none["alphas_cumprod"].dtype == torch.float16
    ws = read(merge(primary_model_name="a", secondary_model_name="b", multiplier=0.5, save_as_half=True,
                    custom_name="ws-half").filename)
    assert ws[CONV_IN].dtype == torch.float16
    assert torch.equal(ws[CONV_IN], (0.5 * states["a"][CONV_IN] + 0.5 * states["b"][CONV_IN]).half())
    # A1111 halves only merged tensors when merging: buffers and keys missing from B stay float32
    assert ws["betas"].dtype == torch.float32 and ws[ONLY_IN_A].dtype == torch.float32


def test_no_interpolation_copies_primary_and_ignores_other_models(env, states):
    result = merge(primary_model_name="a", secondary_model_name="no such", interp_method="No interpolation",
                   custom_name="copy")
    out = read(result.filename)
    assert set(out) == set(states["a"]) and all(torch.equal(out[k], v) for k, v in states["a"].items())
    recipe = json.loads(raw_metadata(result.filename)["sd_merge_recipe"])
    assert recipe["secondary_model_hash"] is None and recipe["tertiary_model_hash"] is None


@pytest.mark.parametrize("name,channels,kind", [("inpaint", 9, "inpainting"), ("pix2pix", 8, "instruct-pix2pix")])
def test_special_primary_merges_first_four_channels_and_keeps_the_rest(env, states, name, channels, kind):
    result = merge(primary_model_name=name, secondary_model_name="b", multiplier=0.4)
    assert os.path.basename(result.filename) == f"0.6({name}) + 0.4(b).{kind}.safetensors"
    assert (result.is_inpainting, result.is_instruct_pix2pix) == (kind == "inpainting", kind == "instruct-pix2pix")
    out, a, b = read(result.filename), states[name], states["b"]
    assert out[CONV_IN].shape[1] == channels
    assert torch.equal(out[CONV_IN][:, :4], 0.6 * a[CONV_IN][:, :4] + 0.4 * b[CONV_IN])
    assert torch.equal(out[CONV_IN][:, 4:], a[CONV_IN][:, 4:])
    recipe = json.loads(raw_metadata(result.filename)["sd_merge_recipe"])
    assert recipe["is_inpainting"] == (kind == "inpainting")
    assert recipe["is_instruct_pix2pix"] == (kind == "instruct-pix2pix")


def test_special_model_must_be_the_primary(env):
    for name in ("inpaint", "pix2pix"):
        with pytest.raises(errors.InvalidParameter, match="A .*must be the") as e:
            merge(primary_model_name="a", secondary_model_name=name, custom_name=f"wrong-{name}")
        assert e.value.field == "primary_model_name"
    with pytest.raises(errors.CheckpointLoadError, match="tertiary"):
        merge(primary_model_name="a", secondary_model_name="inpaint", tertiary_model_name="b",
              interp_method="Add difference", custom_name="wrong-c")
    assert not [f for f in listing(env) if f.startswith("wrong")]


def test_to_half_converts_float32_only():
    for dtype in (torch.float64, torch.bfloat16, torch.int64, torch.float16):
        assert extras.to_half(torch.zeros(2, dtype=dtype), True).dtype == dtype
    assert extras.to_half(torch.zeros(2), True).dtype == torch.float16
    assert extras.to_half(torch.zeros(2), False).dtype == torch.float32


def test_merge_tensor_refuses_shapes_that_do_not_fit():
    with pytest.raises(errors.CheckpointLoadError, match=r"'k'.*\(3,\).*\(4,\)"):
        extras.merge_tensor("k", torch.zeros(3), torch.zeros(4), 0.5, extras.weighted_sum)
    with pytest.raises(errors.CheckpointLoadError):
        extras.merge_tensor("k", torch.zeros(2, 5, 3, 3), torch.zeros(2, 4, 3, 3), 0.5, extras.weighted_sum)


# --- VAE, discarding, metadata --------------------------------------------------------------------

def test_bake_in_vae(env, states):
    result = merge(primary_model_name="a", secondary_model_name="b", multiplier=0.5, bake_in_vae="my.vae.safetensors",
                   custom_name="baked")
    out, vae = read(result.filename), states["vae"]
    vae_keys = [k for k in vae if k.startswith("first_stage_model.")]
    assert vae_keys and all(torch.equal(out[k], vae[k]) for k in vae_keys)
    assert "first_stage_model.loss.logvar" not in out and "first_stage_model.model_ema.decay" not in out
    assert torch.equal(out[CONV_IN], 0.5 * states["a"][CONV_IN] + 0.5 * states["b"][CONV_IN])
    assert json.loads(raw_metadata(result.filename)["sd_merge_recipe"])["bake_in_vae"] == "my.vae.safetensors"
    half = read(merge(primary_model_name="a", interp_method="No interpolation", bake_in_vae="my.vae.safetensors",
                      save_as_half=True, custom_name="baked-half").filename)
    assert all(half[k].dtype == torch.float16 and torch.equal(half[k], vae[k].half()) for k in vae_keys)


def test_vae_state_dict_drops_training_keys_and_prefix():
    state = {"encoder.conv_in.weight": torch.ones(1), "first_stage_model.decoder.conv_out.bias": torch.ones(2),
             "loss.discriminator.w": torch.ones(1), "model_ema.decay": torch.ones(()),
             "model_ema.num_updates": torch.ones(())}
    assert set(extras.vae_state_dict(state)) == {"encoder.conv_in.weight", "decoder.conv_out.bias"}


def test_result_goes_to_ckpt_dir_when_set(env, tmp_path, monkeypatch):
    ckpt_dir = tmp_path / "ckpts"
    ckpt_dir.mkdir()
    monkeypatch.setattr(shared.cmd_opts, "ckpt_dir", str(ckpt_dir))
    try:
        result = merge(primary_model_name="a", secondary_model_name="b", custom_name="elsewhere")
        assert result.filename == str(ckpt_dir / "elsewhere.safetensors")
        assert not (env / "elsewhere.safetensors").exists()
        assert result.checkpoint_info is not None and result.checkpoint_info.name == "elsewhere.safetensors"
    finally:
        monkeypatch.undo()
        sd_models.list_models()


def test_bad_vae_is_an_error(env):
    with pytest.raises(errors.InvalidParameter, match=r"'gone.pt'.*my\.vae\.safetensors") as e:
        merge(primary_model_name="a", interp_method="No interpolation", bake_in_vae="gone.pt", custom_name="v1")
    assert e.value.field == "bake_in_vae"
    with pytest.raises(errors.CheckpointLoadError, match="nothing.safetensors"):
        merge(primary_model_name="a", interp_method="No interpolation", bake_in_vae="nothing.safetensors",
              custom_name="v2")
    assert not ({"v1.safetensors", "v2.safetensors"} & listing(env))


def test_discard_weights(env, states):
    result = merge(primary_model_name="a", secondary_model_name="b", discard_weights=r"^first_stage_model\.|betas$",
                   custom_name="discarded")
    out = read(result.filename)
    expected = {k for k in states["a"] if not re.search(r"^first_stage_model\.|betas$", k)}
    assert set(out) == expected and "betas" not in out and "alphas_cumprod" in out
    assert set(result.discarded_keys) == set(states["a"]) - expected
    with pytest.raises(errors.InvalidParameter, match="regular expression") as e:
        merge(primary_model_name="a", secondary_model_name="b", discard_weights="(", custom_name="bad-re")
    assert e.value.field == "discard_weights"


def test_metadata_as_a1111_writes_it(env):
    a_path, b_path = str(env / "a.safetensors"), str(env / "b.safetensors")
    result = merge(primary_model_name="a", secondary_model_name="b", multiplier=0.25, custom_name="meta",
                   discard_weights="^model_ema", metadata_json='{"ss_user": "mine", "nested": {"x": 1}}')
    meta = raw_metadata(result.filename)
    assert meta["format"] == "pt" and meta["ss_note"] == "from a" and meta["modelspec.title"] == "A"
    assert meta["ss_user"] == "mine" and json.loads(meta["nested"]) == {"x": 1}
    recipe = json.loads(meta["sd_merge_recipe"])
    assert recipe == {
        "type": "webui", "primary_model_hash": sha256(a_path), "secondary_model_hash": sha256(b_path),
        "tertiary_model_hash": None, "interp_method": "Weighted sum", "multiplier": 0.25, "save_as_half": False,
        "custom_name": "meta", "config_source": 0, "bake_in_vae": "None", "discard_weights": "^model_ema",
        "is_inpainting": False, "is_instruct_pix2pix": False}
    models = json.loads(meta["sd_merge_models"])
    assert models == {
        sha256(a_path): {"name": "a.safetensors", "legacy_hash": legacy_hash(a_path), "sd_merge_recipe": None},
        sha256(b_path): {"name": "b.safetensors", "legacy_hash": legacy_hash(b_path), "sd_merge_recipe": None}}
    # a merge of a merge carries the earlier recipe and models forward
    again = merge(primary_model_name="meta", secondary_model_name="c", custom_name="meta2")
    models2 = json.loads(raw_metadata(again.filename)["sd_merge_models"])
    meta_path = result.filename
    assert models2[sha256(meta_path)]["sd_merge_recipe"] == recipe
    assert sha256(a_path) in models2 and sha256(b_path) in models2


def test_metadata_switches(env):
    plain = merge(primary_model_name="a", secondary_model_name="b", save_metadata=False, custom_name="no-meta",
                  metadata_json="not json")  # ignored without save_metadata, as in A1111
    assert raw_metadata(plain.filename) is None
    fields = merge(primary_model_name="a", secondary_model_name="b", add_merge_recipe=False,
                   copy_metadata_fields=False, custom_name="fmt-only")
    assert raw_metadata(fields.filename) == {"format": "pt"}
    with pytest.raises(errors.InvalidParameter, match="metadata_json"):
        merge(primary_model_name="a", secondary_model_name="b", metadata_json="[1]", custom_name="bad-meta")


def test_config_beside_an_input_is_copied(env):
    (env / "c.yaml").write_text("model: {}\n")
    try:
        result = merge(primary_model_name="a", secondary_model_name="b", tertiary_model_name="c",
                       interp_method="Add difference", custom_name="with-config")
        assert result.config_filename == str(env / "with-config.yaml")
        assert (env / "with-config.yaml").read_text() == "model: {}\n"
        skipped = merge(primary_model_name="a", secondary_model_name="b", tertiary_model_name="c",
                        interp_method="Add difference", custom_name="no-config", config_source=3)
        assert skipped.config_filename is None and not (env / "no-config.yaml").exists()
    finally:
        (env / "c.yaml").unlink()


# --- registry, loading, generation ----------------------------------------------------------------

def test_result_is_listed_loads_and_generates(env, states):
    from modules import clip_tokenizer, processing
    result = merge(primary_model_name="a", secondary_model_name="b", multiplier=0.5, save_as_half=True,
                   custom_name="usable")
    info = sd_models.get_checkpoint_info("usable")
    assert result.checkpoint_info is not None and result.checkpoint_info.filename == info.filename == result.filename
    assert info.sha256 == sha256(result.filename) and info.title == f"usable.safetensors [{info.sha256[:10]}]"
    assert info.metadata["sd_merge_recipe"]["type"] == "webui"
    model = sd_models.load_model(info, dtype=torch.float32, dtype_vae=torch.float32)
    expected = (0.5 * states["a"][CONV_IN] + 0.5 * states["b"][CONV_IN]).half().float()
    assert torch.equal(model.unet.conv_in.weight, expected)
    if not clip_tokenizer.has_vocab(os.path.join(shared.data_paths.tokenizers_dir, sd_models.TOKENIZER_SUBDIR)):
        pytest.skip("CLIP tokenizer files not set up (python -m modules.clip_tokenizer)")
    shared.state.begin("test")
    try:
        res = processing.process_images(processing.StableDiffusionProcessingTxt2Img(
            prompt="a red cube", seed=1, steps=2, width=64, height=64, sampler_name="Euler",
            do_not_save_samples=True, do_not_save_grid=True))
    finally:
        shared.state.end()
        shared.state.reset()
    assert res.images[0].size == (64, 64) and "usable" in res.infotexts[0]


def test_inpainting_result_loads_as_inpainting(env):
    result = merge(primary_model_name="inpaint", secondary_model_name="b", custom_name="inp")
    assert os.path.basename(result.filename) == "inp.inpainting.safetensors"
    model = sd_models.load_checkpoint(sd_models.get_checkpoint_info("inp.inpainting"), dtype=torch.float32)
    assert model.is_inpainting and model.unet.config.in_channels == 9


def test_run_modelmerger_a1111_signature(env, states):
    outputs = extras.run_modelmerger("task(x)", "a", "b", "", "Weighted sum", 0.6, False, "", "safetensors",
                                     0, "None", "", True, True, True, "{}")
    path = str(env / "0.4(a) + 0.6(b).safetensors")
    assert outputs[-1] == f"Checkpoint saved to {path}"
    assert len(outputs) == 5 and all(u["__type__"] == "update" for u in outputs[:4])
    titles = outputs[0]["choices"]
    assert any(t.startswith("0.4(a) + 0.6(b).safetensors") for t in titles)
    out = read(path)
    assert torch.equal(out[CONV_IN], (1 - 0.6) * states["a"][CONV_IN] + 0.6 * states["b"][CONV_IN])
    assert shared.state.textinfo == "Checkpoint saved"


# --- errors, and what is never written -------------------------------------------------------------

def test_existing_file_is_kept_unless_overwrite(env):
    first = merge(primary_model_name="a", secondary_model_name="b", custom_name="twice")
    before = open(first.filename, "rb").read()
    with pytest.raises(errors.InvalidParameter, match="already exists") as e:
        merge(primary_model_name="a", secondary_model_name="c", custom_name="twice")
    assert e.value.field == "custom_name" and open(first.filename, "rb").read() == before
    merge(primary_model_name="a", secondary_model_name="c", custom_name="twice", overwrite=True)
    assert open(first.filename, "rb").read() != before
    assert not [f for f in listing(env) if f.endswith(".tmp")]


def test_write_new_file_does_not_clobber_a_file_that_appears_meanwhile(tmp_path):
    target = tmp_path / "x.safetensors"

    def save(tmp: str) -> None:
        target.write_bytes(b"someone else")  # appears while the merge is being written
        open(tmp, "wb").write(b"merge")
    with pytest.raises(errors.InvalidParameter, match="already exists"):
        extras.write_new_file(str(target), save)
    assert target.read_bytes() == b"someone else" and os.listdir(tmp_path) == ["x.safetensors"]


def test_interrupted_write_leaves_nothing(env, monkeypatch):
    def broken_save(tensors, filename, metadata=None):
        open(filename, "wb").write(b"partial")
        raise KeyboardInterrupt
    before = listing(env)
    monkeypatch.setattr(safetensors.torch, "save_file", broken_save)
    with pytest.raises(KeyboardInterrupt):
        merge(primary_model_name="a", secondary_model_name="b", custom_name="interrupted")
    assert listing(env) == before


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs-merge", "sub/../../escape", "nul\x00name", ""])
def test_output_outside_the_checkpoint_folder_is_refused(env, name):
    if name == "":  # the empty custom name means "derive it": test the guard directly
        with pytest.raises(errors.InvalidParameter):
            extras.output_path(str(env), "")
        return
    before = listing(env.parent)
    with pytest.raises(errors.InvalidParameter, match="custom_name|outside|plain") as e:
        merge(primary_model_name="a", secondary_model_name="b", custom_name=name)
    assert e.value.field == "custom_name" and listing(env.parent) == before
    assert not os.path.exists("/tmp/abs-merge.safetensors")


def test_subfolder_inside_the_checkpoint_folder_is_allowed(env):
    result = merge(primary_model_name="a", secondary_model_name="b", custom_name="sub/inner")
    assert result.filename == str(env / "sub" / "inner.safetensors")
    assert sd_models.get_checkpoint_info("sub/inner.safetensors").filename == result.filename


def test_unknown_and_missing_models(env):
    with pytest.raises(errors.CheckpointNotFound, match="primary model 'nope' not found.*a.safetensors") as e:
        merge(primary_model_name="nope", secondary_model_name="b")
    assert e.value.field == "primary_model_name"
    with pytest.raises(errors.CheckpointNotFound, match="secondary") as e:
        merge(primary_model_name="a", interp_method="Weighted sum")
    assert e.value.field == "secondary_model_name"
    with pytest.raises(errors.CheckpointNotFound, match="tertiary") as e:
        merge(primary_model_name="a", secondary_model_name="b", interp_method="Add difference")
    assert e.value.field == "tertiary_model_name"


def test_vanished_and_corrupt_inputs_are_named(env):
    before = listing(env)
    data = (env / "b.safetensors").read_bytes()
    (env / "broken.safetensors").write_bytes(data[: len(data) // 3])
    (env / "vanishing.safetensors").write_bytes(data)
    sd_models.list_models()
    (env / "vanishing.safetensors").unlink()
    try:
        with pytest.raises(errors.CheckpointLoadError, match="broken.safetensors"):
            merge(primary_model_name="a", secondary_model_name="broken", custom_name="from-broken")
        with pytest.raises(errors.CheckpointNotFound, match="vanishing.safetensors"):
            merge(primary_model_name="vanishing", secondary_model_name="b", custom_name="from-vanished")
    finally:
        (env / "broken.safetensors").unlink()
        sd_models.list_models()
    assert listing(env) == before


@pytest.mark.parametrize("field,value,match", [
    ("interp_method", "Sum", "interp_method"), ("checkpoint_format", "ckpt", "pickle"),
    ("checkpoint_format", "bin", "checkpoint_format"), ("multiplier", float("nan"), "finite"),
    ("config_source", 7, "config_source")])
def test_bad_request_values(env, field, value, match):
    with pytest.raises(errors.InvalidParameter, match=match) as e:
        merge(primary_model_name="a", secondary_model_name="b", custom_name="bad", **{field: value})
    assert e.value.field == field and not (env / "bad.safetensors").exists()
