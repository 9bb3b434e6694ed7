"""A1111's `networks` module (extensions-builtin/Lora/networks.py): the registries and functions extension
authors use, as views of Serena's implementation in `modules.lora_networks` (the same dict and list
objects, so changes are seen on both sides). Nothing is implemented here.

Serena patches the weights for a job and restores them after it, instead of A1111's per-forward hooks;
`load_networks` therefore applies the networks to the loaded model at once.
"""
from __future__ import annotations

from typing import Any

from modules import lora_networks, lora_types
from modules.lora_network import Network, NetworkOnDisk

available_networks = lora_networks.available_networks
available_network_aliases = lora_networks.available_network_aliases
available_network_hash_lookup = lora_networks.available_network_hash_lookup
forbidden_network_aliases = lora_networks.forbidden_network_aliases
loaded_networks = lora_networks.loaded_networks
module_types = lora_types.MODULE_TYPES

list_available_networks = lora_networks.list_available_networks
load_networks = lora_networks.load_networks


def load_network(name: str, network_on_disk: NetworkOnDisk) -> Network:
    """A1111's signature: the file's modules matched to the loaded model (`modules.lora_networks.load_network`)."""
    from modules import shared
    return lora_networks.load_network(network_on_disk, shared.sd_model, name)


def get_network_by_name(name: str) -> Any:
    """The listed network named (or aliased) `name`, or None."""
    return lora_networks.find_network(name)
