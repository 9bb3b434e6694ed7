"""LoRA (`<lora:name:mult>`, kohya key layout) through the real pipeline and the demo checkpoint:
weights patched for the job and restored exactly, `Lora hashes` infotext, unknown names, the
conditioning cache, and the weight delta checked against an independent computation."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import pytest
import torch

from modules import demo_checkpoint, extra_networks, infotext_utils, lora_networks, shared
from job_helpers import image_bytes, job
from test_processing_helpers import env  # noqa: F401  (fixture)

NAME = "demo"


@pytest.fixture()
def lora(env):
    """The demo LoRA as `<models>/Lora/demo.safetensors`; the folder removed afterwards."""
    folder = lora_networks.lora_dir()
    shutil.rmtree(folder, ignore_errors=True)
    path = demo_checkpoint.write_demo_lora(os.path.join(folder, NAME + ".safetensors"))
    yield path
    lora_networks.restore()
    shutil.rmtree(folder, ignore_errors=True)


def addnet_sha12(path: str) -> str:
    """sha256 of the tensor data after the safetensors JSON header (A1111's Lora hash), 12 hex."""
    raw = open(path, "rb").read()
    header = int.from_bytes(raw[:8], "little")
    return hashlib.sha256(raw[8 + header:]).hexdigest()[:12]


def touched_params() -> dict[str, torch.Tensor]:
    model = shared.sd_model
    names = [("unet", n) for n in demo_checkpoint.LORA_UNET_MODULES]
    names += [("te", n.removeprefix("text_model.")) for n in demo_checkpoint.LORA_TE_MODULES]
    modules = {"unet": dict(model.unet.named_modules()), "te": dict(model.text_encoder.named_modules())}
    out = {}
    for part, name in names:
        table = modules[part]
        module = table.get(name) or table["text_model." + name]
        out[f"{part}:{name}"] = module.weight
    return out


def test_demo_lora_file_is_deterministic_and_kohya_layout(tmp_path):
    a = demo_checkpoint.write_demo_lora(str(tmp_path / "a.safetensors"))
    b = demo_checkpoint.write_demo_lora(str(tmp_path / "b.safetensors"))
    assert open(a, "rb").read() == open(b, "rb").read()
    keys = demo_checkpoint.build_demo_lora_state_dict().keys()
    assert "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha" in keys


def test_parse_prompts_keeps_serena_parsing():
    texts, data = extra_networks.parse_prompts(["a <lora:x:0.5> b <hypernet:h:1>", "c <lora:y:1>"])
    assert texts == ["a  b ", "c "]
    assert data == {"lora": [["x", "0.5"]], "hypernet": [["h", "1"]]}
    assert extra_networks.parse_prompts([]) == ([], {})


def test_lora_changes_the_image_and_is_undone_exactly(lora):
    before_params = {k: v.detach().clone() for k, v in touched_params().items()}
    plain = job()
    with_lora = job(prompt=f"a red cube <lora:{NAME}:1>")
    assert image_bytes(with_lora) != image_bytes(plain)
    for name, param in touched_params().items():
        assert torch.equal(param, before_params[name]), name
    again = job()
    assert image_bytes(again) == image_bytes(plain)
    assert again.infotexts == plain.infotexts and "Lora hashes" not in again.infotexts[0]


def test_multiplier_zero_equals_the_job_without(lora):
    plain = job()
    zero = job(prompt=f"a red cube <lora:{NAME}:0>")
    assert image_bytes(zero) == image_bytes(plain)


def test_te_and_unet_multipliers_each_matter(lora):
    plain, both = job(), job(prompt=f"a red cube <lora:{NAME}:1>")
    te_only = job(prompt=f"a red cube <lora:{NAME}:1:0>")
    unet_only = job(prompt=f"a red cube <lora:{NAME}:0:1>")
    named = job(prompt=f"a red cube <lora:{NAME}:unet=1:te=0>")
    assert len({image_bytes(x) for x in (plain, both, te_only, unet_only)}) == 4
    assert image_bytes(named) == image_bytes(unet_only)


def test_lora_hashes_infotext(lora):
    res = job(prompt=f"a red cube <lora:{NAME}:0.7>")
    short = addnet_sha12(lora)
    assert f'Lora hashes: "{NAME}: {short}"' in res.infotexts[0]
    assert infotext_utils.parse_generation_parameters(res.infotexts[0])["Lora hashes"] == f"{NAME}: {short}"
    assert res.prompt == "a red cube <lora:demo:0.7>"


def test_unknown_name_does_not_fail_the_job(lora):
    plain = job()
    res = job(prompt="a red cube <lora:nosuchlora:1>")
    assert image_bytes(res) == image_bytes(plain)
    assert "Networks not found: nosuchlora" in res.comments
    assert "Lora hashes" not in res.infotexts[0]


def test_conditioning_cache_is_not_shared_across_text_encoder_patches(lora):
    shared.opts.set("persistent_cond_cache", True)
    try:
        plain = job()
        te_only = job(prompt=f"a red cube <lora:{NAME}:1:0>")
        assert image_bytes(te_only) != image_bytes(plain)   # not the cached unpatched conditioning
        assert image_bytes(job()) == image_bytes(plain)     # nor the patched one for the plain prompt
    finally:
        shared.opts.set("persistent_cond_cache", False)


def test_delta_matches_an_independent_computation(lora):
    """Each touched weight moves by up @ down * alpha / rank * multiplier (conv: per kernel tap)."""
    state = demo_checkpoint.build_demo_lora_state_dict()
    before = {k: v.detach().clone().to(torch.float64) for k, v in touched_params().items()}
    mult = 0.6
    entry = lora_networks.find_network(NAME)
    lora_networks.apply_networks(shared.sd_model, [(entry, mult, mult)])
    try:
        after = {k: v.detach().clone().to(torch.float64) for k, v in touched_params().items()}
    finally:
        lora_networks.restore()
    names = [("unet", n) for n in demo_checkpoint.LORA_UNET_MODULES]
    names += [("te", n.removeprefix("text_model.")) for n in demo_checkpoint.LORA_TE_MODULES]
    for (part, name), full in zip(names, demo_checkpoint.LORA_UNET_MODULES + demo_checkpoint.LORA_TE_MODULES):
        key = ("lora_unet_" if part == "unet" else "lora_te_") + full.replace(".", "_")
        down = state[key + ".lora_down.weight"].to(torch.float64)
        up = state[key + ".lora_up.weight"].to(torch.float64)
        alpha = float(state[key + ".alpha"])
        rank = down.shape[0]
        if down.dim() == 4:  # conv: delta[o, i, y, x] = sum_r up[o, r] * down[r, i, y, x]
            expected = torch.einsum("or,riyx->oiyx", up[:, :, 0, 0], down)
        else:
            expected = torch.einsum("or,ri->oi", up, down)
        expected = expected * (alpha / rank) * mult
        got = after[f"{part}:{name}"] - before[f"{part}:{name}"]
        tol = 1e-5 if touched_params()[f"{part}:{name}"].dtype == torch.float32 else 2e-3
        assert got.shape == expected.shape, name
        assert torch.allclose(got, expected, atol=tol, rtol=0), (name, (got - expected).abs().max())
        assert expected.abs().max() > 1e-3, name   # the delta is not trivially zero


def test_missing_lora_folder_lists_nothing(env, tmp_path, monkeypatch):
    monkeypatch.setattr(shared.cmd_opts, "lora_dir", str(tmp_path / "none"), raising=False)
    assert lora_networks.list_available_networks(force=True) == {}
    res = job(prompt="a red cube <lora:demo:1>")
    assert "Networks not found: demo" in res.comments
    json.dumps(res.js())  # the job's info still serializes


def test_key_mapping_and_alpha_agree_with_diffusers_conversion(lora):
    """diffusers' kohya → diffusers conversion (offline, without its peft loader) names the same modules
    and alpha: the delta built from its output equals the one we apply."""
    from diffusers.loaders import lora_conversion_utils
    converted, alphas = lora_conversion_utils._convert_non_diffusers_lora_to_diffusers(
        dict(demo_checkpoint.build_demo_lora_state_dict()))
    model = shared.sd_model
    modules = {"unet": dict(model.unet.named_modules()), "text_encoder": dict(model.text_encoder.named_modules())}
    checked = set()
    for key in converted:
        for marker in (".lora.down.weight", ".lora_linear_layer.down.weight"):
            if not key.endswith(marker):
                continue
            base = key[: -len(marker)]
            part, path = base.split(".", 1)
            table = modules[part]
            module = table.get(path) or table[path.removeprefix("text_model.")]
            down = converted[key].to(torch.float64)
            up = converted[key.replace(".down.weight", ".up.weight")].to(torch.float64)
            alpha = alphas.get(base + ".alpha", alphas.get(key + ".alpha"))
            expected = (up.flatten(1) @ down.flatten(1) * (alpha / down.shape[0])).reshape(module.weight.shape)
            before = module.weight.detach().clone().to(torch.float64)
            lora_networks.apply_networks(model, [(lora_networks.find_network(NAME), 1.0, 1.0)])
            try:
                got = module.weight.detach().to(torch.float64) - before
            finally:
                lora_networks.restore()
            assert torch.allclose(got, expected, atol=1e-5, rtol=0), base
            checked.add(part)
    assert checked == {"unet", "text_encoder"}


def test_hires_prompt_lora_is_activated_for_the_second_pass(lora):
    hires = dict(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=2)
    before = {k: v.detach().clone() for k, v in touched_params().items()}
    plain = job(**hires)
    hr_only = job(**hires, hr_prompt=f"a red cube <lora:{NAME}:1>")
    assert image_bytes(hr_only) != image_bytes(plain)
    assert f'Lora hashes: "{NAME}: {addnet_sha12(lora)}"' in hr_only.infotexts[0]
    both = job(**dict(hires, prompt=f"a red cube <lora:{NAME}:1>"))   # hr prompt = prompt: same networks
    assert image_bytes(both) not in (image_bytes(plain), image_bytes(hr_only))
    for name, param in touched_params().items():
        assert torch.equal(param, before[name]), name
    assert image_bytes(job(**hires)) == image_bytes(plain)
