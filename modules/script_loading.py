"""A1111's `modules.script_loading`: import a Python file by path, and run extensions' `preload.py`.

Some extensions load a sibling file with `script_loading.load_module(path)` instead of importing
it; `preload_extensions` is A1111's signature over `modules.extensions.preload_extensions`, which
is what Serena's launcher runs before it parses the flags.
"""
from __future__ import annotations

import importlib.util
import os
from types import ModuleType
from typing import Any

loaded_scripts: dict[str, ModuleType] = {}
"""Every module `load_module` imported, by the path it was given (A1111 name)."""


def load_module(path: str) -> ModuleType:
    """Import the file at `path` as a new module named after the file ("name.py", as A1111 names
    script modules), remember it in `loaded_scripts` and return it. Each call imports it again.

    Raises:
        ImportError: `path` is not an importable Python file; whatever the file raises while it runs.
    """
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path!r} as a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    loaded_scripts[path] = module
    return module


def preload_extensions(extensions_dir: str, parser: Any, extension_list: list[str] | None = None) -> None:
    """Run `preload(parser)` of each extension folder's `preload.py` under `extensions_dir` (the
    names in `extension_list` only, when given), in name order. A failing one is reported with its
    traceback and the others still run."""
    from modules import extensions
    if not os.path.isdir(extensions_dir):
        return
    names = sorted(extension_list if extension_list is not None else os.listdir(extensions_dir))
    folders = [os.path.join(extensions_dir, name) for name in names
               if os.path.isfile(os.path.join(extensions_dir, name, "preload.py"))]
    extensions.preload_extensions(folders, parser)
