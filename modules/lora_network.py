"""The data a network is made of, with the names of A1111's Lora extension (`network.py`).

`NetworkOnDisk` is one file in the Lora folder; `Network` a file loaded for the current model (its
`modules`, the multipliers the prompt gave); `NetworkWeights` the tensors a file has for one module of
the model; `NetworkModule` one such module with its type (`modules.lora_types`), which computes the
change of the module's weight. `extensions-builtin/Lora/network.py` re-exports these names.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch

from modules import lora_types


class SdVersion(enum.Enum):
    """The model family a file was trained for, as its kohya metadata says (A1111's enum)."""
    Unknown = 1
    SD1 = 2
    SD2 = 3
    SDXL = 4


def detect_version(metadata: dict) -> SdVersion:
    """SDXL when `ss_base_model_version` starts with `sdxl_`, SD2 when `ss_v2` is True, SD1 with other metadata."""
    if str(metadata.get("ss_base_model_version", "")).startswith("sdxl_"):
        return SdVersion.SDXL
    if str(metadata.get("ss_v2", "")) == "True":
        return SdVersion.SD2
    return SdVersion.SD1 if metadata else SdVersion.Unknown


@dataclass
class NetworkOnDisk:
    """One network file: `name` is its stem (what prompts use), `alias` its `ss_output_name` or the stem."""
    name: str
    filename: str
    metadata: dict = field(default_factory=dict)
    hash: str | None = None

    @property
    def alias(self) -> str:
        alias = self.metadata.get("ss_output_name")
        return alias if isinstance(alias, str) and alias else self.name

    @property
    def is_safetensors(self) -> bool:
        return self.filename.lower().endswith(".safetensors")

    @property
    def shorthash(self) -> str:
        return (self.hash or "")[0:12]

    @property
    def sd_version(self) -> SdVersion:
        return detect_version(self.metadata)

    def get_alias(self) -> str:
        """The name the UI shows: the alias unless another file uses it too (A1111's forbidden aliases)."""
        from modules import lora_networks
        return self.name if self.alias.lower() in lora_networks.forbidden_network_aliases else self.alias

    def set_hash(self, value: str | None) -> None:
        self.hash = value or ""

    def read_hash(self) -> str:
        """The file's sha256 (addnet hash for .safetensors), cached in `cache.json` under `lora/<name>`."""
        if not self.hash:
            from modules import hashes
            self.hash = (self.metadata.get("sshs_model_hash")
                         or hashes.sha256(self.filename, "lora/" + self.name, use_addnet_hash=self.is_safetensors)
                         or "")
        return self.hash


@dataclass
class NetworkWeights:
    """A file's tensors for one module: `network_key` the file's prefix, `sd_key` the module (`part.path`),
    `w` the tensors by suffix (`lora_down.weight`, `alpha`, …), `sd_module` the model's module."""
    network_key: str
    sd_key: str
    w: dict[str, torch.Tensor]
    sd_module: torch.nn.Module


class Network:
    """A network loaded for the current model: its modules by file prefix and the prompt's multipliers."""

    def __init__(self, name: str, network_on_disk: NetworkOnDisk):
        self.name = name
        self.network_on_disk = network_on_disk
        self.te_multiplier = 1.0
        self.unet_multiplier = 1.0
        self.dyn_dim: int | None = None
        self.modules: dict[str, NetworkModule] = {}
        self.mtime: float | None = None
        self.mentioned_name: str | None = None
        self.unmatched_keys: list[str] = []  # file prefixes no module of the model (or no type) took

    def __repr__(self) -> str:
        return f"Network({self.name!r}, {len(self.modules)} modules)"


class NetworkModule:
    """One module of a network: its tensors, the model module they change, and its type (A1111's class)."""

    def __init__(self, net: Network, weights: NetworkWeights, module_type: lora_types.ModuleType | None = None):
        self.network = net
        self.network_key = weights.network_key
        self.sd_key = weights.sd_key
        self.sd_module = weights.sd_module
        self.w = weights.w
        self.module_type = module_type or lora_types.module_type_for(weights.w)
        weight = getattr(self.sd_module, "weight", None)
        self.shape = weight.shape if weight is not None else None
        self.alpha = float(weights.w["alpha"].item()) if "alpha" in weights.w else None
        self.scale = float(weights.w["scale"].item()) if "scale" in weights.w else None
        self.dora_scale = weights.w.get("dora_scale")

    @property
    def is_text_encoder(self) -> bool:
        return self.sd_key.startswith("text_encoder")

    def multiplier(self) -> float:
        """The network's te multiplier for a text-encoder module, its unet multiplier otherwise."""
        return self.network.te_multiplier if self.is_text_encoder else self.network.unet_multiplier

    def calc_updown(self, orig_weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight change, bias change or None) for `orig_weight` at this network's multiplier (float32)."""
        bias = getattr(self.sd_module, "bias", None)
        return lora_types.finalize(self.module_type, self.w, orig_weight, bias, self.multiplier(), self.network.dyn_dim)
