"""Checkpoint registry: titles, hashes, aliases, folders and flags (spec §1.6, §7, §8)."""
from __future__ import annotations

import json
import os

import pytest

from modules import cmd_args, errors, hashes, options, paths, sd_models, shared


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """A private data folder, fresh options and an empty registry; `env.flags(...)` sets the flags."""
    data = tmp_path / "data"
    monkeypatch.setattr(shared, "data_paths", paths.data_paths(str(data)))
    monkeypatch.setattr(shared, "opts", options.Options())
    monkeypatch.setenv("SD_WEBUI_CACHE_FILE", "")

    class Env:
        root = data
        models = data / "models" / "Stable-diffusion"

        @staticmethod
        def flags(*argv: str) -> None:
            monkeypatch.setattr(shared, "cmd_opts", cmd_args.parse(["--data-dir", str(data), *argv], environ={}))

        @staticmethod
        def put(relative: str, seed: int = 0, folder=None) -> str:
            path = (folder or Env.models) / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(bytes([seed]) * 16 + os.urandom(0x100000 + 0x10000))
            return str(path)

    Env.flags()
    Env.models.mkdir(parents=True)
    sd_models.checkpoints_list.clear()
    sd_models.checkpoint_aliases.clear()
    yield Env
    sd_models.checkpoints_list.clear()
    sd_models.checkpoint_aliases.clear()


def test_recursive_listing_excludes_vae_and_other_files(env):
    env.put("b.safetensors")
    env.put("a.ckpt")
    env.put("sub/c10.safetensors")
    env.put("sub/c9.safetensors")
    env.put("x.vae.safetensors")
    env.put("y.vae.ckpt")
    env.put("notes.txt")
    sd_models.list_models()
    names = [i.name for i in sd_models.checkpoints_list.values()]
    assert names == ["a.ckpt", "b.safetensors", os.path.join("sub", "c9.safetensors"),
                     os.path.join("sub", "c10.safetensors")]


def test_title_and_every_alias(env):
    path = env.put("sub/my model.safetensors")
    sd_models.list_models()
    info = sd_models.get_checkpoint_info("my model")
    sha = hashes.calculate_sha256(path)
    name = os.path.join("sub", "my model.safetensors")
    assert info.title == name and info.sha256 is None  # listing hashes nothing (A1111)
    assert info.calculate_shorthash() == sha[:10]       # what loading the file does
    assert info.sha256 == sha and info.shorthash == sha[:10]
    assert info.title == f"{name} [{sha[:10]}]"
    assert info.model_name == "sub_my model" and info.name_for_extra == "my model"
    assert info.hash == hashes.model_hash(path) and len(info.hash) == 8
    assert list(sd_models.checkpoints_list) == [info.title]
    for alias in (info.title, name, "sub_my model", "my model", info.hash, sha[:10], sha,
                  f"{name} [{sha[:10]}]", f"my model [{sha[:10]}]", f"{name} [{info.hash}]"):
        assert sd_models.checkpoint_aliases[alias] is info, alias
        assert sd_models.get_checkpoint_info(alias) is info, alias
    # closest match: a part of the title, or a title with a wrong hash
    assert sd_models.get_closet_checkpoint_match("my mod") is info
    assert sd_models.get_closet_checkpoint_match(f"{name} [0000000000]") is info


def test_hash_cache_is_persistent(env):
    path = env.put("m.safetensors")
    sd_models.list_models()
    assert not os.path.exists(shared.data_paths.hash_cache_file)  # listing alone hashes nothing
    sd_models.get_checkpoint_info("m").calculate_shorthash()  # as a load does
    cache = json.load(open(shared.data_paths.hash_cache_file))
    assert cache["hashes"]["checkpoint/m.safetensors"]["sha256"] == hashes.calculate_sha256(path)
    env.flags("--no-hashing")  # the cached hash keeps the title even with hashing off
    sd_models.list_models()
    assert next(iter(sd_models.checkpoints_list)).startswith("m.safetensors [")


def test_no_hashing(env):
    env.flags("--no-hashing")
    env.put("m.safetensors")
    sd_models.list_models()
    info = sd_models.get_checkpoint_info("m")
    assert info.title == "m.safetensors" and info.sha256 is None and info.shorthash is None
    assert not os.path.exists(shared.data_paths.hash_cache_file)


def test_unknown_alias_lists_known_titles(env):
    env.put("m.safetensors")
    sd_models.list_models()
    with pytest.raises(errors.CheckpointNotFound) as e:
        sd_models.get_checkpoint_info("nothing-like-it")
    assert "nothing-like-it" in str(e.value) and sd_models.checkpoint_tiles()[0] in str(e.value)


def test_ckpt_flag_is_registered_first_and_selected(env, tmp_path):
    outside = env.put("elsewhere.safetensors", folder=tmp_path / "other")
    env.put("a.safetensors")
    env.flags("--ckpt", outside)
    sd_models.list_models()
    titles = list(sd_models.checkpoints_list)
    assert titles[0] == "elsewhere.safetensors" and len(titles) == 2
    assert shared.opts.sd_model_checkpoint == titles[0]
    assert sd_models.select_checkpoint().filename == outside


def test_ckpt_dir_names_are_relative_to_it(env, tmp_path):
    extra = tmp_path / "extra"
    env.put("deep/x.safetensors", folder=extra)
    env.flags("--ckpt-dir", str(extra))
    sd_models.list_models()
    assert [i.name for i in sd_models.checkpoints_list.values()] == [os.path.join("deep", "x.safetensors")]


def test_select_checkpoint(env):
    with pytest.raises(errors.CheckpointNotFound, match="Stable-diffusion"):
        sd_models.select_checkpoint()
    env.put("a.safetensors")
    env.put("b.safetensors")
    sd_models.list_models()
    assert sd_models.select_checkpoint().name == "a.safetensors"
    shared.opts.data["sd_model_checkpoint"] = "b"
    assert sd_models.select_checkpoint().name == "b.safetensors"
    shared.opts.data["sd_model_checkpoint"] = "gone.safetensors [0123456789]"
    assert sd_models.select_checkpoint().name == "a.safetensors"


def test_calculate_shorthash_retitles(env):
    env.flags("--no-hashing")
    path = env.put("m.safetensors")
    sd_models.list_models()
    info = sd_models.get_checkpoint_info("m")
    env.flags()
    assert info.calculate_shorthash() == hashes.calculate_sha256(path)[:10]
    assert list(sd_models.checkpoints_list) == [info.title]
    assert sd_models.checkpoint_aliases[info.shorthash] is info


def test_yaml_config_near_checkpoint(env):
    from modules import sd_models_config
    path = env.put("m.safetensors")
    sd_models.list_models()
    info = sd_models.get_checkpoint_info("m")
    assert sd_models_config.find_checkpoint_config_near_filename(info) is None
    open(path[: -len(".safetensors")] + ".yaml", "w").close()
    assert sd_models_config.find_checkpoint_config_near_filename(info).endswith("m.yaml")


def test_safetensors_metadata_is_read_and_damage_tolerated(env):
    import safetensors.torch
    import torch
    safetensors.torch.save_file({"w": torch.zeros(1)}, str(env.models / "meta.safetensors"), metadata={"ss_x": "1"})
    env.put("damaged.safetensors")  # random bytes: not a safetensors header
    sd_models.list_models()
    assert sd_models.get_checkpoint_info("meta").metadata == {"ss_x": "1"}
    assert sd_models.get_checkpoint_info("damaged").metadata == {}
