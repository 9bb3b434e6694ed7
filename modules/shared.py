"""Compatibility facade: the names A1111 scripts and extensions import from `modules.shared`.

It holds no logic and does no work at import. `webui.initialize()` (the composition root) fills
`cmd_opts`, `data_paths` and `opts` from the flags and config.json; until then they hold defaults,
so importing any module in any order is safe. `shared.opts` reads resolve a running job's
`override_settings` (see `modules.options`), and `shared.sd_model` is the loaded checkpoint.
"""
from __future__ import annotations

from typing import Any

from modules import cmd_args, options, paths, shared_state

cmd_opts = cmd_args.defaults()
data_paths: paths.DataPaths = paths.data_paths()
opts = options.Options()
state = shared_state.State()
OptionInfo = options.OptionInfo
prompt_styles = None  # a styles.StyleDatabase once webui.initialize() has read styles.csv

# A1111 names kept for extensions.
script_path = paths.script_path


def __getattr__(name: str) -> Any:
    if name == "sd_model":
        from modules import sd_models
        return sd_models.model_data.sd_model
    if name in ("data_path", "models_path"):
        return getattr(data_paths, name)
    if name == "sd_upscalers":
        from modules import upscaling  # A1111 keeps the upscaler list on shared
        return upscaling.sd_upscalers
    if name in ("hypernetworks", "loaded_hypernetworks", "reload_hypernetworks"):
        from modules.hypernetworks import hypernetwork  # A1111 keeps these on shared
        return getattr(hypernetwork, name)
    raise AttributeError(f"module 'modules.shared' has no attribute {name!r}")
