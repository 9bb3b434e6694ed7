"""The importable `extensions-builtin/Lora` surface: A1111's module and attribute names, as thin views of
Serena's implementation (the same objects), usable as extensions use them: list, load, inspect, rebuild."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest
import torch

from modules import demo_checkpoint, lora_network, lora_networks, lora_types, shared
from test_processing_helpers import close_env, make_env

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXTENSION = os.path.join(ROOT, "extensions-builtin", "Lora")
MODULES = ("networks", "network", "lora", "network_lora", "network_hada", "network_lokr", "network_ia3",
           "network_full", "network_norm", "lyco_helpers", "extra_networks_lora")


@pytest.fixture()
def ext(monkeypatch):
    """The extension folder on sys.path (as A1111 puts it); its modules imported, then forgotten."""
    monkeypatch.syspath_prepend(EXTENSION)
    yield {name: importlib.import_module(name) for name in MODULES}
    for name in MODULES:
        sys.modules.pop(name, None)


def test_a1111_names_exist_and_are_serenas_objects(ext):
    networks, network, lora = ext["networks"], ext["network"], ext["lora"]
    assert networks.available_networks is lora_networks.available_networks
    assert networks.available_network_aliases is lora_networks.available_network_aliases
    assert networks.loaded_networks is lora_networks.loaded_networks
    assert networks.list_available_networks is lora_networks.list_available_networks
    assert networks.load_networks is lora_networks.load_networks
    assert lora.available_loras is networks.available_networks and lora.loaded_loras is networks.loaded_networks
    assert lora.list_available_loras is networks.list_available_networks
    assert network.NetworkOnDisk is lora_network.NetworkOnDisk and network.Network is lora_network.Network
    assert network.NetworkModule is lora_network.NetworkModule and network.ModuleType is lora_types.ModuleType
    assert [m.name for m in network.SdVersion] == ["Unknown", "SD1", "SD2", "SDXL"]
    for mod, cls in (("network_lora", "Lora"), ("network_hada", "Hada"), ("network_lokr", "Lokr"),
                     ("network_ia3", "Ia3"), ("network_full", "Full"), ("network_norm", "Norm")):
        module_type = getattr(ext[mod], f"ModuleType{cls}")
        assert issubclass(module_type, network.ModuleType)
        assert any(isinstance(t, module_type) for t in networks.module_types), cls
        assert getattr(ext[mod], f"NetworkModule{cls}") is network.NetworkModule
    assert ext["extra_networks_lora"].ExtraNetworkLora is lora_networks.ExtraNetworkLora
    assert ext["lyco_helpers"].make_weight_cp is lora_types.make_weight_cp


def test_lyco_helpers_rebuild_and_factorize(ext):
    helpers = ext["lyco_helpers"]
    up, down = torch.randn(6, 2), torch.randn(2, 5)
    assert torch.allclose(helpers.rebuild_conventional(up, down, [6, 5]), up @ down)
    assert helpers.factorization(64) == (8, 8)
    assert helpers.factorization(320, 4) == (4, 80)
    assert helpers.factorization(96, 5) == (4, 24)
    assert helpers.factorization(7) == (1, 7)


def test_extension_modules_import_in_a_fresh_interpreter():
    """As an extension's script would: the folder on sys.path, Serena's root importable, nothing loaded."""
    code = ("import networks, network, lora, lyco_helpers, extra_networks_lora, network_lokr;"
            "print(type(networks.available_networks).__name__, network.SdVersion.SDXL.name)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([EXTENSION, ROOT]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["dict", "SDXL"]


@pytest.fixture()
def env(tmp_path_factory):
    mp, data = make_env(tmp_path_factory)
    folder = lora_networks.lora_dir()
    demo_checkpoint.write_demo_lora(os.path.join(folder, "nested", "demo.safetensors"))
    yield folder
    lora_networks.restore()
    close_env(mp)


def test_list_and_load_networks_as_an_extension_does(ext, env):
    networks, network = ext["networks"], ext["network"]
    networks.list_available_networks()
    entry = networks.available_networks["demo"]
    assert isinstance(entry, network.NetworkOnDisk) and entry.sd_version == network.SdVersion.Unknown
    unet = dict(shared.sd_model.unet.named_modules())
    to_q = unet["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"].weight
    before = to_q.detach().clone()
    missing = networks.load_networks(["nope", "demo"], te_multipliers=[1.0, 1.0], unet_multipliers=[1.0, 0.5])
    try:
        assert missing == ["nope"]
        assert len(networks.loaded_networks) == 1
        net = networks.loaded_networks[0]
        assert isinstance(net, network.Network) and net.mentioned_name == "demo" and net.unet_multiplier == 0.5
        module = net.modules["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"]
        assert isinstance(module, network.NetworkModule) and module.multiplier() == 0.5
        updown, ex_bias = module.calc_updown(before.float())
        assert ex_bias is None
        assert torch.allclose(to_q.detach().float(), (before.float() + updown).to(to_q.dtype).float())
        loaded = networks.load_network("demo", entry)
        assert set(loaded.modules) == set(net.modules)
    finally:
        lora_networks.restore()
    assert torch.equal(to_q, before) and networks.loaded_networks == []


def test_module_type_create_module(ext):
    network = ext["network"]
    net = network.Network("x", network.NetworkOnDisk("x", "x.safetensors"))
    linear = torch.nn.Linear(4, 3)
    weights = network.NetworkWeights("lora_unet_x", "unet.x",
                                     {"hada_w1_a": torch.ones(3, 2), "hada_w1_b": torch.ones(2, 4),
                                      "hada_w2_a": torch.ones(3, 2), "hada_w2_b": torch.ones(2, 4)}, linear)
    assert ext["network_lora"].ModuleTypeLora().create_module(net, weights) is None
    module = ext["network_hada"].ModuleTypeHada().create_module(net, weights)
    assert isinstance(module, network.NetworkModule)
    updown, _ = module.calc_updown(linear.weight.detach())
    assert torch.allclose(updown, torch.full((3, 4), 4.0))  # (2 * 2) elementwise, no alpha
