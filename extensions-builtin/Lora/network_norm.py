"""A1111's `network_norm` module: its module type (Serena's, from `modules.lora_types`, where the rule is
written) and `NetworkModuleNorm`, which is Serena's one `NetworkModule` class (the type it holds computes
the change)."""
from modules.lora_network import NetworkModule
from modules.lora_types import ModuleTypeNorm

NetworkModuleNorm = NetworkModule

__all__ = ["ModuleTypeNorm", "NetworkModuleNorm"]
