"""Fixed locations inside the install. Data locations depend on flags and live in `modules.shared`.

Nothing here reads argv or touches the disk: `script_path` is the repository root, and every
user-data folder is derived from `--data-dir` / `--models-dir` by :func:`data_paths`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

script_path: str = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
tokenizers_dir: str = os.path.join(script_path, "models", "tokenizers")


@dataclass(frozen=True)
class DataPaths:
    """Every user-data folder, resolved once from the command-line flags."""

    data_path: str
    models_path: str

    @property
    def sd_model_dir(self) -> str:
        return os.path.join(self.models_path, "Stable-diffusion")

    @property
    def vae_dir(self) -> str:
        return os.path.join(self.models_path, "VAE")

    @property
    def tokenizers_dir(self) -> str:
        """Tokenizer vocabularies are part of the install (written at set-up), not user data."""
        return tokenizers_dir

    @property
    def outputs_dir(self) -> str:
        return os.path.join(self.data_path, "outputs")

    @property
    def config_file(self) -> str:
        return os.path.join(self.data_path, "config.json")

    @property
    def styles_file(self) -> str:
        return os.path.join(self.data_path, "styles.csv")

    @property
    def hash_cache_file(self) -> str:
        return os.path.join(self.data_path, "cache.json")


def data_paths(data_dir: str | None = None, models_dir: str | None = None) -> DataPaths:
    """Resolve the data folders the way A1111 does: `<data>` defaults to the install root."""
    data = os.path.abspath(data_dir) if data_dir else script_path
    models = os.path.abspath(models_dir) if models_dir else os.path.join(data, "models")
    return DataPaths(data_path=data, models_path=models)


def __getattr__(name: str):
    """A1111's `modules.paths.data_path` / `models_path` (extensions import them): the current
    data folders from `shared.data_paths`, which follow `--data-dir` / `--models-dir`."""
    if name in ("data_path", "models_path"):
        from modules import shared
        return getattr(shared.data_paths, name)
    raise AttributeError(f"module 'modules.paths' has no attribute {name!r}")
