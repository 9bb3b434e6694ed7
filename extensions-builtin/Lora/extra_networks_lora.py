"""A1111's `extra_networks_lora`: the `lora` extra network class (Serena's, from `modules.lora_networks`)."""
from modules.lora_networks import ExtraNetworkLora

__all__ = ["ExtraNetworkLora"]
