"""The "Textual Inversion" page of the extra-networks panel: one card per embedding (A1111's page).

A click adds the embedding's name to the prompt. Items come from the textual-inversion database
(`modules.textual_inversion.textual_inversion.embedding_db`), skipped embeddings included.
"""
from __future__ import annotations

import os
from typing import Iterator

from modules import ui_extra_networks


class ExtraNetworksPageTextualInversion(ui_extra_networks.ExtraNetworksPage):
    serena_builtin = True

    def __init__(self) -> None:
        super().__init__("Textual Inversion")
        self.allow_negative_prompt = True

    def refresh(self) -> None:
        """Reload the embedding files (needs the loaded model's text encoder; skipped without one)."""
        from modules import sd_models
        from modules.textual_inversion import textual_inversion
        if sd_models.model_data.sd_model is not None:
            textual_inversion.embedding_db.load_textual_inversion_embeddings(force_reload=True)

    def _embeddings(self) -> dict:
        from modules.textual_inversion import textual_inversion
        db = textual_inversion.embedding_db
        return {**db.word_embeddings, **db.skipped_embeddings}

    def create_item(self, name: str, index: int | None = None, enable_filter: bool = True) -> dict | None:
        embedding = self._embeddings().get(name)
        if embedding is None or not embedding.filename:
            return None
        item = self.file_item(embedding.name, embedding.filename, embedding.name)
        item["shorthash"] = embedding.shorthash
        return item

    def list_items(self) -> Iterator[dict]:
        for name in list(self._embeddings()):
            item = self.create_item(name)
            if item is not None:
                yield item

    def allowed_directories_for_previews(self) -> list[str]:
        from modules.textual_inversion import textual_inversion
        dirs = list(textual_inversion.embedding_db.embedding_dirs) or [textual_inversion.embeddings_dir()]
        return [os.path.abspath(d) for d in dirs]
