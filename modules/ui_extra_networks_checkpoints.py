"""The "Checkpoints" page of the extra-networks panel (A1111's page): one card per listed checkpoint;
a click loads that checkpoint (as the "Stable Diffusion checkpoint" dropdown does) instead of
changing the prompt."""
from __future__ import annotations

import os
from typing import Iterator

from modules import ui_extra_networks


class ExtraNetworksPageCheckpoints(ui_extra_networks.ExtraNetworksPage):
    serena_builtin = True
    selects_checkpoint = True

    def __init__(self) -> None:
        super().__init__("Checkpoints")
        self.allow_prompt = False

    def refresh(self) -> None:
        from modules import sd_models
        sd_models.list_models()

    def create_item(self, name: str, index: int | None = None, enable_filter: bool = True) -> dict | None:
        from modules import sd_models
        info = next((c for c in sd_models.checkpoints_list.values() if c.name_for_extra == name or c.name == name),
                    None)
        if info is None:
            return None
        item = self.file_item(info.name_for_extra, info.filename, "", title=info.title)
        item["shorthash"] = info.shorthash
        return item

    def list_items(self) -> Iterator[dict]:
        from modules import sd_models
        for info in list(sd_models.checkpoints_list.values()):
            item = self.create_item(info.name_for_extra)
            if item is not None:
                yield item

    def allowed_directories_for_previews(self) -> list[str]:
        from modules import sd_models, shared
        folders = [sd_models.sd_model_folder(), getattr(shared.cmd_opts, "ckpt_dir", None)]
        return [os.path.abspath(f) for f in folders if f]
