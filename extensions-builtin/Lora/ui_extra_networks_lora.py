"""A1111's `ui_extra_networks_lora`: the "Lora" page of the extra-networks panel.

One card per listed LoRA/LyCORIS file (`networks.available_networks`); a click adds
`<lora:alias:w>` where w is the user metadata's "preferred weight" (when set) or option
`extra_networks_default_multiplier`, followed by its "activation text". The file's safetensors
metadata is the item's metadata (served by `/sd_extra_networks/metadata`).
"""
from __future__ import annotations

import os
from typing import Iterator

from modules import lora_networks, ui_extra_networks


def lora_prompt(alias: str, user_metadata: dict) -> str:
    """The text a click on the card adds: `<lora:alias:w>` then the activation text, if any."""
    weight = ui_extra_networks.default_multiplier()
    try:
        preferred = float(user_metadata.get("preferred weight") or 0)
    except (TypeError, ValueError):
        preferred = 0.0
    if preferred:
        weight = f"{preferred:g}"
    activation = str(user_metadata.get("activation text") or "").strip()
    return f"<lora:{alias}:{weight}>" + (f" {activation}" if activation else "")


class ExtraNetworksPageLora(ui_extra_networks.ExtraNetworksPage):
    serena_builtin = True

    def __init__(self) -> None:
        super().__init__("Lora")

    def refresh(self) -> None:
        lora_networks.list_available_networks(force=True)

    def create_item(self, name: str, index: int | None = None, enable_filter: bool = True) -> dict | None:
        """The card of network `name` (the folder is rescanned first when its files changed)."""
        lora_networks.list_available_networks()
        return self._item(name)

    def _item(self, name: str) -> dict | None:
        entry = lora_networks.available_networks.get(name)
        self.metadata.pop(name, None)
        if entry is None:
            return None
        alias = entry.get_alias()
        item = self.file_item(name, entry.filename, "", alias=alias, shorthash=entry.shorthash or None,
                              sd_version=entry.sd_version.name)
        if entry.metadata:
            item["metadata"] = entry.metadata
            self.metadata[name] = entry.metadata
        item["prompt"] = ui_extra_networks.quote_js(lora_prompt(alias, item.get("user_metadata") or {}))
        if alias != name:
            item["search_terms"].append(alias)
        return item

    def list_items(self) -> Iterator[dict]:
        lora_networks.list_available_networks()
        for name in list(lora_networks.available_networks):
            item = self._item(name)
            if item is not None:
                yield item

    def allowed_directories_for_previews(self) -> list[str]:
        return [os.path.abspath(lora_networks.lora_dir())]
