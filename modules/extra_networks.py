"""Extra networks: `<name:args>` prompt tags and the networks they switch on (A1111's module).

A network is an `ExtraNetwork` subclass registered under its tag name with `register_extra_network`.
Each batch, `activate(p, extra_network_data)` calls every registered network's
`activate(p, params_list)`: the mentioned ones with their `ExtraNetworkParams`, the others with `[]`.
`deactivate(p, extra_network_data)` runs at the end of the job. The built-in `lora` network (alias
`lyco`) and `hypernet` are registered on first use (`modules.lora_networks`, `modules.hypernetworks`).

`parse_prompts` keeps Serena's parsing result: `{name: [[arg, …], …]}` from the first prompt, the
tags removed from every prompt; `activate` hands the networks `ExtraNetworkParams` built from it.
"""
from __future__ import annotations

import logging
import re
from typing import Any

from modules.prompt_parser import ExtraNetworkParams

log = logging.getLogger(__name__)

re_extra_net = re.compile(r"<(\w+):([^>]+)>")

extra_network_registry: dict[str, "ExtraNetwork"] = {}
extra_network_aliases: dict[str, "ExtraNetwork"] = {}


class ExtraNetwork:
    """Base class: `name` is the tag name (`<name:…>`)."""

    def __init__(self, name: str):
        self.name = name

    def activate(self, p: Any, params_list: list[ExtraNetworkParams]) -> None:
        """Switch on the networks in `params_list` for this batch (an empty list: none of this kind)."""
        raise NotImplementedError

    def deactivate(self, p: Any) -> None:
        """Undo what `activate` did; called once at the end of the job."""
        raise NotImplementedError


def initialize() -> None:
    extra_network_registry.clear()
    extra_network_aliases.clear()


def register_extra_network(extra_network: ExtraNetwork) -> None:
    extra_network_registry[extra_network.name] = extra_network


def register_extra_network_alias(extra_network: ExtraNetwork, alias: str) -> None:
    extra_network_aliases[alias] = extra_network


def register_default_extra_networks() -> None:
    """The built-in networks (`lora`, alias `lyco`; `hypernet`), unless something registered those names already."""
    if "lora" not in extra_network_registry:
        from modules.lora_networks import ExtraNetworkLora
        network = ExtraNetworkLora()
        register_extra_network(network)
        extra_network_aliases.setdefault("lyco", network)
    if "hypernet" not in extra_network_registry:
        from modules.hypernetworks.extra_network import ExtraNetworkHypernet
        register_extra_network(ExtraNetworkHypernet())


def _as_params(items: Any) -> ExtraNetworkParams:
    return items if isinstance(items, ExtraNetworkParams) else ExtraNetworkParams(list(items))


def lookup_extra_networks(extra_network_data: dict) -> dict[ExtraNetwork, list[ExtraNetworkParams]]:
    """Registered network → its params (aliases merged into the network they name); unknown names logged."""
    register_default_extra_networks()
    res: dict[ExtraNetwork, list[ExtraNetworkParams]] = {}
    for name, params in (extra_network_data or {}).items():
        network = extra_network_registry.get(name) or extra_network_aliases.get(name)
        if network is None:
            log.warning("Skipping unknown extra network: %s", name)
            continue
        res.setdefault(network, []).extend(_as_params(x) for x in params)
    return res


def activate(p: Any, extra_network_data: dict | None) -> None:
    """Every registered network's `activate`: mentioned ones with their params, the rest with `[]`.

    A network that raises is reported and the job goes on (A1111).
    """
    from modules import errors
    mentioned = lookup_extra_networks(extra_network_data or {})
    for network in list(extra_network_registry.values()):
        try:
            network.activate(p, mentioned.get(network, []))
        except Exception as e:
            _report(errors, e, f"activating extra network {network.name}")
    for network in mentioned:  # registered only as an alias (not in the registry by name)
        if network not in extra_network_registry.values():
            try:
                network.activate(p, mentioned[network])
            except Exception as e:
                _report(errors, e, f"activating extra network {network.name}")


def deactivate(p: Any, extra_network_data: dict | None) -> None:
    """Every registered network's `deactivate` (errors reported, not raised)."""
    from modules import errors
    for network in list(extra_network_registry.values()):
        try:
            network.deactivate(p)
        except Exception as e:
            _report(errors, e, f"deactivating extra network {network.name}")


def _report(errors: Any, e: Exception, task: str) -> None:
    display = getattr(errors, "display", None)
    if callable(display):
        display(e, task)
    else:
        log.exception("error %s", task)


def parse_prompt(prompt: str) -> tuple[str, dict[str, list[list[str]]]]:
    """Remove `<name:args>` tags from `prompt`; return the text and `{name: [[arg, …], …]}`."""
    res: dict[str, list[list[str]]] = {}

    def found(match: re.Match) -> str:
        res.setdefault(match.group(1), []).append(match.group(2).split(":"))
        return ""

    return re_extra_net.sub(found, prompt), res


def parse_prompts(prompts: list[str]) -> tuple[list[str], dict[str, list[list[str]]]]:
    """Tags removed from every prompt; the network data comes from the first prompt only (A1111)."""
    res: list[str] = []
    extra_data: dict[str, list[list[str]]] | None = None
    for prompt in prompts:
        updated, parsed = parse_prompt(prompt)
        if extra_data is None:
            extra_data = parsed
        res.append(updated)
    return res, extra_data if extra_data is not None else {}
