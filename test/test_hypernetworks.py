"""Hypernetworks (`modules.hypernetworks`): the MLP against written-out formulas, A1111's file layout
read through the safe loader, the k/v hooks in the demo UNet's attention, and `<hypernet:…>` jobs
(image changed, undone exactly, multiplier 0, unknown and unreadable files)."""
from __future__ import annotations

import math
import os
import shutil

import pytest
import torch

from modules import demo_hypernetwork, errors, extra_networks, infotext_utils, shared
from modules.hypernetworks import attention_hooks, hypernetwork
from modules.hypernetworks.hypernetwork import HypernetworkModule
from job_helpers import image_bytes, job
from test_processing_helpers import close_env, make_env

W = 8  # width for the pure-math tests

FORMULAS = {
    "linear": lambda h: h,
    "relu": lambda h: torch.where(h > 0, h, torch.zeros_like(h)),
    "leakyrelu": lambda h: torch.where(h > 0, h, 0.01 * h),
    "elu": lambda h: torch.where(h > 0, h, torch.exp(h) - 1),
    "swish": lambda h: h * torch.clamp(h + 3, 0, 6) / 6,          # A1111 maps "swish" to Hardswish
    "tanh": lambda h: (torch.exp(h) - torch.exp(-h)) / (torch.exp(h) + torch.exp(-h)),
    "sigmoid": lambda h: 1 / (1 + torch.exp(-h)),
    "gelu": lambda h: 0.5 * h * (1 + torch.erf(h / math.sqrt(2))),
    "silu": lambda h: h / (1 + torch.exp(-h)),
    "softplus": lambda h: torch.log(1 + torch.exp(h)),
    "mish": lambda h: h * torch.tanh(torch.log(1 + torch.exp(h))),
    "relu6": lambda h: torch.clamp(h, 0, 6),
}


def random_state(structure: list, dim: int = W, seed: int = 0) -> dict[str, torch.Tensor]:
    """Linear weights for `linear.<index>` of a module without LayerNorm/Dropout, with activations
    between the Linears (so Linear i sits at index 2*i)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i in range(len(structure) - 1):
        n_in, n_out = int(dim * structure[i]), int(dim * structure[i + 1])
        state[f"linear.{2 * i}.weight"] = torch.randn(n_out, n_in, generator=g, dtype=torch.float64).float()
        state[f"linear.{2 * i}.bias"] = torch.randn(n_out, generator=g, dtype=torch.float64).float()
    return state


def by_formula(x: torch.Tensor, state: dict, act, multiplier: float, activate_output: bool) -> torch.Tensor:
    """x + multiplier * W2·act(W1·x + b1) + b2 (act on the output too when `activate_output`), float64."""
    x64 = x.double()
    w1, b1 = state["linear.0.weight"].double(), state["linear.0.bias"].double()
    w2, b2 = state["linear.2.weight"].double(), state["linear.2.bias"].double()
    hidden = act(x64 @ w1.T + b1)
    out = hidden @ w2.T + b2
    if activate_output:
        out = act(out)
    return x64 + out * multiplier


# --- the module ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(FORMULAS))
@pytest.mark.parametrize("activate_output", [False, True])
def test_module_equals_the_written_out_formula(name, activate_output):
    structure = [1, 2, 1]
    state = random_state(structure)    # activations have no weights, so Linear i is at index 2*i
    if name == "linear":                # "linear" adds no layer at all: the second Linear is at index 1
        state = {k.replace("linear.2.", "linear.1."): v for k, v in state.items()}
    module = HypernetworkModule(W, dict(state), structure, name, activate_output=activate_output)
    module.eval()
    module.multiplier = 0.7
    x = torch.randn(2, 5, W, generator=torch.Generator().manual_seed(1))
    got = module(x).double()
    state = {k.replace("linear.1.", "linear.2."): v for k, v in state.items()}
    expected = by_formula(x, state, FORMULAS[name], 0.7, activate_output)
    assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (got - expected).abs().max()


def test_layer_order_matches_a1111_state_dict_keys():
    module = HypernetworkModule(W, None, [1, 2, 2, 1], "relu", add_layer_norm=True, activate_output=False,
                                dropout_structure=[0, 0.3, 0.3, 0])
    kinds = [type(layer).__name__ for layer in module.linear]
    assert kinds == ["Linear", "ReLU", "LayerNorm", "Dropout", "Linear", "ReLU", "LayerNorm", "Dropout",
                     "Linear", "LayerNorm"]
    assert sorted({k.rsplit(".", 1)[0] for k in module.state_dict()}) == [
        "linear.0", "linear.2", "linear.4", "linear.6", "linear.8", "linear.9"]


def test_layer_norm_and_dropout_at_inference():
    module = HypernetworkModule(W, None, [1, 2, 1], "tanh", add_layer_norm=True, dropout_structure=[0, 0.3, 0],
                                generator=torch.Generator().manual_seed(3), weight_init="XavierNormal")
    module.eval()
    lin0, ln0, lin1, ln1 = module.linear[0], module.linear[2], module.linear[4], module.linear[5]
    x = torch.randn(3, W, generator=torch.Generator().manual_seed(4))

    def layer_norm(h, ln):
        mean, var = h.mean(-1, keepdim=True), h.var(-1, unbiased=False, keepdim=True)
        return (h - mean) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias

    hidden = layer_norm(torch.tanh(x @ lin0.weight.T + lin0.bias), ln0)       # dropout (index 3) is off
    expected = x + layer_norm(hidden @ lin1.weight.T + lin1.bias, ln1)
    assert torch.allclose(module(x), expected, atol=1e-5)
    assert torch.equal(module(x), module(x))


def test_old_keys_and_parse_dropout_structure():
    state = random_state([1, 1], seed=5)
    old = {"linear1.weight": state["linear.0.weight"], "linear1.bias": state["linear.0.bias"]}
    module = HypernetworkModule(W, old, [1, 1], None)
    assert torch.equal(module.linear[0].weight, state["linear.0.weight"])
    assert hypernetwork.parse_dropout_structure([1, 2, 2, 1], True, True) == [0, 0.3, 0.3, 0]
    assert hypernetwork.parse_dropout_structure([1, 2, 2, 1], True, False) == [0, 0.3, 0, 0]
    assert hypernetwork.parse_dropout_structure([1, 2, 1], False, True) == [0, 0, 0]


def test_bad_structures_and_activations_are_refused():
    with pytest.raises(ValueError, match="unsupported activation"):
        HypernetworkModule(W, None, [1, 2, 1], "nosuchfunction")
    with pytest.raises(ValueError, match="start and end with 1"):
        HypernetworkModule(W, None, [2, 1], "relu")


def test_several_hypernetworks_chain_in_order():
    a = demo_hypernetwork.build_demo_hypernetwork(salt="a", width=W)
    b = demo_hypernetwork.build_demo_hypernetwork(salt="b", width=W, activation_func="tanh")
    a.set_multiplier(0.5)
    x = torch.randn(2, 4, W)
    k, v = hypernetwork.apply_hypernetworks([a, b], x)
    assert torch.equal(k, b.layers[W][0](a.layers[W][0](x)))
    assert torch.equal(v, b.layers[W][1](a.layers[W][1](x)))
    assert not torch.equal(k, a.layers[W][0](b.layers[W][0](x)))
    other = torch.randn(2, 4, W + 1)                                  # no entry for this width: unchanged
    assert hypernetwork.apply_hypernetworks([a, b], other) == (other, other)


# --- files ---------------------------------------------------------------------------------------

def test_demo_file_is_a1111_layout_and_loads_equal(tmp_path):
    path = demo_hypernetwork.write_demo_hypernetwork(str(tmp_path / "hn.pt"))
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {64, *hypernetwork.METADATA_KEYS}
    assert isinstance(raw[64], tuple) and len(raw[64]) == 2
    assert (raw["layer_structure"], raw["activation_func"], raw["name"]) == ([1, 2, 1], "relu", "hn")
    loaded = hypernetwork.Hypernetwork()
    loaded.load(path)
    built = demo_hypernetwork.build_demo_hypernetwork(name="hn")
    for a, b in zip(loaded.layers[64], built.layers[64]):
        assert a.state_dict().keys() == b.state_dict().keys()
        assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert (loaded.name, loaded.step, loaded.sd_checkpoint_name) == ("hn", 100, "serena-demo-tiny")
    assert not loaded.layers[64][0].training


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    data = demo_hypernetwork.build_demo_hypernetwork().state_dict()
    data["optional_info"] = Payload()
    torch.save(data, str(tmp_path / "evil.pt"))
    with pytest.raises(errors.CheckpointLoadError, match="refused"):
        hypernetwork.Hypernetwork().load(str(tmp_path / "evil.pt"))
    assert not marker.exists()


def test_truncated_and_wrong_files_raise_naming_the_file(tmp_path):
    path = demo_hypernetwork.write_demo_hypernetwork(str(tmp_path / "cut.pt"))
    raw = open(path, "rb").read()
    open(path, "wb").write(raw[: len(raw) // 2])
    with pytest.raises(errors.CheckpointLoadError, match="cut.pt"):
        hypernetwork.Hypernetwork().load(path)
    torch.save({"string_to_param": {"*": torch.zeros(1, 64)}}, str(tmp_path / "emb.pt"))
    with pytest.raises(ValueError, match="emb.pt"):
        hypernetwork.Hypernetwork().load(str(tmp_path / "emb.pt"))


def test_listing_is_recursive_sorted_and_skips_none(tmp_path):
    for rel in ("b.pt", "sub/A.pt", "None.pt", "c.safetensors", "notes.txt"):
        os.makedirs(os.path.dirname(str(tmp_path / rel)), exist_ok=True)
        open(str(tmp_path / rel), "wb").close()
    listed = hypernetwork.list_hypernetworks(str(tmp_path))
    assert list(listed) == ["b", "A"]   # sorted by lower-cased path: ".../b.pt" < ".../sub/a.pt"
    assert listed["A"] == str(tmp_path / "sub" / "A.pt")


# --- jobs on the demo checkpoint -----------------------------------------------------------------

@pytest.fixture(scope="module")
def env(tmp_path_factory):
    mp, data = make_env(tmp_path_factory)
    yield data
    attention_hooks.hooks.remove()
    close_env(mp)


@pytest.fixture()
def folder(env):
    """`<models>/hypernetworks` with `demo.pt`; removed afterwards."""
    path = hypernetwork.hypernetwork_dir()
    shutil.rmtree(path, ignore_errors=True)
    demo_hypernetwork.write_demo_hypernetwork(os.path.join(path, "demo.pt"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
    hypernetwork.reload_hypernetworks()


def hooked_projections() -> int:
    unet = shared.sd_model.unet
    return sum(len(layer.to_k._forward_pre_hooks) + len(layer.to_v._forward_pre_hooks)
               for layer in attention_hooks.attention_layers(unet))


def test_hooks_give_a1111_k_and_v(folder):
    """With the hooks in, each attention layer's to_k/to_v see hyper_k/hyper_v of their input."""
    loaded = hypernetwork.read_hypernetwork(os.path.join(folder, "demo.pt"))
    loaded.set_multiplier(0.8)
    layers = attention_hooks.attention_layers(shared.sd_model.unet)
    assert {n.rsplit(".", 1)[-1] for n, m in shared.sd_model.unet.named_modules() if m in layers} == {"attn1", "attn2"}
    context = torch.randn(1, 77, 64, dtype=layers[0].to_k.weight.dtype)
    hypernetwork.loaded_hypernetworks[:] = [loaded]
    attention_hooks.hooks.install(shared.sd_model.unet)
    try:
        assert hooked_projections() == 2 * len(layers)
        with torch.no_grad():
            for layer in layers:
                k_ctx, v_ctx = hypernetwork.apply_hypernetworks([loaded], context)
                linear = torch.nn.functional.linear
                assert torch.equal(layer.to_k(context), linear(k_ctx, layer.to_k.weight, layer.to_k.bias))
                assert torch.equal(layer.to_v(context), linear(v_ctx, layer.to_v.weight, layer.to_v.bias))
    finally:
        hypernetwork.loaded_hypernetworks.clear()
        attention_hooks.hooks.remove()
    assert hooked_projections() == 0


def test_tag_changes_the_image_and_is_undone_exactly(folder):
    plain = job()
    res = job(prompt="a red cube <hypernet:demo:1>")
    assert image_bytes(res) != image_bytes(plain)
    assert hooked_projections() == 0 and hypernetwork.loaded_hypernetworks == []
    again = job()
    assert image_bytes(again) == image_bytes(plain) and again.infotexts == plain.infotexts
    assert res.prompt == "a red cube <hypernet:demo:1>"   # the tag is the record (no `Hypernet` key)
    assert "Hypernet" not in infotext_utils.parse_generation_parameters(res.infotexts[0])
    half = job(prompt="a red cube <hypernet:demo:0.5>")
    assert image_bytes(half) not in (image_bytes(plain), image_bytes(res))


def test_multiplier_zero_gives_the_untouched_image(folder):
    assert image_bytes(job(prompt="a red cube <hypernet:demo:0>")) == image_bytes(job())


def test_two_hypernetworks_apply_in_order(folder):
    demo_hypernetwork.write_demo_hypernetwork(os.path.join(folder, "other.pt"), salt="other", activation_func="tanh")
    one = image_bytes(job(prompt="a red cube <hypernet:demo:1>"))
    both = image_bytes(job(prompt="a red cube <hypernet:demo:1> <hypernet:other:1>"))
    swapped = image_bytes(job(prompt="a red cube <hypernet:other:1> <hypernet:demo:1>"))
    assert len({one, both, swapped}) == 3


def test_unknown_and_unreadable_files_leave_the_job_running(folder):
    plain = job()
    res = job(prompt="a red cube <hypernet:nosuch:1>")
    assert image_bytes(res) == image_bytes(plain)
    assert "Hypernetworks not found: nosuch" in res.comments
    path = os.path.join(folder, "cut.pt")
    raw = open(os.path.join(folder, "demo.pt"), "rb").read()
    open(path, "wb").write(raw[:100])
    res = job(prompt="a red cube <hypernet:cut:1>")
    assert image_bytes(res) == image_bytes(plain)
    assert "Hypernetworks not readable (see the log): cut" in res.comments


def test_hires_pass_uses_the_hires_prompts_hypernetworks(folder):
    hires = dict(enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=2)
    plain = job(**hires)
    hr_only = job(**hires, hr_prompt="a red cube <hypernet:demo:1>")
    assert image_bytes(hr_only) != image_bytes(plain)
    assert image_bytes(job(**hires)) == image_bytes(plain)


def test_registered_as_an_extra_network(env):
    extra_networks.register_default_extra_networks()
    assert type(extra_networks.extra_network_registry["hypernet"]).__name__ == "ExtraNetworkHypernet"


def test_add_hypernetwork_to_prompt_option_appends_the_tag(folder):
    """When an options table defines A1111's `sd_hypernetwork`, its hypernetwork joins every prompt."""
    from modules import options
    plain = job()
    tagged = job(prompt="a red cube <hypernet:demo:1>")
    shared.opts.add_option("sd_hypernetwork", options.OptionInfo("None", "Add hypernetwork to prompt"))
    try:
        shared.opts.set("sd_hypernetwork", "demo")
        res = job()
    finally:
        shared.opts.set("sd_hypernetwork", "None")
    assert image_bytes(res) == image_bytes(tagged) != image_bytes(plain)
    assert res.all_prompts == ["a red cube<hypernet:demo:1.0>"]


def test_new_networks_and_name_search(tmp_path, monkeypatch):
    for init in hypernetwork.WEIGHT_INITS:
        made = hypernetwork.Hypernetwork(enable_sizes=[W], layer_structure=[1, 2, 1], activation_func="leakyrelu",
                                         weight_init=init, generator=torch.Generator().manual_seed(0))
        k, v = made.layers[W]
        assert len(k.trainables()) == 4 and not torch.equal(k.linear[0].weight, v.linear[0].weight), init
        assert not any(p.requires_grad for p in made.weights())
    with pytest.raises(ValueError, match="unknown weight initialization"):
        hypernetwork.Hypernetwork(enable_sizes=[W], layer_structure=[1, 2, 1], weight_init="Bogus")
    monkeypatch.setattr(hypernetwork, "hypernetworks", {"anime_v2": "a.pt", "anime": "b.pt", "real": "c.pt"})
    assert hypernetwork.find_closest_hypernetwork_name("ANI") == "anime"
    assert hypernetwork.find_closest_hypernetwork_name("none") is None
