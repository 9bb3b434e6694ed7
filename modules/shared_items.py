"""A1111's `modules.shared_items`: the choice lists settings and extension UIs show, and their refreshers.

Each function asks the module that owns the list (checkpoints: `sd_models`, VAEs: `sd_vae`,
samplers: `sd_samplers`, upscalers: `upscaling`, …) at call time, so a list is never stale and
importing this module does no work.
"""
from __future__ import annotations

from typing import Any


def list_checkpoint_tiles(use_short: bool = False) -> list[str]:
    """Checkpoint titles for a dropdown ("name.safetensors [hash]", or the short form)."""
    from modules import sd_models
    return sd_models.checkpoint_tiles(use_short)


def refresh_checkpoints() -> None:
    """Read the checkpoint folders again."""
    from modules import sd_models
    sd_models.list_models()


def list_samplers() -> list:
    """Every sampler's `SamplerData`, in the order of the sampler dropdown."""
    from modules import sd_samplers
    return sd_samplers.all_samplers


def sd_vae_items() -> list[str]:
    """The values of the `sd_vae` setting: "Automatic", "None", then every listed VAE file's name."""
    from modules import sd_vae
    sd_vae._ensure_listed()
    return ["Automatic", "None", *sd_vae.vae_dict]


def refresh_vae_list() -> None:
    """Read the VAE folders again."""
    from modules import sd_vae
    sd_vae.refresh_vae_list()


def sd_unet_items() -> list[str]:
    """The values of the `sd_unet` setting: "Automatic", the UNets extensions offer through
    `on_list_unets` (by their `label`), then "None". Serena loads no replacement UNet itself."""
    from modules import script_callbacks
    return ["Automatic", *(getattr(u, "label", str(u)) for u in script_callbacks.list_unets_callback()), "None"]


def refresh_unet_list() -> None:
    """Nothing is cached: `sd_unet_items` asks the extensions each time."""


def cross_attention_optimizations() -> list[str]:
    """The values of `cross_attention_optimization`: "Automatic", Serena's attention implementations
    by A1111's titles (`sd_attention.names()`), the optimizations extensions offer
    (`on_list_optimizers`, by `title()`), then "None"."""
    from modules import sd_attention, sd_hijack
    titles = [o.title() if callable(getattr(o, "title", None)) else str(getattr(o, "name", o))
              for o in sd_hijack.list_optimizers()]
    return ["Automatic", *sd_attention.names(), *titles, "None"]


def postprocessing_scripts() -> list:
    """The Extras tab's postprocessing scripts (empty until scripts are loaded)."""
    from modules import scripts
    runner = getattr(scripts, "scripts_postproc", None)
    return list(getattr(runner, "scripts", None) or [])


def realesrgan_models_names() -> list[str]:
    """Names of the upscalers read from `<models>/RealESRGAN`."""
    return _upscaler_names_from("RealESRGAN")


def dat_models_names() -> list[str]:
    """Names of the upscalers read from `<models>/DAT`."""
    return _upscaler_names_from("DAT")


def _upscaler_names_from(folder: str) -> list[str]:
    from modules import upscaling
    names = []
    for upscaler in upscaling.sd_upscalers:
        path = str(upscaler.model_path or "").replace("\\", "/")
        if f"/{folder}/" in path:
            names.append(upscaler.name)
    return names


def reload_hypernetworks() -> None:
    """Read the hypernetwork folder again."""
    from modules.hypernetworks import hypernetwork
    hypernetwork.reload_hypernetworks()


def get_infotext_names() -> list[str]:
    """Every infotext key a setting is written under (the choices of "infotext_skip_pasting")."""
    from modules import shared
    names = {getattr(info, "infotext", None) for info in shared.opts.data_labels.values()}
    return sorted(n for n in names if n)


ui_reorder_categories_builtin_items = [
    "prompt", "image", "inpaint", "sampler", "accordions", "checkboxes", "dimensions", "cfg", "denoising",
    "seed", "batch", "override_settings",
]


def ui_reorder_categories() -> list[str]:
    """The sections the generation tabs can be reordered by: the built-in ones, then "scripts"."""
    return [*ui_reorder_categories_builtin_items, "scripts"]


def __getattr__(name: str) -> Any:
    if name == "sd_model":  # A1111's `shared_items.Shared.sd_model`
        from modules import shared
        return shared.sd_model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
