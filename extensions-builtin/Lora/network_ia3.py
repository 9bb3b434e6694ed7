"""A1111's `network_ia3` module: its module type (Serena's, from `modules.lora_types`, where the rule is
written) and `NetworkModuleIa3`, which is Serena's one `NetworkModule` class (the type it holds computes
the change)."""
from modules.lora_network import NetworkModule
from modules.lora_types import ModuleTypeIa3

NetworkModuleIa3 = NetworkModule

__all__ = ["ModuleTypeIa3", "NetworkModuleIa3"]
