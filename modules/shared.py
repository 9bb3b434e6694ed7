"""Compatibility facade: the names A1111 scripts and extensions import from `modules.shared`.

It holds no logic and does no work at import. `webui.initialize()` (the composition root) fills
`cmd_opts`, `data_paths` and `opts` from the flags and config.json; until then they hold defaults,
so importing any module in any order is safe. `shared.opts` reads resolve a running job's
`override_settings` (see `modules.options`), and `shared.sd_model` is the loaded checkpoint.
"""
from __future__ import annotations

import logging
import os
import re
import sys
from typing import Any, Iterator

from modules import cmd_args, options, paths, shared_state

cmd_opts = cmd_args.defaults()
data_paths: paths.DataPaths = paths.data_paths()
opts = options.Options()
state = shared_state.StateFacade()
OptionInfo = options.OptionInfo
OptionHTML = options.OptionHTML
options_section = options.options_section
total_tqdm = shared_state.TotalTQDM()
prompt_styles = None  # a styles.StyleDatabase once webui.initialize() has read styles.csv

# A1111 names kept for extensions.
script_path = paths.script_path
batch_cond_uncond = True  # Serena always batches cond and uncond
parallel_processing_allowed = True
xformers_available = False  # diffusers picks the attention implementation
weight_load_location = None
demo = None  # the Gradio Blocks once the UI is built
settings_components: dict | None = None
tab_names: list[str] = []
restricted_opts: set[str] = set()
hide_dirs: dict = {}
clip_model = None
gradio_theme = None
mem_mon = None
hf_endpoint = "https://huggingface.co"
progress_print_out = sys.stdout
log = logging.getLogger("sd")
latent_upscale_default_mode = "Latent"


# One home for these helpers (A1111 extensions import them from either module).
from modules.shared_items import list_checkpoint_tiles, list_samplers, refresh_checkpoints  # noqa: E402,F401
from modules.util import listfiles, natural_sort_key, walk_files  # noqa: E402,F401


def __getattr__(name: str) -> Any:
    if name == "sd_model":
        from modules import sd_models
        return sd_models.model_data.sd_model
    if name == "device":
        from modules import devices
        return devices.device
    if name == "latent_upscale_modes":
        from modules import upscaling
        return upscaling.latent_upscale_modes
    if name == "styles_filename":  # A1111: a list of styles files
        return cmd_opts.styles_file or [data_paths.styles_file]
    if name == "config_filename":  # A1111: where opts are saved
        return cmd_opts.ui_settings_file or data_paths.config_file
    if name in ("data_path", "models_path"):
        return getattr(data_paths, name)
    if name == "sd_upscalers":
        from modules import upscaling  # A1111 keeps the upscaler list on shared
        return upscaling.sd_upscalers
    if name in ("hypernetworks", "loaded_hypernetworks", "reload_hypernetworks"):
        from modules.hypernetworks import hypernetwork  # A1111 keeps these on shared
        return getattr(hypernetwork, name)
    raise AttributeError(f"module 'modules.shared' has no attribute {name!r}")
