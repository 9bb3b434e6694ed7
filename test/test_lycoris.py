"""LyCORIS network types (LoCon, LoHa, LoKr, IA3, full, norm, DoRA) and key layouts (kohya diffusers/LDM names,
SDXL te1/te2, diffusers/peft): each type's weight change against peft's layers or the written-out formula,
jobs through the real pipeline on the demo checkpoint (image changes, weights restored byte for byte),
and files that do not fit (the job goes on, its comments say which network and why)."""
from __future__ import annotations

import logging
import os
import re
import types

import pytest
import safetensors.torch
import torch

from modules import demo_checkpoint, demo_lycoris, lora_keys, lora_networks, lora_types, shared
from modules.lora_network import NetworkOnDisk
from job_helpers import empty_folder, image_bytes, job
from test_processing_helpers import env  # noqa: F401  (fixture)

peft = pytest.importorskip("peft")


def change(w: dict, orig: torch.Tensor, multiplier: float = 1.0, dyn_dim: int | None = None,
           bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    module_type = lora_types.module_type_for(w)
    assert module_type is not None, list(w)
    return lora_types.finalize(module_type, w, orig, bias, multiplier, dyn_dim)


# --- the weight change of each type, against peft's layers ---------------------------------------------

class Pair(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(16, 24)
        self.conv = torch.nn.Conv2d(32, 48, 3)


def _peft_factors(layer: torch.nn.Module, names: tuple[str, ...], gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random values for the peft layer's adapter tensors (set in place); returned by their file names."""
    w = {}
    with torch.no_grad():
        for name in names:
            holder = getattr(layer, name, None)
            if holder is None or "default" not in holder:
                continue
            param = holder["default"]
            param = param.weight if isinstance(param, torch.nn.Module) else param
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
            w[name] = param.detach().clone()
    return w


ORACLE_CASES = [
    ("lora", lambda: peft.LoraConfig(r=4, lora_alpha=2, target_modules=["lin", "conv"]), ("lora_A", "lora_B")),
    ("loha", lambda: peft.LoHaConfig(r=4, alpha=3, target_modules=["lin", "conv"]), None),
    ("loha-tucker", lambda: peft.LoHaConfig(r=4, alpha=3, target_modules=["lin", "conv"],
                                            use_effective_conv2d=True), None),
    ("lokr", lambda: peft.LoKrConfig(r=2, alpha=3, target_modules=["lin", "conv"]), None),
    ("lokr-both-tucker", lambda: peft.LoKrConfig(r=2, alpha=3, target_modules=["lin", "conv"], decompose_both=True,
                                                 use_effective_conv2d=True), None),
]
HADA = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2")
LOKR = ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2")


@pytest.mark.parametrize("case,config,names", ORACLE_CASES, ids=[c[0] for c in ORACLE_CASES])
@pytest.mark.parametrize("target", ["lin", "conv"])
def test_change_equals_peft_delta(case, config, names, target):
    """peft builds the layer and its factors; the same tensors under the file's names give the same change."""
    cfg = config()
    model = peft.inject_adapter_in_model(cfg, Pair())
    layer = getattr(model, target)
    gen = torch.Generator().manual_seed(len(case) * 7 + len(target))
    names = names or (HADA if case.startswith("loha") else LOKR)
    w = _peft_factors(layer, names, gen)
    if case == "lora":
        w = {"lora_down.weight": w["lora_A"], "lora_up.weight": w["lora_B"]}
    alpha = float(getattr(cfg, "lora_alpha", getattr(cfg, "alpha", 0)))
    w["alpha"] = torch.tensor(alpha)
    expected = layer.get_delta_weight("default").detach().to(torch.float64)
    if case.startswith("lokr") and "lokr_w1_b" not in w and "lokr_w2_b" not in w:
        expected = expected / layer.scaling["default"]  # both factors full: A1111 applies no alpha
    got, _ = change(w, layer.base_layer.weight.detach(), multiplier=1.0)
    assert got.shape == expected.shape
    assert torch.allclose(got.to(torch.float64), expected, atol=1e-5, rtol=1e-4), (got - expected).abs().max()
    assert expected.abs().max() > 1e-3
    half, _ = change(w, layer.base_layer.weight.detach(), multiplier=0.5)
    assert torch.allclose(half, got * 0.5, atol=1e-6)


def test_peft_names_and_dora_on_output_axis_equal_peft_dora():
    """peft's DoRA (a magnitude per output row) read as `dora_scale` [out, 1] gives peft's merged weight."""
    model = peft.inject_adapter_in_model(peft.LoraConfig(r=4, lora_alpha=8, use_dora=True, target_modules=["lin"]),
                                         Pair())
    layer = model.lin
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(torch.randn(4, 16, generator=gen) * 0.3)
        layer.lora_B["default"].weight.copy_(torch.randn(24, 4, generator=gen) * 0.3)
        magnitude = layer.lora_magnitude_vector["default"].weight
        magnitude.copy_(magnitude * (1 + 0.2 * torch.rand(magnitude.shape, generator=gen)))
    orig = layer.base_layer.weight.detach().clone()
    w = {"lora_A.weight": layer.lora_A["default"].weight.detach(), "lora_B.weight": layer.lora_B["default"].weight.detach(),
         "alpha": torch.tensor(8.0), "dora_scale": magnitude.detach().reshape(24, 1)}
    layer.merge()
    got, _ = change(w, orig)
    assert torch.allclose(orig + got, layer.base_layer.weight.detach(), atol=1e-5)


def test_lora_with_mid_equals_three_stacked_convs():
    """LoCon's Tucker form: 1×1 down, k×k mid, 1×1 up in a row equal one conv with the rebuilt change."""
    gen = torch.Generator().manual_seed(5)
    down, mid, up = (torch.randn(s, generator=gen) for s in ((3, 6, 1, 1), (3, 3, 3, 3), (5, 3, 1, 1)))
    x = torch.randn(2, 6, 9, 9, generator=gen)
    stacked = torch.nn.functional.conv2d(torch.nn.functional.conv2d(torch.nn.functional.conv2d(x, down), mid), up)
    w = {"lora_down.weight": down, "lora_mid.weight": mid, "lora_up.weight": up, "alpha": torch.tensor(3.0)}
    got, _ = change(w, torch.zeros(5, 6, 3, 3))
    assert torch.allclose(torch.nn.functional.conv2d(x, got), stacked, atol=1e-4)  # alpha/rank = 1


def test_dyn_dim_keeps_the_first_ranks_and_scale_overrides_alpha():
    gen = torch.Generator().manual_seed(9)
    down, up = torch.randn(4, 8, generator=gen), torch.randn(6, 4, generator=gen)
    w = {"lora_down.weight": down, "lora_up.weight": up, "alpha": torch.tensor(2.0)}
    got, _ = change(w, torch.zeros(6, 8), dyn_dim=2)
    assert torch.allclose(got, up[:, :2] @ down[:2] * 0.5, atol=1e-6)  # alpha / full rank, as A1111
    got, _ = change({**w, "scale": torch.tensor(0.25)}, torch.zeros(6, 8))
    assert torch.allclose(got, up @ down * 0.25, atol=1e-6)


def test_ia3_full_norm_and_dora_follow_their_formulas():
    gen = torch.Generator().manual_seed(11)
    orig = torch.randn(6, 4, generator=gen)
    vec_out, vec_in = torch.randn(6, generator=gen), torch.randn(4, generator=gen)
    got, _ = change({"weight": vec_out, "on_input": torch.tensor(False)}, orig, 0.5)
    assert torch.allclose(got, orig * vec_out[:, None] * 0.5)
    got, _ = change({"weight": vec_in, "on_input": torch.tensor(True)}, orig)
    assert torch.allclose(got, orig * vec_in[None, :])
    diff, diff_b = torch.randn(6, 4, generator=gen), torch.randn(6, generator=gen)
    got, bias = change({"diff": diff, "diff_b": diff_b, "alpha": torch.tensor(7.0)}, orig, 0.5, bias=torch.zeros(6))
    assert torch.allclose(got, diff * 0.5) and torch.allclose(bias, diff_b * 0.5)  # full: alpha not used
    w_norm, b_norm = torch.randn(6, generator=gen), torch.randn(6, generator=gen)
    got, bias = change({"w_norm": w_norm, "b_norm": b_norm}, torch.ones(6), 2.0, bias=torch.zeros(6))
    assert torch.allclose(got, w_norm * 2) and torch.allclose(bias, b_norm * 2)
    down, up = torch.randn(2, 4, generator=gen), torch.randn(6, 2, generator=gen)
    dora = torch.rand(1, 4, generator=gen) + 0.5
    got, _ = change({"lora_down.weight": down, "lora_up.weight": up, "alpha": torch.tensor(1.0), "dora_scale": dora},
                    orig, 0.5)
    merged = orig + up @ down * 0.5
    column_norm = merged.pow(2).sum(dim=0, keepdim=True).sqrt()  # one norm per input channel (A1111)
    assert torch.allclose(got, (merged * dora / column_norm - orig) * 0.5, atol=1e-6)
    magnitude = torch.rand(6, generator=gen) + 0.5  # 1-D, one per output row (out ≠ in)
    got, _ = change({"lora_down.weight": down, "lora_up.weight": up, "alpha": torch.tensor(1.0),
                     "dora_scale": magnitude}, orig)
    row_norm = merged.pow(2).sum(dim=1, keepdim=True).sqrt()
    assert torch.allclose(got, merged * magnitude[:, None] / row_norm - orig, atol=1e-6)


def test_shapes_that_do_not_fit_raise_with_both_shapes():
    w = {"lora_down.weight": torch.zeros(4, 768), "lora_up.weight": torch.zeros(320, 4)}
    with pytest.raises(lora_types.NetworkShapeError, match=r"\(320, 768\).*\(64, 64\)"):
        change(w, torch.zeros(64, 64))
    with pytest.raises(lora_types.NetworkShapeError):
        change({"weight": torch.zeros(5)}, torch.zeros(6, 4))


def test_registry_picks_the_type_from_the_keys():
    names = {t.name for t in lora_types.MODULE_TYPES}
    assert names == {"lora", "loha", "lokr", "ia3", "full", "norm"}
    assert lora_types.module_type_for({"oft_blocks": torch.zeros(1)}) is None
    assert isinstance(lora_types.module_type_for({"lokr_w1": 0, "lokr_w2_a": 0, "lokr_w2_b": 0}), lora_types.ModuleTypeLokr)


# --- key layouts --------------------------------------------------------------------------------------

def tiny_sdxl(device: str = "meta") -> types.SimpleNamespace:
    """An SDXL-shaped model (3-level UNet with attention from level 1, CLIP + CLIP with projection), random weights."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    unet_config = dict(demo_checkpoint.UNET_CONFIG, block_out_channels=(32, 64, 64), layers_per_block=2,
                       down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))
    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(**unet_config)
        te1 = CLIPTextModel(CLIPTextConfig(**demo_checkpoint.CLIP_CONFIG))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**dict(demo_checkpoint.CLIP_CONFIG, hidden_size=32)))
    return types.SimpleNamespace(unet=unet, text_encoder=te1, text_encoder_2=te2,
                                 config=types.SimpleNamespace(unet=unet_config))


def test_sdxl_kohya_ldm_names_te1_te2_and_peft_names_find_their_modules():
    model = tiny_sdxl()
    index = lora_keys.build_index(model)
    unet = dict(model.unet.named_modules())
    cases = {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q":
            ("unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"),
        "lora_unet_input_blocks_1_0_in_layers_2": ("unet", "down_blocks.0.resnets.0.conv1"),
        "lora_unet_middle_block_1_transformer_blocks_0_attn2_to_k":
            ("unet", "mid_block.attentions.0.transformer_blocks.0.attn2.to_k"),
        "lora_unet_output_blocks_0_1_proj_out": ("unet", "up_blocks.0.attentions.0.proj_out"),
        "lora_unet_output_blocks_2_2_conv": ("unet", "up_blocks.0.upsamplers.0.conv"),
        "lora_unet_down_blocks_2_attentions_1_transformer_blocks_0_ff_net_2":
            ("unet", "down_blocks.2.attentions.1.transformer_blocks.0.ff.net.2"),
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": ("text_encoder", "encoder.layers.0.self_attn.q_proj"),
        "lora_te2_text_model_encoder_layers_2_mlp_fc1": ("text_encoder_2", "encoder.layers.2.mlp.fc1"),
        "text_encoder_2.text_model.encoder.layers.1.self_attn.v_proj":
            ("text_encoder_2", "encoder.layers.1.self_attn.v_proj"),
        "unet.mid_block.attentions.0.proj_in": ("unet", "mid_block.attentions.0.proj_in"),
    }
    for key, (part, path) in cases.items():
        target = index[key]
        assert (target.part, target.path.removeprefix("text_model.")) == (part, path), key
        if part == "unet":
            assert target.module is unet[path]
    assert "lora_te2_text_model_encoder_layers_2_mlp_fc1" in index
    assert index["lora_te2_text_model_encoder_layers_0_self_attn_q_proj"].module.weight.shape == (32, 32)


def ending(model: torch.nn.Module, suffix: str) -> torch.nn.Module:
    """The one module of `model` whose path ends with `suffix` (transformers versions differ in the prefix)."""
    return next(m for n, m in model.named_modules() if n.endswith(suffix))


def test_sdxl_kohya_file_applies_to_the_named_modules_and_is_restored(tmp_path):
    """An SDXL-layout file (LDM UNet names, te1, te2) changes exactly its modules, by the LoRA rule."""
    model = tiny_sdxl("cpu")
    gen = torch.Generator().manual_seed(1)
    targets = {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k":
               model.unet.down_blocks[1].attentions[0].transformer_blocks[0].attn2.to_k,
               "lora_unet_output_blocks_3_0_in_layers_2": model.unet.up_blocks[1].resnets[0].conv1,
               "lora_te1_text_model_encoder_layers_0_self_attn_q_proj":
                   ending(model.text_encoder, "layers.0.self_attn.q_proj"),
               "lora_te2_text_model_encoder_layers_1_mlp_fc2": ending(model.text_encoder_2, "layers.1.mlp.fc2")}
    state = {}
    for key, module in targets.items():
        out_dim, in_dim = module.weight.shape[:2]
        kernel = tuple(module.weight.shape[2:])
        state[key + ".lora_down.weight"] = torch.randn(2, in_dim, *kernel, generator=gen)
        state[key + ".lora_up.weight"] = torch.randn(out_dim, 2, *((1, 1) if kernel else ()), generator=gen)
        state[key + ".alpha"] = torch.tensor(1.0)
    path = str(tmp_path / "xl.safetensors")
    safetensors.torch.save_file(state, path)
    before = {k: m.weight.detach().clone() for k, m in targets.items()}
    all_before = {n: p.detach().clone() for part in ("unet", "text_encoder", "text_encoder_2")
                  for n, p in getattr(model, part).named_parameters(prefix=part)}
    assert lora_networks.apply_networks(model, [(NetworkOnDisk("xl", path), 0.5, 1.0)]) == {}
    try:
        for key, module in targets.items():
            down, up = state[key + ".lora_down.weight"], state[key + ".lora_up.weight"]
            mult = 0.5 if key.startswith("lora_te") else 1.0
            expected = (up.flatten(1) @ down.flatten(1)).reshape(module.weight.shape) * 0.5 * mult
            assert torch.allclose(module.weight - before[key], expected, atol=1e-5), key
        changed = [n for part in ("unet", "text_encoder", "text_encoder_2")
                   for n, p in getattr(model, part).named_parameters(prefix=part) if not torch.equal(p, all_before[n])]
        assert len(changed) == len(targets)
    finally:
        lora_networks.restore()
    for part in ("unet", "text_encoder", "text_encoder_2"):
        for n, p in getattr(model, part).named_parameters(prefix=part):
            assert torch.equal(p, all_before[n]), n


def test_te_prefixes_per_family_as_a1111():
    """SD1/SD2: `lora_te_` and `lora_te1_` (A1111 takes both), no `lora_te2_`; SDXL: te1/te2, no `lora_te_`."""
    sdxl = tiny_sdxl()
    sd1 = lora_keys.build_index(types.SimpleNamespace(**{**vars(sdxl), "text_encoder_2": None}))
    key = "text_model_encoder_layers_0_self_attn_q_proj"
    assert sd1["lora_te_" + key] is sd1["lora_te1_" + key]
    assert not any(k.startswith("lora_te2_") for k in sd1)
    xl = lora_keys.build_index(sdxl)
    assert "lora_te1_" + key in xl and "lora_te2_" + key in xl and "lora_te_" + key not in xl


def test_split_key_for_kohya_and_peft_keys():
    assert lora_keys.split_key("lora_unet_a_b.lora_down.weight") == ("lora_unet_a_b", "lora_down.weight")
    assert lora_keys.split_key("lora_te_x.alpha") == ("lora_te_x", "alpha")
    assert lora_keys.split_key("unet.down_blocks.0.attn.to_q.lora_A.weight") == (
        "unet.down_blocks.0.attn.to_q", "lora_A.weight")
    assert lora_keys.split_key("text_encoder_2.text_model.q_proj.lora_B.weight") == (
        "text_encoder_2.text_model.q_proj", "lora_B.weight")
    groups = lora_keys.group_keys({"unet.mid_block.proj_in.lora_magnitude_vector": torch.ones(8),
                                   "unet.mid_block.proj_out.lora_magnitude_vector.weight": torch.ones(8)})
    assert groups["unet.mid_block.proj_in"]["dora_scale"].shape == (8, 1)
    assert groups["unet.mid_block.proj_out"]["dora_scale"].shape == (8, 1)  # peft's DoRA: per output row


def test_demo_files_are_deterministic_and_in_the_real_layouts(tmp_path):
    for kind in demo_lycoris.KINDS:
        a = demo_lycoris.write_demo_lycoris(str(tmp_path / f"a_{kind}.safetensors"), kind)
        b = demo_lycoris.write_demo_lycoris(str(tmp_path / f"b_{kind}.safetensors"), kind)
        assert open(a, "rb").read() == open(b, "rb").read(), kind
    keys = set(demo_lycoris.build_lycoris_state_dict("loha", "ldm"))
    assert "lora_unet_input_blocks_1_0_in_layers_2.hada_w1_a" in keys
    assert "lora_unet_output_blocks_2_0_out_layers_3.hada_t1" in keys
    assert "lora_te_text_model_encoder_layers_1_mlp_fc1.hada_w2_b" in keys
    assert "lora_unet_down_blocks_0_resnets_0_conv1.lokr_t2" in demo_lycoris.build_lycoris_state_dict("lokr")
    with pytest.raises(ValueError, match="peft"):
        demo_lycoris.build_lycoris_state_dict("loha", "peft")


# --- jobs on the demo checkpoint ----------------------------------------------------------------------

@pytest.fixture()
def folder(env):
    """An empty `<models>/Lora`, removed after the test."""
    with empty_folder(lora_networks.lora_dir()) as path:
        yield path
        lora_networks.restore()
    lora_networks.list_available_networks(force=True)


def all_weights() -> dict[str, torch.Tensor]:
    model = shared.sd_model
    out = {}
    for part in ("unet", "text_encoder"):
        for name, tensor in getattr(model, part).state_dict().items():
            out[f"{part}.{name}"] = tensor.detach().clone()
    return out


def assert_same_weights(before: dict[str, torch.Tensor]) -> None:
    after = all_weights()
    assert after.keys() == before.keys()
    for name, tensor in before.items():
        assert tensor.dtype == after[name].dtype and torch.equal(tensor, after[name]), name


@pytest.mark.parametrize("kind", demo_lycoris.KINDS)
def test_each_kind_changes_the_image_and_is_undone_exactly(folder, kind):
    demo_lycoris.write_demo_lycoris(os.path.join(folder, "sub", f"ly_{kind}.safetensors"), kind)
    before = all_weights()
    plain = job()
    res = job(prompt=f"a red cube <lora:ly_{kind}:1>")
    assert image_bytes(res) != image_bytes(plain), kind
    assert "Networks with errors" not in str(res.comments) and "Lora hashes" in res.infotexts[0]
    assert_same_weights(before)
    assert image_bytes(job()) == image_bytes(plain)


def test_every_demo_module_is_applied(folder):
    for kind in demo_lycoris.KINDS:
        entry = NetworkOnDisk(kind, demo_lycoris.write_demo_lycoris(os.path.join(folder, f"{kind}.safetensors"), kind))
        net = lora_networks.load_network(entry, shared.sd_model)
        assert len(net.modules) == len(demo_lycoris.MODULES[kind]) and not net.unmatched_keys, kind


def _applied_weights(entry: NetworkOnDisk, mult: float) -> dict[str, torch.Tensor]:
    lora_networks.apply_networks(shared.sd_model, [(entry, mult, mult)])
    try:
        return all_weights()
    finally:
        lora_networks.restore()


@pytest.mark.parametrize("kind", ["locon", "norm", "full"])
def test_ldm_layout_applies_the_same_change_as_diffusers_names(folder, kind):
    kohya = NetworkOnDisk("k", demo_lycoris.write_demo_lycoris(os.path.join(folder, "k.safetensors"), kind))
    ldm = NetworkOnDisk("l", demo_lycoris.write_demo_lycoris(os.path.join(folder, "l.safetensors"), kind, "ldm"))
    a, b = _applied_weights(kohya, 1.0), _applied_weights(ldm, 1.0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], v) for k, v in all_weights().items())


def test_peft_layout_reads_lora_a_b_without_alpha(folder):
    """peft files have no alpha (scale 1): at multiplier 0.5 they equal the kohya file (alpha/rank = 0.5)."""
    state = demo_lycoris.build_lycoris_state_dict("locon", "peft")
    assert "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight" in state
    kohya = {k: v for k, v in demo_lycoris.build_lycoris_state_dict("locon").items()
             if not k.startswith("lora_unet_down_blocks_0_resnets_0_conv1")}  # the Tucker conv has no peft form
    safetensors.torch.save_file(kohya, os.path.join(folder, "k.safetensors"))
    peft_path = demo_lycoris.write_demo_lycoris(os.path.join(folder, "p.safetensors"), "locon", "peft")
    a = _applied_weights(NetworkOnDisk("k", os.path.join(folder, "k.safetensors")), 1.0)
    b = _applied_weights(NetworkOnDisk("p", peft_path), 0.5)
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-3), k


def test_lyco_alias_and_dyn(folder):
    demo_checkpoint.write_demo_lora(os.path.join(folder, "plain.safetensors"))
    lora = job(prompt="a red cube <lora:plain:1>")
    assert image_bytes(job(prompt="a red cube <lyco:plain:1>")) == image_bytes(lora)
    assert image_bytes(job(prompt=f"a red cube <lora:plain:1:1:{demo_checkpoint.LORA_RANK}>")) == image_bytes(lora)
    dyn = job(prompt="a red cube <lora:plain:1:dyn=2>")
    assert image_bytes(dyn) != image_bytes(lora)


def test_networks_stack_in_order(folder):
    for kind in ("loha", "ia3"):
        demo_lycoris.write_demo_lycoris(os.path.join(folder, f"{kind}.safetensors"), kind)
    before = all_weights()
    both = job(prompt="a red cube <lora:loha:1> <lora:ia3:1>")
    one = job(prompt="a red cube <lora:loha:1>")
    assert image_bytes(both) != image_bytes(one)
    assert 'Lora hashes: "loha: ' in both.infotexts[0] and "ia3: " in both.infotexts[0]
    assert_same_weights(before)


# --- files that do not fit ----------------------------------------------------------------------------

def _wide_lora() -> dict[str, torch.Tensor]:
    """An SDXL-sized LoRA for a module the demo model has, under the same name (768-wide: shapes do not fit)."""
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k"
    return {key + ".lora_down.weight": torch.ones(4, 768), key + ".lora_up.weight": torch.ones(640, 4),
            key + ".alpha": torch.tensor(4.0)}


def test_bad_files_leave_the_job_and_the_weights_alone(folder):
    good = demo_lycoris.write_demo_lycoris(os.path.join(folder, "good.safetensors"), "loha")
    raw = open(good, "rb").read()
    open(os.path.join(folder, "truncated.safetensors"), "wb").write(raw[: len(raw) // 2])
    demo_checkpoint.write_demo_vae(os.path.join(folder, "notanetwork.safetensors"))
    mixed = {**demo_lycoris.build_lycoris_state_dict("lokr"), **_wide_lora()}  # most fit, one does not
    safetensors.torch.save_file(mixed, os.path.join(folder, "otherfamily.safetensors"))
    before = all_weights()
    plain, only_good = job(), job(prompt="a red cube <lora:good:1>")
    for bad, why in (("truncated", "cannot read"), ("notanetwork", "none of the"),
                     ("otherfamily", r"\(640, 768\) does not fit")):
        res = job(prompt=f"a red cube <lora:{bad}:1>")
        assert image_bytes(res) == image_bytes(plain), bad
        comment = next(c for c in res.comments.splitlines() if c.startswith("Networks with errors:"))
        assert bad in comment and re.search(why, comment), comment
        assert f'"{bad}: ' not in res.infotexts[0]
        assert_same_weights(before)
        with_good = job(prompt=f"a red cube <lora:{bad}:1> <lora:good:1>")
        assert image_bytes(with_good) == image_bytes(only_good), bad
    assert image_bytes(job()) == image_bytes(plain)


def test_keys_not_understood_are_logged_and_the_rest_applies(folder, caplog):
    state = {**demo_lycoris.build_lycoris_state_dict("full"),
             "lora_unet_no_such_module.lora_down.weight": torch.ones(2, 2),
             "lora_unet_no_such_module.lora_up.weight": torch.ones(2, 2),
             "lora_unet_down_blocks_1_attentions_0_proj_out.oft_blocks": torch.ones(2, 2, 2)}
    path = os.path.join(folder, "partial.safetensors")
    safetensors.torch.save_file(state, path)
    full = NetworkOnDisk("f", demo_lycoris.write_demo_lycoris(os.path.join(folder, "f.safetensors"), "full"))
    with caplog.at_level(logging.WARNING, logger="modules.lora_networks"):
        partial = _applied_weights(NetworkOnDisk("partial", path), 1.0)
    assert "lora_unet_no_such_module" in caplog.text and "proj_out" in caplog.text and path in caplog.text
    expected = _applied_weights(full, 1.0)
    assert all(torch.equal(partial[k], expected[k]) for k in partial)


def test_a_bias_change_on_a_module_without_bias_adds_one_and_restore_removes_it(tmp_path):
    """A1111 gives a bias-less module a bias for `diff_b`; Serena removes it again when the job ends."""
    linear = torch.nn.Linear(4, 3, bias=False)
    model = types.SimpleNamespace(unet=torch.nn.Sequential(linear), text_encoder=None, text_encoder_2=None)
    weight = linear.weight.detach().clone()
    diff, diff_b = torch.full((3, 4), 0.5), torch.tensor([1.0, 2.0, 3.0])
    path = str(tmp_path / "full.safetensors")
    safetensors.torch.save_file({"lora_unet_0.diff": diff, "lora_unet_0.diff_b": diff_b}, path)
    assert lora_networks.apply_networks(model, [(NetworkOnDisk("full", path), 1.0, 0.5)]) == {}
    try:
        assert torch.equal(linear.weight, weight + diff * 0.5) and torch.equal(linear.bias, diff_b * 0.5)
    finally:
        lora_networks.restore()
    assert linear.bias is None and torch.equal(linear.weight, weight)
