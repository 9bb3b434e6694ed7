"""VAE files: the list A1111 shows, which one the options choose, and swapping it into the model.

A1111's module name and names are kept (extensions import `modules.sd_vae`): `vae_dict` maps each
VAE's name (the file's base name, e.g. "vae-ft-mse-840000-ema-pruned.safetensors") to its path;
`refresh_vae_list`, `resolve_vae`, `load_vae`, `reload_vae_weights`, `get_loaded_vae_name`,
`get_loaded_vae_hash` and the module attribute `loaded_vae_file` behave as A1111's do.

Where the files come from (spec §8): `.safetensors`, `.pt` and `.ckpt` under `models/VAE` and
`--vae-dir`, and `*.vae.{safetensors,pt,ckpt}` under the checkpoint folders. Pickled files are
read by `safe_load` (no pickled code runs).

Which VAE a model uses (`resolve_vae`), from the options `sd_vae` ("Automatic", "None" or a VAE
name) and `sd_vae_overrides_per_model_preferences` (default on):

- the file `--vae-path` names, when given (no option is consulted then);
- a VAE name, or "None", with the overrides option on: that VAE, or the checkpoint's own;
- otherwise a VAE beside the checkpoint (`<checkpoint stem>.vae.safetensors`, then `.vae.pt`,
  then `.vae.ckpt`) when there is one;
- otherwise the name or "None" of `sd_vae` ("Automatic": the checkpoint's own VAE).

A1111 also reads a per-checkpoint VAE from the extra-networks user metadata between the first
and second step; Serena has no user metadata yet, so that step is absent. A1111 takes any VAE whose
name merely starts with the checkpoint's stem as "beside the checkpoint"; Serena takes only the
three names above, in the same folder. A name `sd_vae` does not know is an error naming the known
VAEs (A1111 prints a line and uses the checkpoint's own VAE).

Swapping: the file's weights are converted (`sd_models_convert`) into a new diffusers
`AutoencoderKL` built beside the model, and only a module that loaded completely replaces the
model's VAE (`StableDiffusionModel.swap_vae`); the checkpoint's own VAE is kept aside, unchanged,
and comes back when "None" (or a checkpoint without a VAE choice) is selected. A job's
`override_settings` choose the VAE for that job only (`job_vae`): the model's previous VAE module
is put back afterwards, so the next job decodes with exactly the weights it would have had.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from modules import errors, hashes, safe_load, sd_models, shared

log = logging.getLogger(__name__)

VAE_EXTENSIONS = (".safetensors", ".pt", ".ckpt")
NEAR_CHECKPOINT_SUFFIXES = (".vae.safetensors", ".vae.pt", ".vae.ckpt")
AUTOMATIC = ("Automatic", "auto")  # "auto": A1111's old configs
vae_ignore_keys = {"model_ema.decay", "model_ema.num_updates"}
vae_dict: dict[str, str] = {}
unspecified = object()  # A1111: `reload_vae_weights(vae_file=unspecified)` resolves from the options
_listing = {"done": False}


def __getattr__(name: str) -> Any:
    """A1111's module globals, read from the current model:

    - `loaded_vae_file`: the VAE file it uses, else None (its own VAE);
    - `base_vae`: the state dict of its own VAE while a file's VAE is in use, else None;
    - `checkpoint_info`: the `CheckpointInfo` of the model whose VAE was last chosen, else None.
    """
    model = sd_models.model_data.sd_model
    if name == "loaded_vae_file":
        return getattr(model, "loaded_vae_file", None)
    if name == "base_vae":
        return get_base_vae(model) if model is not None else None
    if name == "checkpoint_info":
        return getattr(model, "sd_checkpoint_info", None)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_filename(filepath: str) -> str:
    """The name a VAE file is listed under (A1111 name): its base name."""
    return os.path.basename(filepath)


def get_base_vae(model: Any) -> dict[str, torch.Tensor] | None:
    """The state dict of `model`'s own VAE while a file's VAE replaces it, else None (A1111 name).
    The tensors are the kept module's own, not copies."""
    base = getattr(model, "base_vae", None)
    return base.state_dict() if base is not None else None


def store_base_vae(model: Any) -> None:
    """Accepted for compatibility: Serena keeps the model's own VAE aside whenever it swaps one in."""


def delete_base_vae() -> None:
    """Accepted for compatibility (see `store_base_vae`)."""


def restore_base_vae(model: Any) -> None:
    """Put `model`'s own VAE back (A1111 name)."""
    load_vae(model, None)


# --- the list -------------------------------------------------------------------------------------

def vae_folders() -> list[str]:
    """`<models>/VAE`, then `--vae-dir` (a later folder wins for a name found in both)."""
    vae_dir = getattr(shared.cmd_opts, "vae_dir", None)
    return [shared.data_paths.vae_dir] + ([vae_dir] if vae_dir else [])


def _checkpoint_folders() -> list[str]:
    ckpt_dir = getattr(shared.cmd_opts, "ckpt_dir", None)
    return [sd_models.sd_model_folder()] + ([ckpt_dir] if ckpt_dir else [])


def _walk(folder: str, keep: Callable[[str], bool]) -> list[str]:
    found = []
    if not os.path.isdir(folder):
        return found
    for root, _dirs, files in sorted(os.walk(folder, followlinks=True), key=lambda w: sd_models._natural_key(w[0])):
        found += [os.path.join(root, n) for n in sorted(files, key=sd_models._natural_key) if keep(n.lower())]
    return found


def refresh_vae_list() -> None:
    """Rebuild `vae_dict` (name → path, naturally sorted by name) from the folders of spec §8.

    As in A1111, the name is the base name; a later folder wins a name found twice (checkpoint
    folders, then `models/VAE`, then `--vae-dir`).
    """
    found: dict[str, str] = {}
    for folder in _checkpoint_folders():
        for path in _walk(folder, lambda n: n.endswith(NEAR_CHECKPOINT_SUFFIXES)):
            found[get_filename(path)] = path
    for folder in vae_folders():
        for path in _walk(folder, lambda n: n.endswith(VAE_EXTENSIONS)):
            found[get_filename(path)] = path
    vae_dict.clear()
    vae_dict.update(sorted(found.items(), key=lambda item: sd_models._natural_key(item[0])))
    _listing["done"] = True


def _ensure_listed() -> None:
    if not _listing["done"]:
        refresh_vae_list()


def vae_items() -> list[dict[str, str]]:
    """`/sdapi/v1/sd-vae`: `[{"model_name": name, "filename": path}]` in list order."""
    _ensure_listed()
    return [{"model_name": name, "filename": path} for name, path in vae_dict.items()]


def get_vae_file(name: str) -> str:
    """The path of the VAE called `name` (the list is read again once if it does not know it).

    Raises:
        errors.CheckpointNotFound: no VAE has that name; the message lists the known names.
    """
    _ensure_listed()
    if name not in vae_dict:
        refresh_vae_list()
    if name not in vae_dict:
        known = ", ".join(repr(n) for n in ("Automatic", "None", *vae_dict))
        raise errors.CheckpointNotFound(f"VAE {name!r} not found; known values of sd_vae: {known}", field="sd_vae")
    return vae_dict[name]


def find_vae_near_checkpoint(checkpoint_file: str) -> str | None:
    """`<stem>.vae.safetensors`, `.vae.pt` or `.vae.ckpt` beside the checkpoint, the first that exists."""
    if not checkpoint_file:
        return None
    stem = os.path.splitext(checkpoint_file)[0]
    for suffix in NEAR_CHECKPOINT_SUFFIXES:
        if os.path.isfile(stem + suffix):
            return stem + suffix
    return None


# --- the choice -----------------------------------------------------------------------------------

@dataclass
class VaeResolution:
    """A VAE choice: `vae` is the file (None: the checkpoint's own VAE); `source` says why."""

    vae: str | None = None
    source: str | None = None
    resolved: bool = True

    def tuple(self) -> tuple[str | None, str | None]:
        return self.vae, self.source


def is_automatic() -> bool:
    return shared.opts.sd_vae in AUTOMATIC


def resolve_vae_from_setting() -> VaeResolution:
    """The `sd_vae` option alone: "None" → the checkpoint's own, a name → that file, "Automatic" →
    unresolved. Raises CheckpointNotFound for an unknown name."""
    if shared.opts.sd_vae == "None":
        return VaeResolution(None, "None in settings")
    if is_automatic():
        return VaeResolution(resolved=False)
    return VaeResolution(get_vae_file(shared.opts.sd_vae), "specified in settings")


def resolve_vae_near_checkpoint(checkpoint_file: str) -> VaeResolution:
    near = find_vae_near_checkpoint(checkpoint_file)
    return VaeResolution(near, "found near the checkpoint") if near else VaeResolution(resolved=False)


def resolve_vae(checkpoint_file: str) -> VaeResolution:
    """The VAE the current (per-job) options choose for a checkpoint file (see the module docstring).

    `--vae-path` comes first and wins over every option, as in A1111.
    """
    forced = getattr(shared.cmd_opts, "vae_path", None)
    if forced:
        return VaeResolution(forced, "from commandline argument")
    if shared.opts.sd_vae_overrides_per_model_preferences and not is_automatic():
        return resolve_vae_from_setting()
    res = resolve_vae_near_checkpoint(checkpoint_file)
    if res.resolved:
        return res
    res = resolve_vae_from_setting()
    return res if res.resolved else VaeResolution(None, "the checkpoint's own")


# --- loading --------------------------------------------------------------------------------------

def load_vae_dict(filename: str, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A VAE file's tensors (LDM names), without the training loss and EMA counters.

    Raises:
        errors.CheckpointNotFound / errors.CheckpointLoadError: see `safe_load.load_state_dict`.
    """
    state = safe_load.load_state_dict(filename, map_location)
    return {k: v for k, v in state.items() if not k.startswith("loss") and k not in vae_ignore_keys}


def load_vae(model: sd_models.StableDiffusionModel, vae_file: str | None = None,
             vae_source: str = "from unknown source") -> None:
    """Make `model` decode and encode with `vae_file`'s weights (None: the checkpoint's own VAE).

    Raises:
        errors.CheckpointNotFound, errors.CheckpointLoadError: the file is missing, unreadable or
            does not fit; the model keeps the VAE it had.
    """
    if vae_file:
        log.info("Loading VAE weights %s: %s", vae_source, vae_file)
        module = sd_models.build_vae(load_vae_dict(vae_file), model, vae_file)
        model.swap_vae(module, vae_file, model.base_vae if model.base_vae is not None else model.vae)
        vae_dict.setdefault(os.path.basename(vae_file), vae_file)  # A1111: a used file is listed
    elif model.base_vae is not None:
        log.info("Restoring the checkpoint's own VAE")
        model.swap_vae(model.base_vae, None, None)


def _same_file(a: str | None, b: str | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and os.path.abspath(a) == os.path.abspath(b))


def reload_vae_weights(sd_model: sd_models.StableDiffusionModel | None = None,
                       vae_file: Any = unspecified) -> sd_models.StableDiffusionModel:
    """Give `sd_model` (default: the current model) the VAE the options choose, or `vae_file`.

    Nothing is loaded when that VAE is already in use.
    """
    model = sd_model or sd_models.model_data.get_sd_model()
    if vae_file is unspecified:
        info = model.sd_checkpoint_info
        vae_file, source = resolve_vae(info.filename if info is not None else "").tuple()
    else:
        source = "from function argument"
    if not _same_file(vae_file, model.loaded_vae_file):
        with sd_models.model_data.lock:
            load_vae(model, vae_file, source or "")
    return model


@contextlib.contextmanager
def job_vae(model: sd_models.StableDiffusionModel) -> Iterator[None]:
    """For one job: the VAE the job's effective options choose; afterwards, the model's VAE as before.

    The previous modules are put back as they were (no reload), so a per-job `sd_vae` never
    reaches the next job.
    """
    saved = (model.vae, model.loaded_vae_file, model.base_vae)
    try:
        reload_vae_weights(model)
        yield
    finally:
        if model.vae is not saved[0]:
            model.swap_vae(*saved)


def clear_loaded_vae() -> None:
    """A1111 name: forget the loaded file by putting the checkpoint's own VAE back."""
    model = sd_models.model_data.sd_model
    if model is not None:
        load_vae(model, None)


# --- infotext -------------------------------------------------------------------------------------

def get_loaded_vae_name(model: Any = None) -> str | None:
    """The base name of the VAE file `model` (default: the current model) uses; None for its own."""
    model = model if model is not None else sd_models.model_data.sd_model
    vae_file = getattr(model, "loaded_vae_file", None)
    return os.path.basename(vae_file) if vae_file else None


def get_loaded_vae_hash(model: Any = None) -> str | None:
    """The first 10 hex digits of the sha256 of that file (None without one, or under --no-hashing)."""
    model = model if model is not None else sd_models.model_data.sd_model
    vae_file = getattr(model, "loaded_vae_file", None)
    if not vae_file:
        return None
    digest = hashes.sha256(vae_file, f"vae/{os.path.abspath(vae_file)}")
    return digest[0:10] if digest else None


# --- the option -----------------------------------------------------------------------------------

def setup_option_hooks(opts: Any, wrap: Callable[[Callable[[], Any]], Callable[[], Any]] | None = None) -> None:
    """Make setting `sd_vae` or `sd_vae_overrides_per_model_preferences` apply to the loaded model.

    An unknown name or a file that does not load raises, and the option keeps its old value. With no
    model loaded yet only the name is checked (the model gets its VAE when it loads).
    """
    def on_vae_change() -> None:
        if sd_models.model_data.sd_model is None:
            resolve_vae_from_setting()
            return
        reload_vae_weights()

    hook = wrap(on_vae_change) if wrap else on_vae_change
    opts.onchange("sd_vae", hook)
    opts.onchange("sd_vae_overrides_per_model_preferences", hook)
