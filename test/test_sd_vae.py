"""VAE files (`modules.sd_vae`): listing, choosing by option and per job, the VAE beside a checkpoint,
infotext, and bad files — through the real loading code, on the demo checkpoint and demo VAE files."""
from __future__ import annotations

import hashlib
import os
import re
import shutil

import pytest
import safetensors.torch
import torch

from modules import demo_checkpoint, errors, infotext_utils, sd_models, sd_vae, shared
from job_helpers import image_bytes, job
from test_processing_helpers import close_env, make_env


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The processing test environment (demo checkpoint loaded) with option hooks and an empty VAE list."""
    mp, data = make_env(tmp_path_factory)
    sd_models.setup_option_hooks(shared.opts)
    sd_vae.vae_dict.clear()
    sd_vae._listing["done"] = False
    yield data
    sd_vae.vae_dict.clear()
    sd_vae._listing["done"] = False
    close_env(mp)


@pytest.fixture(scope="module")
def vae_file(env) -> str:
    """The demo VAE in `models/VAE`, listed."""
    path = demo_checkpoint.write_demo_vae(os.path.join(shared.data_paths.vae_dir, "tiny-vae.safetensors"))
    sd_vae.refresh_vae_list()
    return path


@pytest.fixture()
def model(env):
    """The current model with its own VAE, and the VAE options at their defaults, before and after."""
    def reset():
        shared.opts.data.pop("sd_vae", None)
        shared.opts.data.pop("sd_vae_overrides_per_model_preferences", None)
        sd_vae.reload_vae_weights(vae_file=None)
    reset()
    yield sd_models.model_data.sd_model
    reset()


def sha10(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()[:10]


# --- the demo VAE file -----------------------------------------------------------------------------

def test_demo_vae_file_has_the_ldm_vae_layout_and_fixed_bytes(env, tmp_path):
    a = demo_checkpoint.write_demo_vae(str(tmp_path / "a.safetensors"))
    b = demo_checkpoint.write_demo_vae(str(tmp_path / "b.safetensors"))
    assert open(a, "rb").read() == open(b, "rb").read()
    vae = safetensors.torch.load_file(a)
    checkpoint = safetensors.torch.load_file(os.path.join(shared.data_paths.sd_model_dir, "demo.safetensors"))
    own = {k[len("first_stage_model."):]: v for k, v in checkpoint.items() if k.startswith("first_stage_model.")}
    assert set(vae) == set(own)
    assert {k.split(".")[0] for k in vae} == {"encoder", "decoder", "quant_conv", "post_quant_conv"}
    assert all(vae[k].shape == own[k].shape for k in vae)
    assert not torch.equal(vae["decoder.conv_out.weight"], own["decoder.conv_out.weight"])  # other weights


def test_loaded_vae_decodes_as_diffusers_single_file_reader(model, vae_file, tmp_path):
    from diffusers import AutoencoderKL
    with torch.device("meta"):
        AutoencoderKL(**demo_checkpoint.VAE_CONFIG).save_config(str(tmp_path / "config"))
    oracle = AutoencoderKL.from_single_file(vae_file, config=str(tmp_path / "config"), torch_dtype=torch.float32)
    sd_vae.reload_vae_weights(model, vae_file=vae_file)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = model.vae.decode(latent).sample
        theirs = oracle.decode(latent).sample
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert model.decode_first_stage(latent * model.scale_factor).shape == (1, 3, 64, 64)


# --- listing ---------------------------------------------------------------------------------------

def test_listing_covers_vae_folder_and_files_beside_checkpoints(model, vae_file, tmp_path):
    vae_dir = shared.data_paths.vae_dir
    extra = [os.path.join(vae_dir, "sub", "Other-10.pt"), os.path.join(vae_dir, "Other-9.ckpt"),
             os.path.join(shared.data_paths.sd_model_dir, "elsewhere.vae.safetensors")]
    for path in extra:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        shutil.copy(vae_file, path)
    ignored = os.path.join(vae_dir, "notes.txt")
    open(ignored, "w").write("not a VAE")
    try:
        sd_vae.refresh_vae_list()
        assert list(sd_vae.vae_dict) == ["elsewhere.vae.safetensors", "Other-9.ckpt", "Other-10.pt",
                                         "tiny-vae.safetensors"]
        assert sd_vae.vae_dict["Other-10.pt"] == extra[0]
        assert sd_vae.vae_items()[-1] == {"model_name": "tiny-vae.safetensors", "filename": vae_file}
        assert "demo.safetensors" not in sd_vae.vae_dict  # checkpoints are not VAEs
        assert all(not name.endswith(".vae.safetensors") for name in sd_models.checkpoint_tiles())
    finally:
        for path in [*extra, ignored]:
            os.remove(path)
        sd_vae.refresh_vae_list()
    assert list(sd_vae.vae_dict) == ["tiny-vae.safetensors"]


# --- choosing --------------------------------------------------------------------------------------

def test_option_selects_the_file_and_none_restores_the_checkpoints_own(model, vae_file):
    own_vae = model.vae
    before = job()
    assert "VAE" not in infotext_utils.parse_generation_parameters(before.infotexts[0])
    shared.opts.set("sd_vae", "tiny-vae.safetensors")
    assert model.loaded_vae_file == vae_file and model.vae is not own_vae and model.base_vae is own_vae
    assert sd_vae.loaded_vae_file == vae_file and sd_vae.get_loaded_vae_name() == "tiny-vae.safetensors"
    with_vae = job()
    assert image_bytes(with_vae) != image_bytes(before)
    params = infotext_utils.parse_generation_parameters(with_vae.infotexts[0])
    assert params["VAE"] == "tiny-vae.safetensors" and params["VAE hash"] == sha10(vae_file)
    assert list(params).index("VAE hash") == list(params).index("VAE") - 1
    assert (with_vae.sd_vae_name, with_vae.sd_vae_hash) == ("tiny-vae.safetensors", sha10(vae_file))
    shared.opts.set("sd_vae", "None")
    assert model.vae is own_vae and model.loaded_vae_file is None and model.base_vae is None
    after = job()
    assert image_bytes(after) == image_bytes(before) and after.infotexts == before.infotexts


def test_override_settings_vae_is_for_that_job_only(model, vae_file):
    own_vae = model.vae
    before = job()
    with_vae = job(override_settings={"sd_vae": "tiny-vae.safetensors"})
    assert image_bytes(with_vae) != image_bytes(before)
    assert "VAE: tiny-vae.safetensors" in with_vae.infotexts[0]
    assert model.vae is own_vae and model.loaded_vae_file is None and shared.opts.sd_vae == "Automatic"
    after = job()
    assert image_bytes(after) == image_bytes(before) and after.infotexts == before.infotexts
    # the other way round: a file chosen globally, "None" for one job
    shared.opts.set("sd_vae", "tiny-vae.safetensors")
    file_vae = model.vae
    none_job = job(override_settings={"sd_vae": "None"})
    assert image_bytes(none_job) == image_bytes(before) and "VAE" not in none_job.infotexts[0]
    assert model.vae is file_vae and model.loaded_vae_file == vae_file
    assert image_bytes(job()) == image_bytes(with_vae)


def test_override_kept_when_the_request_says_so(model, vae_file):
    res = job(override_settings={"sd_vae": "tiny-vae.safetensors"}, override_settings_restore_afterwards=False)
    assert "VAE: tiny-vae.safetensors" in res.infotexts[0]
    assert shared.opts.sd_vae == "tiny-vae.safetensors" and model.loaded_vae_file == vae_file


def test_automatic_uses_the_vae_beside_the_checkpoint(model, vae_file):
    beside = os.path.join(shared.data_paths.sd_model_dir, "demo.vae.pt")
    state = safetensors.torch.load_file(vae_file)
    torch.save({"state_dict": state, "global_step": 1}, beside)  # a pickled VAE, read by safe_load
    try:
        reference = job(override_settings={"sd_vae": "tiny-vae.safetensors"})
        assert sd_vae.find_vae_near_checkpoint(model.sd_checkpoint_info.filename) == beside
        automatic = job()
        assert image_bytes(automatic) == image_bytes(reference)  # same weights, read from the .pt file
        assert "VAE: demo.vae.pt" in automatic.infotexts[0] and f"VAE hash: {sha10(beside)}" in automatic.infotexts[0]
        assert "VAE" not in job(override_settings={"sd_vae": "None"}).infotexts[0]  # None overrides (default)
        # with the overrides option off, the file beside the checkpoint wins over the option
        prefs = {"sd_vae": "None", "sd_vae_overrides_per_model_preferences": False}
        assert "VAE: demo.vae.pt" in job(override_settings=prefs).infotexts[0]
        sd_vae.reload_vae_weights()
        assert model.loaded_vae_file == beside
    finally:
        os.remove(beside)
        sd_vae.refresh_vae_list()
    sd_vae.reload_vae_weights()
    assert model.loaded_vae_file is None


def test_unknown_name_is_an_error_listing_the_known(model, vae_file):
    with pytest.raises(errors.CheckpointNotFound, match="'tiny-vae.safetensors'") as info:
        shared.opts.set("sd_vae", "missing.safetensors")
    assert info.value.field == "sd_vae" and shared.opts.sd_vae == "Automatic"
    with pytest.raises(errors.CheckpointNotFound, match="missing.safetensors"):
        job(override_settings={"sd_vae": "missing.safetensors"})
    assert model.loaded_vae_file is None


# --- bad files -------------------------------------------------------------------------------------

def _bad_files(folder: str, vae_file: str) -> dict[str, tuple[str, str]]:
    """name → (path, text the error must contain)."""
    good = open(vae_file, "rb").read()
    state = safetensors.torch.load_file(vae_file)
    files: dict[str, tuple[str, str]] = {}

    def put(name: str, data: bytes | dict, expect: str) -> None:
        path = os.path.join(folder, name)
        if isinstance(data, bytes):
            open(path, "wb").write(data)
        else:
            safetensors.torch.save_file(data, path)
        files[name] = (path, expect)

    put("truncated.safetensors", good[: len(good) // 2], "corrupt or truncated")
    put("renamed.safetensors", {k.replace("mid.", "middle."): v for k, v in state.items()}, "unexpected keys")
    put("checkpoint.safetensors", {"first_stage_model." + k: v for k, v in state.items()}, "holds no VAE weights")
    put("missing.safetensors", {k: v for k, v in state.items() if not k.startswith("post_quant_conv.")}, "missing keys")
    other = dict(demo_checkpoint.VAE_CONFIG, block_out_channels=(32, 32, 96, 96))
    path = demo_checkpoint.write_demo_vae(os.path.join(folder, "other-shape.safetensors"), vae_config=other)
    files["other-shape.safetensors"] = (path, "size mismatch")

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    torch.save({"encoder.conv_in.weight": torch.zeros(1), "x": Payload()}, os.path.join(folder, "code.pt"))
    files["code.pt"] = (os.path.join(folder, "code.pt"), "refused to load")
    return files


def test_bad_files_are_clear_errors_and_keep_the_previous_vae(model, vae_file):
    shared.opts.set("sd_vae", "tiny-vae.safetensors")
    file_vae = model.vae
    reference = job()
    bad = _bad_files(shared.data_paths.vae_dir, vae_file)
    sd_vae.refresh_vae_list()
    try:
        for name, (path, expect) in bad.items():
            with pytest.raises(errors.CheckpointLoadError) as info:
                shared.opts.set("sd_vae", name)
            assert path in str(info.value) and expect in str(info.value), (name, str(info.value))
            assert shared.opts.sd_vae == "tiny-vae.safetensors" and model.vae is file_vae
            with pytest.raises(errors.CheckpointLoadError, match=re.escape(path)):
                job(override_settings={"sd_vae": name})
            assert model.vae is file_vae and model.loaded_vae_file == vae_file
        assert image_bytes(job()) == image_bytes(reference)
    finally:
        for path, _ in bad.values():
            os.remove(path)
        sd_vae.refresh_vae_list()


def test_loading_a_checkpoint_applies_the_vae_beside_it(model, vae_file):
    beside = demo_checkpoint.write_demo_vae(os.path.join(shared.data_paths.sd_model_dir, "demo2.vae.safetensors"))
    try:
        other = sd_models.reload_model_weights(info=sd_models.get_checkpoint_info("demo2"))
        assert other.loaded_vae_file == beside and other.base_vae is not None
        assert sd_vae.get_loaded_vae_name() == "demo2.vae.safetensors"
        assert "VAE: demo2.vae.safetensors" in job().infotexts[0]
    finally:
        os.remove(beside)
        sd_vae.refresh_vae_list()
        demo = sd_models.reload_model_weights(info=sd_models.get_checkpoint_info("demo"))
    assert demo.loaded_vae_file is None and sd_vae.loaded_vae_file is None


def test_vae_dir_flag_is_listed_and_wins_a_name_clash(model, vae_file, tmp_path, monkeypatch):
    other = demo_checkpoint.write_demo_vae(str(tmp_path / "vae-dir" / "tiny-vae.safetensors"), salt="other")
    extra = demo_checkpoint.write_demo_vae(str(tmp_path / "vae-dir" / "deep" / "extra.safetensors"))
    monkeypatch.setattr(shared.cmd_opts, "vae_dir", str(tmp_path / "vae-dir"))
    try:
        sd_vae.refresh_vae_list()
        assert sd_vae.vae_dict == {"extra.safetensors": extra, "tiny-vae.safetensors": other}
        assert sd_vae.vae_folders() == [shared.data_paths.vae_dir, str(tmp_path / "vae-dir")]
    finally:
        monkeypatch.undo()
        sd_vae.refresh_vae_list()
    assert sd_vae.vae_dict == {"tiny-vae.safetensors": vae_file}
