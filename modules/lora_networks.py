"""Standard LoRA (kohya / A1111 key layout) applied to the loaded diffusers UNet and CLIP text encoder.

The facts follow A1111's built-in Lora extension (`extensions-builtin/Lora`): files live in
`--lora-dir` (default `<models>/Lora`), a prompt names one as `<lora:name:te_mult[:unet_mult]>`
(named `te=`, `unet=` too; unet defaults to te, te to 1.0), the weight change of one module is
`up @ down * (alpha / rank) * multiplier`, and the infotext gets `Lora hashes: "name: hash12"` with
the first 12 hex digits of the file's sha256 (for .safetensors A1111's "addnet" hash: the tensor
data without the JSON header). Names that are not found do not fail the job; the job's comments
get "Networks not found: name, …".

Serena differs from A1111 in one way on purpose: the weights are patched for the job and copied back
from a saved copy when the job ends (`restore`), so a later job without the tag is byte-identical.

Supported: `lora_down`/`lora_up`/`alpha` on Linear and Conv2d (1×1 and k×k down with 1×1 up) modules
of the SD1 UNet (`lora_unet_<diffusers path with _>`) and text encoder (`lora_te_text_model_…`).
Other network kinds (LoCon mid weights, LoHa, LoKr, IA3, OFT, diff, SDXL `lora_te1_/te2_`) are skipped.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from modules.extra_networks import ExtraNetwork

log = logging.getLogger(__name__)

EXTENSIONS = (".safetensors", ".pt", ".ckpt")


def lora_dir() -> str:
    """`--lora-dir` when the flag exists and is set, else `<models>/Lora`."""
    from modules import shared
    configured = getattr(shared.cmd_opts, "lora_dir", None)
    if configured:
        return os.path.abspath(configured)
    return os.path.join(shared.data_paths.models_path, "Lora")


@dataclass
class NetworkOnDisk:
    """One LoRA file: `name` is its stem (what prompts use), `alias` its metadata name or the stem."""
    name: str
    filename: str
    metadata: dict = field(default_factory=dict)
    hash: str | None = None

    @property
    def alias(self) -> str:
        alias = self.metadata.get("ss_output_name")
        return alias if isinstance(alias, str) and alias else self.name

    @property
    def is_safetensors(self) -> bool:
        return self.filename.lower().endswith(".safetensors")

    @property
    def shorthash(self) -> str:
        return (self.hash or "")[0:12]

    def read_hash(self) -> str:
        """The file's sha256 (addnet hash for .safetensors), cached in `cache.json` under `lora/<name>`."""
        if not self.hash:
            from modules import hashes
            self.hash = (self.metadata.get("sshs_model_hash")
                         or hashes.sha256(self.filename, "lora/" + self.name, use_addnet_hash=self.is_safetensors)
                         or "")
        return self.hash


available_networks: dict[str, NetworkOnDisk] = {}
available_network_aliases: dict[str, NetworkOnDisk] = {}
_listed_state: Any = None


def _read_metadata(filename: str) -> dict:
    if not filename.lower().endswith(".safetensors"):
        return {}
    from modules import safe_load
    try:
        return dict(safe_load.read_safetensors_metadata(filename) or {})
    except Exception as e:  # an unreadable file is listed without metadata; loading reports it
        log.warning("cannot read the metadata of %s: %s", filename, e)
        return {}


def _folder_state(folder: str) -> Any:
    entries = []
    for root, _, files in os.walk(folder, followlinks=True):
        for name in files:
            if name.lower().endswith(EXTENSIONS):
                path = os.path.join(root, name)
                try:
                    entries.append((path, os.path.getmtime(path), os.path.getsize(path)))
                except OSError:
                    continue
    return tuple(sorted(entries))


def list_available_networks(force: bool = False) -> dict[str, NetworkOnDisk]:
    """Scan `lora_dir()` (recursively); a rescan only happens when the folder's files changed or `force`."""
    global _listed_state
    folder = lora_dir()
    state = (folder, _folder_state(folder))
    if not force and state == _listed_state:
        return available_networks
    available_networks.clear()
    available_network_aliases.clear()
    for path, _, _ in state[1]:
        name = os.path.splitext(os.path.basename(path))[0]
        previous = available_networks.get(name)
        if previous is not None and previous.filename.lower().endswith(".safetensors"):
            continue  # A1111 lists one file per stem; prefer .safetensors
        entry = NetworkOnDisk(name, path, _read_metadata(path))
        available_networks[name] = entry
        available_network_aliases[name] = entry
        available_network_aliases.setdefault(entry.alias, entry)
    _listed_state = state
    _state_dict_cache.clear()
    return available_networks


def find_network(name: str) -> NetworkOnDisk | None:
    networks = list_available_networks()
    return networks.get(name) or available_network_aliases.get(name)


_state_dict_cache: dict[str, dict[str, torch.Tensor]] = {}


def _load_state_dict(entry: NetworkOnDisk) -> dict[str, torch.Tensor]:
    cached = _state_dict_cache.get(entry.filename)
    if cached is None:
        from modules import safe_load  # .safetensors, or a restricted unpickler for .pt/.ckpt
        cached = safe_load.load_state_dict(entry.filename, device="cpu")
        _state_dict_cache[entry.filename] = cached
    return cached


def _module_table(sd_model: Any) -> dict[str, tuple[str, torch.nn.Module]]:
    """kohya key prefix → (part, module) for every Linear/Conv2d of the UNet and the text encoder."""
    table: dict[str, tuple[str, torch.nn.Module]] = {}
    for name, module in sd_model.unet.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            table["lora_unet_" + name.replace(".", "_")] = ("unet", module)
    for name, module in sd_model.text_encoder.named_modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
            full = name if name.startswith("text_model.") else "text_model." + name  # transformers 5 drops it
            table["lora_te_" + full.replace(".", "_")] = ("te", module)
    return table


def lora_delta(down: torch.Tensor, up: torch.Tensor, alpha: Any, shape: torch.Size) -> torch.Tensor:
    """`up @ down * alpha / rank` in float32, shaped like the target weight (Linear or Conv2d)."""
    down, up = down.to(torch.float32), up.to(torch.float32)
    rank = down.shape[0]
    scale = float(alpha) / rank if alpha is not None else 1.0
    delta = up.reshape(up.shape[0], -1) @ down.reshape(rank, -1)
    return (delta * scale).reshape(shape)


def network_deltas(sd_model: Any, state: dict[str, torch.Tensor]) -> tuple[dict, list[str]]:
    """{(part, module): float32 delta at multiplier 1} for the keys of one LoRA file; and the unmatched keys."""
    table = _module_table(sd_model)
    deltas: dict = {}
    unmatched: list[str] = []
    prefixes = sorted({key.split(".", 1)[0] for key in state})
    for prefix in prefixes:
        down, up = state.get(prefix + ".lora_down.weight"), state.get(prefix + ".lora_up.weight")
        target = table.get(prefix)
        if target is None or down is None or up is None or (prefix + ".lora_mid.weight") in state:
            unmatched.append(prefix)
            continue
        part, module = target
        weight = module.weight
        if up.reshape(up.shape[0], -1).shape[0] * down.reshape(down.shape[0], -1).shape[1] != weight.numel():
            unmatched.append(prefix)
            continue
        alpha = state.get(prefix + ".alpha")
        alpha = float(alpha.item()) if isinstance(alpha, torch.Tensor) else alpha
        deltas[(part, module)] = lora_delta(down, up, alpha, weight.shape)
    return deltas, unmatched


@dataclass
class _Applied:
    """What is patched into the model now: the key of the networks and the original weights."""
    model: Any = None
    key: tuple = ()
    backups: list = field(default_factory=list)  # [(parameter, original copy)]


_applied = _Applied()


def applied_key(part: str | None = None) -> tuple:
    """The networks patched in now, as ((name, te, unet, file mtime), …); `part="te"`: those with te ≠ 0,
    as (name, te, mtime) — what the text encoder's output depends on."""
    if part == "te":
        return tuple((name, te, mtime) for name, te, _, mtime in _applied.key if te != 0)
    return _applied.key


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0


def restore() -> None:
    """Copy the saved original weights back (exactly) and forget the applied networks."""
    with torch.no_grad():
        for param, original in _applied.backups:
            param.copy_(original)
    _applied.backups.clear()
    _applied.key = ()
    _applied.model = None


def apply_networks(sd_model: Any, wanted: list[tuple[NetworkOnDisk, float, float]]) -> None:
    """Patch the model with these (network, te multiplier, unet multiplier); no-op if already patched so."""
    key = tuple((entry.name, float(te), float(unet), _mtime(entry.filename)) for entry, te, unet in wanted)
    if _applied.model is sd_model and _applied.key == key:
        return
    restore()
    if not wanted:
        return
    saved: dict[int, tuple] = {}
    total: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = {}
    for entry, te, unet in wanted:
        deltas, unmatched = network_deltas(sd_model, _load_state_dict(entry))
        if unmatched:
            log.warning("Lora %s: %d module(s) not supported or not found, skipped: %s", entry.name,
                        len(unmatched), ", ".join(unmatched[:5]))
        for (part, module), delta in deltas.items():
            multiplier = te if part == "te" else unet
            if multiplier == 0:
                continue
            param = module.weight
            if id(param) not in total:
                total[id(param)] = (param, torch.zeros(param.shape, dtype=torch.float32, device=param.device))
            total[id(param)][1].add_(delta.to(param.device) * multiplier)
    with torch.no_grad():
        for pid, (param, delta) in total.items():
            saved[pid] = (param, param.detach().clone())
            param.copy_((param.to(torch.float32) + delta).to(param.dtype))
    _applied.backups = list(saved.values())
    _applied.key = key
    _applied.model = sd_model


def _multipliers(params: Any) -> tuple[str, float, float]:
    """name, te, unet from `<lora:name[:te[:unet[:dyn]]]>` or named `te=`/`unet=` (unet defaults to te)."""
    positional, named = list(params.positional), dict(params.named)
    name = str(positional[0]) if positional else ""
    te = float(named.get("te", positional[1] if len(positional) > 1 else 1.0))
    unet = float(named.get("unet", positional[2] if len(positional) > 2 else te))
    return name, te, unet


class ExtraNetworkLora(ExtraNetwork):
    """The `lora` extra network (A1111's `ExtraNetworkLora`): patches the model for the job."""

    remove_symbols = str.maketrans("", "", ":,")

    def __init__(self) -> None:
        super().__init__("lora")
        self.errors: dict[str, int] = {}

    def activate(self, p: Any, params_list: list) -> None:
        from modules import shared
        wanted, missing, mentioned = [], [], []
        for params in params_list:
            name, te, unet = _multipliers(params)
            entry = find_network(name)
            if entry is None:
                missing.append(name)
                continue
            wanted.append((entry, te, unet))
            mentioned.append((name, entry))
        sd_model = getattr(p, "sd_model", None) if p is not None else None
        if sd_model is None or not hasattr(sd_model, "unet"):
            return
        if wanted or _applied.backups:  # a job without LoRA touches nothing
            apply_networks(sd_model, wanted)
        if missing and p is not None and hasattr(p, "comment"):
            p.comment("Networks not found: " + ", ".join(missing))
            log.warning("Networks not found: %s", ", ".join(missing))
        if not mentioned or not getattr(shared.opts, "lora_add_hashes_to_infotext", True):
            return
        if not getattr(p, "is_hr_pass", False) or not isinstance(getattr(p, "lora_hashes", None), dict):
            p.lora_hashes = {}  # the hires pass adds its networks to the first pass's (A1111)
        for name, entry in mentioned:
            short = entry.read_hash()[0:12]
            if short:
                p.lora_hashes[name.translate(self.remove_symbols)] = short
        if p.lora_hashes:
            p.extra_generation_params["Lora hashes"] = ", ".join(f"{k}: {v}" for k, v in p.lora_hashes.items())

    def deactivate(self, p: Any) -> None:
        restore()
