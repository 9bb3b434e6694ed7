"""Attention implementations (A1111's cross-attention optimizations, `modules.sd_attention`): each one
computes the same attention as plain softmax(q·kᵀ)·v on UNet-like and VAE-like layers, the chunked
ones really chunk, the choice follows A1111's option and flags, and a txt2img on the demo model is
deterministic per implementation, with the default leaving the model (and its images) as built."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from modules import processing, sd_attention, shared
from test_processing_helpers import env, fresh_state, max_diff, pixels  # noqa: F401  (fixtures)

SPLIT_METHODS = ["Doggettx", "V1", "InvokeAI", "sub-quadratic"]
ALL = ["sdp", "sdp-no-mem", *SPLIT_METHODS, "None"]


@pytest.fixture(autouse=True)
def default_attention_after():
    """The demo model is shared by the module's tests: put the default implementation back."""
    yield
    if shared.sd_model is not None:
        sd_attention.apply(shared.sd_model, "sdp")


# --- the computation ----------------------------------------------------------------------------------


def unet_self_attention() -> Attention:
    return Attention(query_dim=32, heads=4, dim_head=8)


def unet_cross_attention() -> Attention:
    return Attention(query_dim=32, cross_attention_dim=24, heads=4, dim_head=8)


def vae_attention() -> Attention:
    """Built like the VAE mid-block's attention in diffusers (one head, group norm, residual)."""
    return Attention(16, heads=1, dim_head=16, norm_num_groups=4, residual_connection=True, bias=True,
                     upcast_softmax=True, _from_deprecated_attn_block=True)


def run_layer(layer: Attention, processor, inputs: dict, dtype: torch.dtype) -> torch.Tensor:
    layer = layer.to(dtype)
    layer.set_processor(processor)
    with torch.no_grad():
        return layer(**{k: (v.to(dtype) if v.is_floating_point() else v) for k, v in inputs.items()})


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref).abs().max() / ref.abs().max())


def cases() -> list[tuple[str, Attention, dict]]:
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 70, 32, generator=g)  # 70 tokens: no chunk size used below divides it
    context = torch.randn(2, 77, 24, generator=g)
    bias = torch.zeros(2, 1, 77)
    bias[:, :, 60:] = -10000.0  # diffusers' form of an encoder attention mask (padding tokens masked)
    torch.manual_seed(1)
    return [
        ("unet-self", unet_self_attention(), {"hidden_states": hidden}),
        ("unet-cross", unet_cross_attention(), {"hidden_states": hidden, "encoder_hidden_states": context}),
        ("unet-cross-masked", unet_cross_attention(),
         {"hidden_states": hidden, "encoder_hidden_states": context, "attention_mask": bias}),
        ("vae", vae_attention(), {"hidden_states": torch.randn(1, 16, 9, 7, generator=g)}),  # spatial input
    ]


def small_chunks(monkeypatch) -> None:
    """Make Doggettx split these small layers (as if 20 kB were free) and sub-quadratic's threshold
    leave them chunked."""
    monkeypatch.setattr(sd_attention, "available_memory", lambda device: 20_000)


@pytest.mark.parametrize("name, invokeai_plan", [*((n, None) for n in ALL), ("InvokeAI", ("rows", 3)),
                                                 ("InvokeAI", ("query", 13))])
def test_each_implementation_matches_plain_attention(name, invokeai_plan, monkeypatch):
    small_chunks(monkeypatch)
    if invokeai_plan:  # layers this small are under any budget in whole MiB: take each split path by hand
        monkeypatch.setattr(sd_attention, "invokeai_plan", lambda *args: invokeai_plan)
    processor = sd_attention.make_processor(name, SimpleNamespace(sub_quad_q_chunk_size=24, sub_quad_kv_chunk_size=10,
                                                                  sub_quad_chunk_threshold=0))
    for label, layer, inputs in cases():
        reference = run_layer(layer, AttnProcessor(), inputs, torch.float64)
        out = run_layer(layer, processor, inputs, torch.float32)
        assert out.shape == reference.shape
        assert relative_error(out, reference) <= 1e-5, (name, label)


def test_sub_quadratic_really_chunks_keys_and_queries(monkeypatch):
    seen = []
    scores = sd_attention._scores

    def spy(q, k, *args):
        seen.append((q.shape[1], k.shape[1]))
        return scores(q, k, *args)

    monkeypatch.setattr(sd_attention, "_scores", spy)
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(3, n, 8, generator=g, dtype=torch.float64) for n in (70, 45, 45))
    out = sd_attention.attention_chunked(q, k, v, None, 8 ** -0.5, q_chunk=32, kv_chunk=10)
    assert len(seen) == math.ceil(70 / 32) * math.ceil(45 / 10)  # 3 query chunks × 5 key chunks
    assert max(s[0] for s in seen) == 32 and max(s[1] for s in seen) == 10 and min(s[1] for s in seen) == 5
    assert torch.allclose(out, sd_attention.attention_whole(q, k, v, None, 8 ** -0.5), rtol=0, atol=1e-12)


def test_split_plans_follow_the_memory():
    # Doggettx: one slice while the scores fit, powers of two beyond, an error past 64 slices
    assert sd_attention.doggettx_steps(16, 4096, 4096, 4, 10 * 2**30) == 1
    assert sd_attention.doggettx_steps(16, 4096, 4096, 4, 2**29) == 8  # 2.5 GiB needed, 0.5 free
    assert sd_attention.doggettx_steps(16, 4096, 4096, 4, None) == 1
    with pytest.raises(MemoryError):
        sd_attention.doggettx_steps(16, 4096, 4096, 4, 2**20)
    # InvokeAI: whole under the budget, then (batch × head) rows, then query slices
    assert sd_attention.invokeai_plan(16, 64, 64, 4, 32) == ("whole", 0)
    assert sd_attention.invokeai_plan(16, 4096, 2048, 4, 32) == ("rows", 1)  # 512 MiB: 16 slices of one row
    assert sd_attention.invokeai_plan(16, 4096, 4096, 4, 32) == ("query", 128)  # 1 GiB: 32 slices > 16 rows
    assert sd_attention.invokeai_plan(2, 4096, 4096, 4, 32) == ("query", 1024)
    # sub-quadratic: keys whole while q·kᵀ fits the threshold, else chunks no smaller than it allows
    assert sd_attention.sub_quad_kv_chunk(16, 4096, 4096, 40, 40, 4, None, None, 100 * 2**30) == 4096
    assert sd_attention.sub_quad_kv_chunk(16, 4096, 4096, 40, 40, 4, 512, 0, 100 * 2**30) == 512
    assert sd_attention.sub_quad_kv_chunk(16, 4096, 4096, 40, 40, 4, None, 0, None) == 64  # √4096
    assert sd_attention.sub_quad_kv_chunk(16, 4096, 4096, 40, 40, 4, 512, 50, 2**24) == 2**23 // (16 * 4 * 80)  # 1638


# --- choosing -----------------------------------------------------------------------------------------


def test_names_are_a1111_titles():
    assert sd_attention.names() == [
        "Doggettx", "sdp-no-mem - scaled dot product without memory efficient attention", "sdp - scaled dot product",
        "sub-quadratic", "V1 - original v1", "InvokeAI"]


def flags(**set_flags) -> SimpleNamespace:
    return SimpleNamespace(**set_flags)


@pytest.mark.parametrize("cmd_opts, option, expected", [
    (flags(), "Automatic", "sdp"),
    (None, "Automatic", "sdp"),
    (flags(), "no such thing", "sdp"),
    (flags(), "", "sdp"),
    (flags(opt_split_attention=True), "Automatic", "Doggettx"),
    (flags(opt_sub_quad_attention=True), "Automatic", "sub-quadratic"),
    (flags(opt_split_attention_v1=True), "Automatic", "V1"),
    (flags(opt_split_attention_invokeai=True), "Automatic", "InvokeAI"),
    (flags(opt_sdp_no_mem_attention=True), "Automatic", "sdp-no-mem"),
    (flags(opt_sdp_attention=True, opt_split_attention=True), "Automatic", "Doggettx"),  # A1111's priority
    (flags(xformers=True), "Automatic", "sdp"),
    (flags(disable_opt_split_attention=True, opt_split_attention=True), "Automatic", "None"),
    (flags(opt_split_attention=True), "sub-quadratic", "sub-quadratic"),  # the option wins over flags
    (flags(), "V1 - original v1", "V1"),
    (flags(), "sdp-no-mem - scaled dot product without memory efficient attention", "sdp-no-mem"),
    (flags(opt_sdp_attention=True), "None", "None"),
])
def test_choose_follows_option_then_flags(cmd_opts, option, expected):
    assert sd_attention.choose(cmd_opts, option) == expected


def test_choose_without_sdpa_is_plain_attention(monkeypatch):
    monkeypatch.delattr(torch.nn.functional, "scaled_dot_product_attention")
    assert sd_attention.choose(flags(), "Automatic") == "None"


def test_apply_skips_missing_parts():
    assert sd_attention.apply(SimpleNamespace(unet=None), "V1") == "V1"
    assert sd_attention.apply(object(), "Doggettx") == "Doggettx"


# --- on the demo model --------------------------------------------------------------------------------


def txt2img(seed: int = 77) -> processing.Processed:
    p = processing.StableDiffusionProcessingTxt2Img(
        prompt="a red cube", negative_prompt="blurry", seed=seed, steps=2, width=64, height=64, sampler_name="Euler",
        do_not_save_samples=True, do_not_save_grid=True)
    return processing.process_images(p)


def processors(model) -> list:
    return [*model.unet.attn_processors.values(), *model.vae.attn_processors.values()]


def test_default_leaves_the_built_model_and_its_images_unchanged():
    model = shared.sd_model
    before = processors(model)
    assert {type(p) for p in before} == {AttnProcessor2_0}  # what diffusers builds
    image = pixels(txt2img().images[0])
    assert shared.opts.cross_attention_optimization == "Automatic"
    assert sd_attention.apply(model) == "sdp" and sd_attention.current(model) == "sdp"
    assert all(a is b for a, b in zip(processors(model), before, strict=True))  # not even replaced
    assert np.array_equal(pixels(txt2img().images[0]), image)


@pytest.mark.parametrize("name", ["sdp-no-mem", *SPLIT_METHODS, "None"])
def test_each_implementation_is_deterministic_and_draws_the_same_picture(name, monkeypatch):
    sdp_image = txt2img().images[0]
    small_chunks(monkeypatch)  # the split methods take their split paths on the demo model
    monkeypatch.setattr(sd_attention, "invokeai_plan", lambda *args: ("query", 5))
    monkeypatch.setattr(shared.cmd_opts, "sub_quad_kv_chunk_size", 7)
    monkeypatch.setattr(shared.cmd_opts, "sub_quad_chunk_threshold", 0)
    assert sd_attention.apply(shared.sd_model, name) == name and sd_attention.current(shared.sd_model) == name
    first, second = txt2img().images[0], txt2img().images[0]
    assert first.tobytes() == second.tobytes()
    assert max_diff(first, sdp_image) <= 2  # the same attention, summed in another order


def test_option_selects_the_implementation_for_unet_and_vae(monkeypatch):
    monkeypatch.setitem(shared.opts.data, "cross_attention_optimization", "V1 - original v1")
    model = shared.sd_model
    assert sd_attention.apply(model) == "V1"
    assert all(isinstance(p, sd_attention.SplitAttnProcessor) and p.method == "V1" for p in processors(model))
    assert sd_attention.apply(model) == "V1"  # idempotent
    monkeypatch.setitem(shared.opts.data, "cross_attention_optimization", "Automatic")
    assert sd_attention.apply(model) == "sdp"
    assert {type(p) for p in processors(model)} == {AttnProcessor2_0}


def test_sdp_no_mem_equals_sdp_on_cpu():
    layer, inputs = unet_cross_attention(), cases()[1][2]
    assert torch.equal(run_layer(layer, AttnProcessor2_0(), inputs, torch.float32),
                       run_layer(layer, sd_attention.SdpNoMemAttnProcessor(), inputs, torch.float32))


def test_free_memory_on_the_cpu_is_the_systems_available_memory():
    free = sd_attention.available_memory(torch.device("cpu"))
    assert isinstance(free, int) and 0 < free
    with open("/proc/meminfo", encoding="ascii") as f:
        total = int(next(line for line in f if line.startswith("MemTotal:")).split()[1]) * 1024
    assert free <= total


def test_xformers_flag_uses_sdpa_and_says_so_once(monkeypatch, caplog):
    monkeypatch.setattr(shared.cmd_opts, "xformers", True)
    monkeypatch.setattr(sd_attention, "_xformers_logged", False)
    with caplog.at_level("INFO", logger=sd_attention.__name__):
        assert sd_attention.apply(shared.sd_model) == "sdp" and sd_attention.apply(shared.sd_model) == "sdp"
    assert [r.getMessage() for r in caplog.records if "xformers" in r.getMessage()] == [
        "--xformers: Serena has no xformers; attention uses PyTorch's scaled_dot_product_attention"]
