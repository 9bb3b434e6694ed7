"""A1111's `modules.paths_internal` names extensions import (`models_path`, `data_path`, …).

The values follow the data folders chosen by `--data-dir` / `--models-dir` (`shared.data_paths`);
they are looked up on each access, so an import made after start-up sees the real folders.
"""
from __future__ import annotations

import os

from modules.paths import script_path

modules_path = os.path.join(script_path, "modules")
cwd = os.getcwd()


def __getattr__(name: str):
    from modules import shared
    data = shared.data_paths
    if name in ("data_path", "models_path"):
        return getattr(data, name)
    if name == "default_output_dir":
        return data.outputs_dir
    if name == "extensions_dir":
        return os.path.join(data.data_path, "extensions")
    if name == "extensions_builtin_dir":
        return os.path.join(script_path, "extensions-builtin")
    if name == "config_states_dir":
        return os.path.join(script_path, "config_states")
    raise AttributeError(f"module 'modules.paths_internal' has no attribute {name!r}")
