"""The `hypernet` extra network: `<hypernet:name[:multiplier]>` in a prompt (A1111's
`modules/extra_networks_hypernet.py`, `ExtraNetworkHypernet`).

The multiplier defaults to 1.0. A1111 writes no infotext key for hypernetworks: the tag stays in the
prompt text, which is what reproduces the image (the old `Hypernet`/`Hypernet strength` keys are
turned back into a tag when infotext is read). Names that are not listed, and files that cannot be
read, leave the job running with a comment ("Hypernetworks not found: …", "Hypernetworks not
readable (see the log): …"). The option `sd_hypernetwork` ("Add hypernetwork to prompt"), when an
options table defines it, appends its hypernetwork to every prompt at
`extra_networks_default_multiplier`, as A1111 does.
"""
from __future__ import annotations

import logging
from typing import Any

from modules.extra_networks import ExtraNetwork
from modules.hypernetworks import hypernetwork
from modules.hypernetworks.attention_hooks import hooks

log = logging.getLogger(__name__)


def _option(name: str, default: Any) -> Any:
    from modules import shared
    try:
        return getattr(shared.opts, name)
    except (AttributeError, KeyError):
        return default


def _name_and_multiplier(params: Any) -> tuple[str, float]:
    items = list(getattr(params, "items", params))
    if not items:
        raise ValueError("a <hypernet:…> tag needs a name")
    return str(items[0]), float(items[1]) if len(items) > 1 else 1.0


class ExtraNetworkHypernet(ExtraNetwork):
    """Loads the named hypernetworks for the batch and hooks them into the UNet's attention."""

    def __init__(self) -> None:
        super().__init__("hypernet")

    def _add_option_hypernetwork(self, p: Any, params_list: list) -> list:
        additional = _option("sd_hypernetwork", "None")
        if not additional or additional == "None" or additional not in hypernetwork.hypernetworks:
            return params_list
        if any(_name_and_multiplier(x)[0] == additional for x in params_list):
            return params_list
        multiplier = _option("extra_networks_default_multiplier", 1.0)
        if p is not None and isinstance(getattr(p, "all_prompts", None), list):
            p.all_prompts = [f"{prompt}<hypernet:{additional}:{multiplier}>" for prompt in p.all_prompts]
        return [*params_list, [additional, multiplier]]

    def activate(self, p: Any, params_list: list) -> None:
        hypernetwork.reload_hypernetworks()
        params_list = self._add_option_hypernetwork(p, list(params_list))
        wanted = [_name_and_multiplier(params) for params in params_list]
        hypernetwork.load_hypernetworks([name for name, _ in wanted], [m for _, m in wanted])
        loaded_files = {h.filename for h in hypernetwork.loaded_hypernetworks}
        missing = [name for name, _ in wanted if name not in hypernetwork.hypernetworks]
        unreadable = [name for name, _ in wanted if name in hypernetwork.hypernetworks
                      and hypernetwork.hypernetworks[name] not in loaded_files]
        unet = getattr(getattr(p, "sd_model", None), "unet", None)
        if hypernetwork.loaded_hypernetworks and unet is not None:
            device = next(unet.parameters()).device
            for loaded in hypernetwork.loaded_hypernetworks:
                loaded.to(device)   # float32 on the UNet's device; the hooks cast the context to match
            hooks.install(unet)
        else:
            hooks.remove()
        for label, names in (("not found", missing), ("not readable (see the log)", unreadable)):
            if names and p is not None and hasattr(p, "comment"):
                p.comment(f"Hypernetworks {label}: " + ", ".join(dict.fromkeys(names)))
                log.warning("Hypernetworks %s: %s", label, ", ".join(names))

    def deactivate(self, p: Any) -> None:
        hypernetwork.loaded_hypernetworks.clear()
        hooks.remove()

