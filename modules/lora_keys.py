"""Which module of the loaded model a network file's key names, for every key layout A1111 reads.

The index is built from the model itself (`named_modules()` of each part), so any UNet/text encoder
config works; the names a file may use for one module are:

- kohya, diffusers names: `lora_unet_<UNet module path, dots as _>` (SD1/SD2 files, and SDXL files
  from some trainers: `lora_unet_down_blocks_…`);
- kohya, LDM/sgm names (SDXL files from sd-scripts, LyCORIS): `lora_unet_input_blocks_4_1_…`,
  `lora_unet_middle_block_…`, `lora_unet_output_blocks_…` — the UNet module's LDM name comes from the
  checkpoint conversion table (`sd_models_convert.unet_table(sd_model.config.unet)`), run backwards;
- text encoders: `lora_te_text_model_<path>` for `text_encoder` (SD1/SD2: both are transformers
  `CLIPTextModel`s in Serena; A1111 matches no `lora_te_` key on SDXL, nor does Serena);
  `lora_te1_text_model_…` → `text_encoder` (any model, as A1111) and, on a model with `text_encoder_2`
  (SDXL), `lora_te2_text_model_…` → `text_encoder_2` (transformers `CLIPTextModelWithProjection`, the
  same `text_model.` paths as kohya's HF-named te2 keys);
- diffusers/peft: `unet.<path>`, `text_encoder.<path>`, `text_encoder_2.<path>` followed by
  `.lora_A.weight` / `.lora_B.weight` (`text_model.` optional in the path).

Modules indexed: those with a weight a network type changes (Linear, Conv2d, LayerNorm, GroupNorm).
"""
from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from modules import sd_models_convert

PATCHABLE = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.LayerNorm, torch.nn.GroupNorm)
TEXT_PARTS = ("text_encoder", "text_encoder_2")
PEFT_PARTS = ("unet",) + TEXT_PARTS
# the suffixes a diffusers/peft key ends with (its network key is what comes before)
PEFT_SUFFIX = re.compile(r"\.(lora_[AB]\.weight|lora_magnitude_vector(?:\.weight)?|alpha)$")


@dataclass(frozen=True)
class Target:
    """One module of the model: its part (`unet`, `text_encoder`, `text_encoder_2`) and path in it."""
    part: str
    path: str
    module: torch.nn.Module

    @property
    def sd_key(self) -> str:
        return f"{self.part}.{self.path}"


def _modules(part: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in part.named_modules() if isinstance(m, PATCHABLE)]


def _underscored(path: str) -> str:
    return path.replace(".", "_")


def ldm_name(path: str, table: sd_models_convert.Table) -> str | None:
    """The LDM name of a diffusers UNet module path (e.g. `input_blocks.1.0.in_layers.2`); None if unmapped."""
    found = sd_models_convert._lookup(table.by_diffusers, path + ".weight")
    if found is None:
        return None
    row, rest = found
    return (row.ldm + sd_models_convert._rename_inner(rest, row.kind, reverse=True)).removesuffix(".weight")


def _unet_names(path: str, table: sd_models_convert.Table | None) -> list[str]:
    names = ["lora_unet_" + _underscored(path), "unet." + path]
    ldm = ldm_name(path, table) if table is not None else None
    if ldm is not None and ldm != path:
        names.append("lora_unet_" + _underscored(ldm))
    return names


def _text_names(part: str, path: str, sdxl: bool) -> list[str]:
    full = path if path.startswith("text_model.") else "text_model." + path  # transformers 5 drops the level
    names = [f"{part}.{full}", f"{part}.{full.removeprefix('text_model.')}"]
    if part == "text_encoder_2":
        return names + ["lora_te2_" + _underscored(full)]
    names.append("lora_te1_" + _underscored(full))  # A1111 takes te1 on SD1 too ("some SD1 Loras" use it)
    if not sdxl:  # on SDXL, A1111 matches no `lora_te_` key
        names.append("lora_te_" + _underscored(full))
    return names


def _unet_table(sd_model: Any) -> sd_models_convert.Table | None:
    """The LDM↔diffusers table of the model's UNet config (None when the model has no config or it fails)."""
    config = getattr(getattr(sd_model, "config", None), "unet", None)
    if config is None:
        return None
    try:
        return sd_models_convert.unet_table(config)
    except (KeyError, TypeError, ValueError):
        return None


def build_index(sd_model: Any) -> dict[str, Target]:
    """Every name a network file may use for a patchable module of `sd_model` → that module."""
    index: dict[str, Target] = {}
    table = _unet_table(sd_model)
    for path, module in _modules(sd_model.unet):
        target = Target("unet", path, module)
        for name in _unet_names(path, table):
            index.setdefault(name, target)
    sdxl = getattr(sd_model, "text_encoder_2", None) is not None
    for part in TEXT_PARTS:
        encoder = getattr(sd_model, part, None)
        if encoder is None:
            continue
        for path, module in _modules(encoder):
            target = Target(part, path, module)
            for name in _text_names(part, path, sdxl):
                index.setdefault(name, target)
    return index


_cache: dict[str, Any] = {"model": lambda: None, "index": None}


def _forget(_ref: Any) -> None:
    """The indexed model is gone: drop the index (it holds the model's modules)."""
    if _cache["model"] is _ref:
        _cache["model"], _cache["index"] = (lambda: None), None


def module_index(sd_model: Any) -> dict[str, Target]:
    """`build_index(sd_model)`, kept (by weak reference, so an unloaded model can be freed) for the last
    model asked about; a model that takes no weak reference is indexed each time."""
    if _cache["model"]() is sd_model:
        return _cache["index"]
    index = build_index(sd_model)
    try:
        _cache["model"], _cache["index"] = weakref.ref(sd_model, _forget), index
    except TypeError:
        pass
    return index


def split_key(key: str) -> tuple[str, str]:
    """A file key → (network key, suffix): kohya `lora_unet_x.lora_down.weight` splits at the first dot,
    diffusers/peft `unet.a.b.lora_A.weight` before its `lora_A`/`lora_B`/`alpha` suffix."""
    if key.startswith(tuple(p + "." for p in PEFT_PARTS)):
        match = PEFT_SUFFIX.search(key)
        if match:
            return key[:match.start()], match.group(1)
    network_key, _, suffix = key.partition(".")
    return network_key, suffix


def group_keys(state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """The file's tensors grouped by network key: {network key: {suffix: tensor}}."""
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        network_key, suffix = split_key(key)
        if suffix.startswith("lora_magnitude_vector"):  # peft's DoRA: one magnitude per output row
            suffix, tensor = "dora_scale", tensor.reshape(-1, 1)
        groups.setdefault(network_key, {})[suffix] = tensor
    return groups
