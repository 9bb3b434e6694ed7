"""A1111's `network` module (extensions-builtin/Lora/network.py): the names extension authors import.

A facade: the classes are Serena's own, from `modules.lora_network`; nothing is implemented here.
"""
from modules.lora_network import (
    Network,
    NetworkModule,
    NetworkOnDisk,
    NetworkWeights,
    SdVersion,
)
from modules.lora_types import ModuleType

__all__ = ["ModuleType", "Network", "NetworkModule", "NetworkOnDisk", "NetworkWeights", "SdVersion"]
