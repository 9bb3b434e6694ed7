"""LoRA and LyCORIS networks (A1111's built-in Lora extension) applied to the loaded diffusers/transformers model.

The facts follow A1111's `extensions-builtin/Lora`: files live in `--lora-dir` (default `<models>/Lora`,
subfolders included), a prompt names one as `<lora:name:te_mult[:unet_mult[:dyn_dim]]>` (named `te=`,
`unet=`, `dyn=` too; unet defaults to te, te to 1.0; `<lyco:…>` is an alias), and the infotext gets
`Lora hashes: "name: hash12"` (for .safetensors A1111's "addnet" hash: the tensor data without the JSON
header). Names that are not found do not fail the job; the job's comments get "Networks not found: …".

Supported, on Linear, Conv2d (and for `norm`, LayerNorm/GroupNorm) modules of the UNet and the text
encoders (the rules per type: `modules.lora_types`): LoRA with LoCon Tucker mid weights and the peft
names, LoHa (with Tucker), LoKr (full or factored, with Tucker), IA3, full/diff with bias, norm, `scale`
and DoRA's `dora_scale`. Key layouts (`modules.lora_keys`): kohya SD1/SD2/SDXL with diffusers or LDM
UNet names, `lora_te_`/`lora_te1_`/`lora_te2_`, and diffusers/peft `unet.…lora_A.weight`. Not supported:
GLoRA, OFT/BOFT, embeddings bundled in a LoRA file (`bundle_emb.*`) — their keys are reported as not
understood.

Why hand-written, not peft or diffusers (checked against diffusers 0.42 and peft 0.21): diffusers'
`lora_conversion_utils` turns kohya SD1/SDXL *LoRA* files (`lora_down`/`lora_up`/`alpha`, `dora_scale`) into
peft names for `load_lora_weights`, and reads LoKr only for its Z-Image and Flux2 transformer pipelines; it
has no SD/SDXL path for LoCon `lora_mid`, LoHa, LoKr, IA3, full/diff or norm modules. peft has LoRA, LoHa,
LoKr (and an IA3 that scales activations, not A1111's `W·(1+w)`) as layers that wrap a module under its
own adapter names (`base_layer`, `hada_w1_a["default"]`), loaded with `set_peft_model_state_dict` from
peft's key layout and one adapter config for all modules — not a kohya/LyCORIS file whose modules each
carry their own type and alpha. Nor do they apply A1111's rules (te/unet multipliers, `dyn_dim`, LoKr's
unscaled full factors, `scale` keys, a network applied whole or not at all, weights restored exactly).
The change of one module is a few lines of tensor algebra per type; the tests check it against peft's
LoRA, LoHa (plain and Tucker), LoKr and DoRA layers and diffusers' kohya converter.

Serena differs from A1111 on purpose in two ways: the weights are patched for the job and copied back
from a saved copy when the job ends (`restore`), so a later job without the tag is byte-identical; and a
network is applied whole or not at all — a file that cannot be read, fits none of the model's modules, or
has a module whose tensors do not fit (another model family) is left out, the job goes on, and its
comments say "Networks with errors: name (why)". Keys no module or type takes are logged by file.
"""
from __future__ import annotations

import logging
import os
from collections import ChainMap
from dataclasses import dataclass, field
from typing import Any

import torch

from modules import lora_keys, lora_types
from modules.extra_networks import ExtraNetwork
from modules.lora_network import Network, NetworkModule, NetworkOnDisk, NetworkWeights

log = logging.getLogger(__name__)

EXTENSIONS = (".safetensors", ".pt", ".ckpt")
# the training-metadata keys A1111 shows first, in this order (the rest keep the file's order)
METADATA_ORDER = {"ss_sd_model_name": 1, "ss_resolution": 2, "ss_clip_skip": 3, "ss_num_train_images": 10,
                  "ss_tag_frequency": 20}

available_networks: dict[str, NetworkOnDisk] = {}
available_network_aliases: dict[str, NetworkOnDisk] = {}
available_network_hash_lookup: dict[str, NetworkOnDisk] = {}
forbidden_network_aliases: dict[str, int] = {}
loaded_networks: list[Network] = []
_listed_state: Any = None


class NetworkLoadError(ValueError):
    """A network file cannot be used with the loaded model; the message names the file and why."""


def lora_dir() -> str:
    """`--lora-dir` when the flag exists and is set, else `<models>/Lora`."""
    from modules import shared
    configured = getattr(shared.cmd_opts, "lora_dir", None)
    if configured:
        return os.path.abspath(configured)
    return os.path.join(shared.data_paths.models_path, "Lora")


def _read_metadata(filename: str) -> dict:
    """The safetensors `__metadata__` (JSON-looking values such as `ss_tag_frequency` decoded); {} otherwise."""
    if not filename.lower().endswith(".safetensors"):
        return {}
    from modules import errors, safe_load
    try:
        metadata = dict(safe_load.read_safetensors_metadata(filename) or {})
    except errors.SerenaError as e:  # an unreadable file is listed without metadata; loading reports it
        log.warning("cannot read the metadata of %s: %s", filename, e)
        return {}
    return dict(sorted(metadata.items(), key=lambda kv: METADATA_ORDER.get(kv[0], 999)))


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
    available_network_hash_lookup.clear()
    forbidden_network_aliases.clear()
    forbidden_network_aliases.update({"none": 1, "addams": 1})
    for path, _, _ in state[1]:
        name = os.path.splitext(os.path.basename(path))[0]
        previous = available_networks.get(name)
        if previous is not None and previous.filename.lower().endswith(".safetensors"):
            continue  # A1111 lists one file per stem; prefer .safetensors
        entry = NetworkOnDisk(name, path, _read_metadata(path))
        if entry.alias in available_network_aliases:
            forbidden_network_aliases[entry.alias.lower()] = 1
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
        from modules import errors, safe_load  # .safetensors, or a restricted unpickler for .pt/.ckpt
        try:
            cached = safe_load.load_state_dict(entry.filename, device="cpu")
        except (errors.SerenaError, OSError, ValueError, RuntimeError) as e:
            raise NetworkLoadError(f"cannot read {entry.filename}: {e}") from e
        _state_dict_cache[entry.filename] = cached
    return cached


def _mtime(path: str) -> float:
    try:
        return os.path.getmtime(path)
    except OSError:
        return 0.0


def load_network(entry: NetworkOnDisk, sd_model: Any, name: str | None = None) -> Network:
    """The file's modules matched to `sd_model` (A1111's `load_network`); unmatched prefixes are logged.

    Raises:
        NetworkLoadError: the file cannot be read, or none of its modules fit the model.
    """
    index = lora_keys.module_index(sd_model)
    groups = lora_keys.group_keys(_load_state_dict(entry))
    net = Network(name or entry.name, entry)
    net.mtime = _mtime(entry.filename)
    for network_key, w in groups.items():
        target = index.get(network_key)
        module_type = lora_types.module_type_for(w)
        if target is None or module_type is None:
            net.unmatched_keys.append(network_key)
            continue
        weights = NetworkWeights(network_key, target.sd_key, w, target.module)
        net.modules[network_key] = NetworkModule(net, weights, module_type)
    if not net.modules:
        raise NetworkLoadError(f"none of the {len(groups)} modules in {entry.filename} is a known network "
                               f"module of this model (keys like {', '.join(sorted(groups)[:3]) or 'none'})")
    if net.unmatched_keys:
        log.warning("Network %s didn't match keys (%d): %s", entry.filename, len(net.unmatched_keys),
                    ", ".join(net.unmatched_keys))
    return net


@dataclass
class _Applied:
    """What is patched into the model now: the networks' key, the saved originals and the failures."""
    model: Any = None
    key: tuple = ()
    backups: list = field(default_factory=list)  # [(module, attribute, original copy or None)]
    failures: dict = field(default_factory=dict)  # network name → why it was left out


_applied = _Applied()


def applied_key(part: str | None = None) -> tuple:
    """The networks patched in now, as ((name, te, unet, dyn, file mtime), …); `part="te"`: those with te ≠ 0,
    as (name, te, dyn, mtime) — what the text encoder's output depends on."""
    if part == "te":
        return tuple((name, te, dyn, mtime) for name, te, _, dyn, mtime in _applied.key if te != 0)
    return _applied.key


def restore() -> None:
    """Put the saved original weights (and biases) back exactly and forget the applied networks."""
    with torch.no_grad():
        for module, attr, original in reversed(_applied.backups):
            if original is None:
                setattr(module, attr, None)
                continue
            param = getattr(module, attr)
            if (param.device, param.dtype, param.shape, param.stride()) == \
                    (original.device, original.dtype, original.shape, original.stride()):
                param.data = original  # the original tensor itself: the same bits, no copy
            else:  # the model was moved since: copy the saved values into its tensor
                param.copy_(original)
    _applied.backups.clear()
    _applied.key = ()
    _applied.model = None
    _applied.failures = {}
    loaded_networks.clear()


def _current(values: Any, module: torch.nn.Module, attr: str) -> torch.Tensor | None:
    """The float32 value of `module.attr` with the changes so far (None: the module has no such tensor)."""
    found = values.get((id(module), attr))
    if found is not None:
        return found[2]
    param = getattr(module, attr, None)
    return None if param is None else param.detach().to(torch.float32)


def network_changes(net: Network, values: dict) -> dict:
    """{(id(module), attr): (module, attr, new float32 value)} of one network on top of `values`.

    Raises:
        lora_types.NetworkShapeError: a module's tensors do not fit (the message names the module).
    """
    changes: dict = {}
    merged = ChainMap(changes, values)
    for nm in net.modules.values():
        if nm.multiplier() == 0:
            continue
        weight = _current(merged, nm.sd_module, "weight")
        try:
            dw, db = nm.calc_updown(weight)
        except (lora_types.NetworkShapeError, RuntimeError, IndexError, KeyError) as e:
            raise lora_types.NetworkShapeError(f"{nm.network_key} → {nm.sd_key}: {e}") from e
        # `dw + weight` has the same bits as `weight + dw` (IEEE addition commutes); in place when
        # `dw` is a tensor of its own, which saves a full-size allocation per module
        fresh = dw.shape == weight.shape and dw.dtype == weight.dtype and lora_types.owns_storage(dw, weight)
        new = dw.add_(weight) if fresh else weight + dw
        changes[(id(nm.sd_module), "weight")] = (nm.sd_module, "weight", new)
        if db is not None:
            bias = _current(merged, nm.sd_module, "bias")
            bias = torch.zeros_like(db) if bias is None else bias
            changes[(id(nm.sd_module), "bias")] = (nm.sd_module, "bias", bias + db)
    return changes


def _write(values: dict) -> list:
    """Write the new values into the model; return the backups `restore` needs.

    Each parameter's original tensor is kept as its backup and the new value (already a fresh tensor,
    converted to the parameter's dtype and device) becomes the parameter's data: no copy of the
    original and no second write. A copy-and-overwrite needs one more full-size copy of every patched
    weight at once (the full-size SDXL UNet in float32 with a LoRA on its attention and ff layers:
    8.8 GB more, 28 GB in all).
    """
    backups = []
    with torch.no_grad():
        for key in list(values):
            module, attr, value = values.pop(key)  # drop the float32 value once it is written
            param = getattr(module, attr, None)
            if param is None:  # a bias the module did not have (A1111 adds one)
                setattr(module, attr, torch.nn.Parameter(value.to(module.weight.dtype), requires_grad=False))
                backups.append((module, attr, None))
                continue
            new = value.to(device=param.device, dtype=param.dtype)
            if new.stride() != param.stride() or new.data_ptr() == param.data_ptr():
                backups.append((module, attr, param.detach().clone()))  # keep the parameter's own layout
                param.copy_(new)
            else:
                backups.append((module, attr, param.data))
                param.data = new
            del value, new
    return backups


def _wanted_key(wanted: list[tuple]) -> tuple:
    rows = []
    for item in wanted:
        entry, te, unet = item[:3]
        dyn = item[3] if len(item) > 3 else None
        rows.append((entry.name, float(te), float(unet), dyn, _mtime(entry.filename)))
    return tuple(rows)


def apply_networks(sd_model: Any, wanted: list[tuple]) -> dict[str, str]:
    """Patch the model with these (network, te, unet[, dyn_dim]) in order; no-op if already patched so.

    Each network is applied whole or not at all. Returns {name: why} of the networks left out.
    """
    key = _wanted_key(wanted)
    if _applied.model is sd_model and _applied.key == key:
        return _applied.failures
    restore()
    if not wanted:
        return {}
    values: dict = {}
    failures: dict[str, str] = {}
    for item, (name, te, unet, dyn, _) in zip(wanted, key):
        try:
            net = load_network(item[0], sd_model)
            net.te_multiplier, net.unet_multiplier, net.dyn_dim = te, unet, dyn
            values.update(network_changes(net, values))
        except (NetworkLoadError, lora_types.NetworkShapeError) as e:
            failures[name] = str(e)
            log.warning("Network %s left out: %s", name, e)
            continue
        loaded_networks.append(net)
    _applied.backups = _write(values)
    _applied.key, _applied.model, _applied.failures = key, sd_model, failures
    return failures


def load_networks(names: list[str], te_multipliers: list | None = None, unet_multipliers: list | None = None,
                  dyn_dims: list | None = None) -> list[str]:
    """A1111's `networks.load_networks`: patch the loaded model with these names; returns the names not found."""
    from modules import shared
    wanted, missing, mentioned = [], [], []
    for i, name in enumerate(names):
        entry = find_network(name)
        if entry is None:
            missing.append(name)
            continue
        te = te_multipliers[i] if te_multipliers and i < len(te_multipliers) else 1.0
        unet = unet_multipliers[i] if unet_multipliers and i < len(unet_multipliers) else te
        dyn = dyn_dims[i] if dyn_dims and i < len(dyn_dims) else None
        wanted.append((entry, te, unet, dyn))
        mentioned.append((name, entry))
    apply_networks(shared.sd_model, wanted)
    _mark_mentioned(mentioned)
    return missing


def _mark_mentioned(mentioned: list[tuple[str, NetworkOnDisk]]) -> None:
    """Give each loaded network the name (or alias) the prompt used for it (A1111's `mentioned_name`)."""
    by_file = {entry.filename: name for name, entry in mentioned}
    for net in loaded_networks:
        net.mentioned_name = by_file.get(net.network_on_disk.filename, net.name)


def _multipliers(params: Any) -> tuple[str, float, float, int | None]:
    """name, te, unet, dyn from `<lora:name[:te[:unet[:dyn]]]>` or named `te=`/`unet=`/`dyn=` (unet defaults to te)."""
    positional, named = list(params.positional), dict(params.named)
    name = str(positional[0]) if positional else ""
    te = float(named.get("te", positional[1] if len(positional) > 1 else 1.0))
    unet = float(named.get("unet", positional[2] if len(positional) > 2 else te))
    dyn = named.get("dyn", positional[3] if len(positional) > 3 else None)
    return name, te, unet, (int(float(dyn)) if dyn not in (None, "") else None)


class ExtraNetworkLora(ExtraNetwork):
    """The `lora` extra network (A1111's `ExtraNetworkLora`, also `<lyco:…>`): patches the model for the job."""

    remove_symbols = str.maketrans("", "", ":,")

    def __init__(self) -> None:
        super().__init__("lora")
        self.errors: dict[str, int] = {}

    def activate(self, p: Any, params_list: list) -> None:
        wanted, missing, mentioned = [], [], []
        for params in params_list:
            name, te, unet, dyn = _multipliers(params)
            entry = find_network(name)
            if entry is None:
                missing.append(name)
                continue
            wanted.append((entry, te, unet, dyn))
            mentioned.append((name, entry))
        sd_model = getattr(p, "sd_model", None) if p is not None else None
        if sd_model is None or not hasattr(sd_model, "unet"):
            return
        failures = apply_networks(sd_model, wanted) if wanted or _applied.backups else {}
        _mark_mentioned(mentioned)
        if missing and p is not None and hasattr(p, "comment"):
            p.comment("Networks not found: " + ", ".join(missing))
            log.warning("Networks not found: %s", ", ".join(missing))
        if failures and hasattr(p, "comment"):
            p.comment("Networks with errors: " + ", ".join(f"{k} ({v})" for k, v in failures.items()))
        self._add_hashes(p, [(n, e) for n, e in mentioned if e.name not in failures])

    def _add_hashes(self, p: Any, mentioned: list[tuple[str, NetworkOnDisk]]) -> None:
        """`Lora hashes` for the networks applied (the hires pass adds to the first pass's, as A1111)."""
        from modules import shared
        if not mentioned or not getattr(shared.opts, "lora_add_hashes_to_infotext", True):
            return
        if not getattr(p, "is_hr_pass", False) or not isinstance(getattr(p, "lora_hashes", None), dict):
            p.lora_hashes = {}
        for name, entry in mentioned:
            short = entry.read_hash()[0:12]
            if short:
                p.lora_hashes[name.translate(self.remove_symbols)] = short
        if p.lora_hashes:
            p.extra_generation_params["Lora hashes"] = ", ".join(f"{k}: {v}" for k, v in p.lora_hashes.items())

    def deactivate(self, p: Any) -> None:
        restore()
