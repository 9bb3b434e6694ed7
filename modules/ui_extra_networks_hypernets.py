"""The "Hypernetworks" page of the extra-networks panel (A1111's page): one card per `.pt` file in
the hypernetworks folder; a click adds `<hypernet:name:1>` (option `extra_networks_default_multiplier`)."""
from __future__ import annotations

from typing import Iterator

from modules import ui_extra_networks


class ExtraNetworksPageHypernetworks(ui_extra_networks.ExtraNetworksPage):
    serena_builtin = True

    def __init__(self) -> None:
        super().__init__("Hypernetworks")

    def refresh(self) -> None:
        from modules.hypernetworks import hypernetwork
        hypernetwork.reload_hypernetworks()

    def create_item(self, name: str, index: int | None = None, enable_filter: bool = True) -> dict | None:
        from modules.hypernetworks import hypernetwork
        filename = hypernetwork.hypernetworks.get(name)
        if filename is None:
            return None
        tag = f"<hypernet:{name}:{ui_extra_networks.default_multiplier()}>"
        return self.file_item(name, filename, tag)

    def list_items(self) -> Iterator[dict]:
        from modules.hypernetworks import hypernetwork
        if not hypernetwork.hypernetworks:
            hypernetwork.reload_hypernetworks()
        for name in list(hypernetwork.hypernetworks):
            item = self.create_item(name)
            if item is not None:
                yield item

    def allowed_directories_for_previews(self) -> list[str]:
        from modules.hypernetworks import hypernetwork
        return [hypernetwork.hypernetwork_dir()]
