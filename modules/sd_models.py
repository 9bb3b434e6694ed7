"""Checkpoints: the registry of files with A1111's titles, hashes and aliases, and loading one
into diffusers / transformers parts.

Registry (A1111 names kept — scripts and extensions import them): `checkpoints_list` maps each
title ("sub/name.safetensors [0123456789]") to a `CheckpointInfo`; `checkpoint_aliases` maps every
alias of spec §1.6 (title, relative name, model_name, stem, old 8-hex hash, short and full
sha256, "name [hash]") to the same object. `list_models()` rebuilds both from the model folders.

Loading reads the file safely (`safe_load`), infers every size from tensor shapes
(`sd_models_config`), renames keys (`sd_models_convert`) and assigns the tensors into modules
built on the meta device, so the weights are held once. Keys that do not fit are reported by
name. The current model lives in `model_data.sd_model` (`shared.sd_model`). A loaded model gets
the VAE the `sd_vae` options choose (`modules.sd_vae`); `build_vae` and
`StableDiffusionModel.swap_vae` are the model side of that.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import logging
import os
import re
import threading
from typing import Any, Callable, Iterable, Mapping

import torch

from modules import (devices, errors, hashes, safe_load, sd_attention, sd_compile, sd_models_config, sd_models_convert,
                     sd_vae, sd_vae_tiling)
from modules.runtime import unet_batching

log = logging.getLogger(__name__)

CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt")
TOKENIZER_SUBDIR = "clip-vit-large-patch14"
_re_strip_checksum = re.compile(r"\s*\[[^]]+]\s*$")

checkpoints_list: dict[str, "CheckpointInfo"] = {}
checkpoint_aliases: dict[str, "CheckpointInfo"] = {}
checkpoint_alisases = checkpoint_aliases  # A1111's misspelt name, kept for extensions
checkpoints_loaded: "collections.OrderedDict[CheckpointInfo, Any]" = collections.OrderedDict()  # A1111 RAM cache; unused
model_hash = hashes.model_hash  # A1111 name


# --- registry -------------------------------------------------------------------------------------

def sd_model_folder() -> str:
    """The main checkpoint folder, `<models>/Stable-diffusion`."""
    from modules import shared
    return shared.data_paths.sd_model_dir


class FolderPath(str):
    """A folder path that can also be called for itself: A1111's `sd_models.model_path` is a string
    (`os.path.join(sd_models.model_path, …)` in extensions), while Serena's code calls `model_path()`."""

    def __call__(self) -> str:
        return str(self)


def __getattr__(name: str) -> Any:
    """`model_path`: the main checkpoint folder now (it follows --data-dir / --models-dir)."""
    if name == "model_path":
        return FolderPath(sd_model_folder())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _cmd_opt(name: str, default: Any = None) -> Any:
    from modules import shared
    return getattr(shared.cmd_opts, name, default)


def _relative_name(filename: str) -> str:
    """A1111's `name`: the path relative to --ckpt-dir or the model folder, else the base name."""
    abspath = os.path.abspath(filename)
    ckpt_dir = _cmd_opt("ckpt_dir")
    for root in ([os.path.abspath(ckpt_dir)] if ckpt_dir else []) + [os.path.abspath(sd_model_folder())]:
        if abspath.startswith(root + os.sep):
            return abspath[len(root) + 1:]
    return os.path.basename(filename)


class CheckpointInfo:
    """One checkpoint file and every name it can be called by.

    Attributes follow A1111: `filename` (path), `name` (relative path), `name_for_extra` (stem),
    `model_name` (name without extension, separators → "_"), `hash` (old 8-hex), `sha256`,
    `shorthash` (10-hex), `title`, `short_title`, `ids` (every alias).
    """

    def __init__(self, filename: str, compute_hash: bool | None = None):
        self.filename = filename
        self.name = _relative_name(filename)
        self.name_for_extra = os.path.splitext(os.path.basename(filename))[0]
        self.model_name = os.path.splitext(self.name.replace("/", "_").replace("\\", "_"))[0]
        self.is_safetensors = safe_load.is_safetensors(filename)
        self.hash = hashes.model_hash(filename)
        self.metadata: dict[str, Any] = {}
        if self.is_safetensors:
            try:
                self.metadata = safe_load.read_safetensors_metadata(filename)
            except errors.CheckpointLoadError:
                pass  # a damaged file is still listed; loading it reports the damage
        # As A1111: listing reads the hash cache only; a file is hashed when it is first loaded
        # (`calculate_shorthash`), so a folder of new multi-GB files lists at once.
        self.sha256 = hashes.sha256_from_cache(filename, self.hash_title)
        if self.sha256 is None and compute_hash:
            self.sha256 = hashes.sha256(filename, self.hash_title, no_hashing=False)
        self._set_names()

    @property
    def hash_title(self) -> str:
        """The key of this file in the hash cache."""
        return f"checkpoint/{self.name}"

    def _set_names(self) -> None:
        self.shorthash = self.sha256[0:10] if self.sha256 else None
        self.title = self.name if self.shorthash is None else f"{self.name} [{self.shorthash}]"
        self.short_title = self.name_for_extra if self.shorthash is None else f"{self.name_for_extra} [{self.shorthash}]"
        self.ids = [self.hash, self.model_name, self.title, self.name, self.name_for_extra, f"{self.name} [{self.hash}]"]
        if self.shorthash:
            self.ids += [self.shorthash, self.sha256, f"{self.name} [{self.shorthash}]",
                         f"{self.name_for_extra} [{self.shorthash}]"]

    def register(self) -> None:
        """Add this file to `checkpoints_list` under its title and to `checkpoint_aliases` under every id."""
        checkpoints_list[self.title] = self
        for alias in self.ids:
            checkpoint_aliases[alias] = self

    def calculate_shorthash(self) -> str | None:
        """Compute the sha256 now if it is unknown (None under --no-hashing); re-register on change."""
        if self.sha256 is None:
            self.sha256 = hashes.sha256(self.filename, self.hash_title)
            if self.sha256 is None:
                return None
            old_title = self.title
            self._set_names()
            if checkpoints_list.get(old_title) is self:
                rebuilt = {(self.title if t == old_title else t): v for t, v in checkpoints_list.items()}
                checkpoints_list.clear()
                checkpoints_list.update(rebuilt)
                for alias in self.ids:
                    checkpoint_aliases[alias] = self
        return self.shorthash

    def __repr__(self) -> str:
        return f"CheckpointInfo({self.title!r}, filename={self.filename!r})"


def _natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def find_checkpoint_files(folders: Iterable[str | None]) -> list[str]:
    """Checkpoint files under `folders`, recursively, naturally sorted; `*.vae.*` and duplicates skipped."""
    from modules import shared
    hidden = bool(getattr(shared.opts, "list_hidden_files", True))
    seen: set[str] = set()
    found: list[str] = []
    for folder in folders:
        if not folder or not os.path.isdir(folder):
            continue
        for root, _dirs, files in sorted(os.walk(folder, followlinks=True), key=lambda w: _natural_key(w[0])):
            for name in sorted(files, key=_natural_key):
                path = os.path.join(root, name)
                stem, ext = os.path.splitext(name)
                if ext.lower() not in CHECKPOINT_EXTENSIONS or stem.lower().endswith(".vae"):
                    continue
                if not hidden and any(part.startswith(".") for part in os.path.relpath(path, folder).split(os.sep)):
                    continue
                real = os.path.realpath(path)
                if real not in seen:
                    seen.add(real)
                    found.append(path)
    return found


def list_models() -> None:
    """Rebuild the registry: `--ckpt` first (registered and selected), then the model folders."""
    from modules import shared
    checkpoints_list.clear()
    checkpoint_aliases.clear()
    cmd_ckpt = _cmd_opt("ckpt")
    if cmd_ckpt and os.path.isfile(cmd_ckpt):
        info = CheckpointInfo(cmd_ckpt)
        info.register()
        shared.opts.data["sd_model_checkpoint"] = info.title
    elif cmd_ckpt:
        log.warning("Checkpoint in --ckpt argument not found: %s", cmd_ckpt)
    for filename in find_checkpoint_files([sd_model_folder(), _cmd_opt("ckpt_dir")]):
        CheckpointInfo(filename).register()


def checkpoint_tiles(use_short: bool = False) -> list[str]:
    """Titles for the checkpoint dropdown (A1111 name)."""
    return [info.short_title if use_short else info.title for info in checkpoints_list.values()]


def get_closet_checkpoint_match(search_string: str | None) -> CheckpointInfo | None:
    """A1111's lookup (name kept, sic): exact alias, else the shortest title containing the text,
    else the same without a trailing "[hash]"."""
    if not search_string:
        return None
    info = checkpoint_aliases.get(search_string)
    if info is not None:
        return info
    for text in (search_string, _re_strip_checksum.sub("", search_string)):
        found = sorted((i for i in checkpoints_list.values() if text and text in i.title), key=lambda i: len(i.title))
        if found:
            return found[0]
    return None


def get_checkpoint_info(alias: str) -> CheckpointInfo:
    """The checkpoint an alias names (any form of spec §1.6).

    Raises:
        errors.CheckpointNotFound: nothing matches; the message lists the known titles.
    """
    if not checkpoints_list:
        list_models()
    info = get_closet_checkpoint_match(alias)
    if info is None:
        known = ", ".join(repr(t) for t in checkpoints_list) or "none (the model folder is empty)"
        raise errors.CheckpointNotFound(f"checkpoint {alias!r} not found; known checkpoints: {known}", field="sd_model_checkpoint")
    return info


def select_checkpoint() -> CheckpointInfo:
    """The checkpoint option `sd_model_checkpoint` names, else the first one listed.

    Raises:
        errors.CheckpointNotFound: no checkpoint exists at all.
    """
    from modules import shared
    if not checkpoints_list:
        list_models()
    wanted = shared.opts.sd_model_checkpoint
    info = checkpoint_aliases.get(wanted) if wanted else None
    if info is not None:
        return info
    if not checkpoints_list:
        folders = [f for f in (sd_model_folder(), _cmd_opt("ckpt_dir")) if f]
        raise errors.CheckpointNotFound(
            f"no checkpoint found in {folders}: put a .safetensors or .ckpt file there, or pass --ckpt")
    info = next(iter(checkpoints_list.values()))
    if wanted:
        log.warning("Checkpoint %s not found; loading fallback %s", wanted, info.title)
    return info


# --- the loaded model -----------------------------------------------------------------------------

def sd1_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """SD1's training noise schedule: "scaled linear" betas, cumulative product of 1 - beta (float32)."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float32)


class StableDiffusionModel(torch.nn.Module):
    """An SD1.x, SD2.x or SDXL checkpoint as diffusers/transformers parts, with the A1111 model surface
    samplers, scripts and extensions use (`is_sd1`/`is_sd2`/`is_sdxl`, `cond_stage_model`,
    `get_learned_conditioning`, `apply_model`, `first_stage_model`, `conditioning_key`)."""

    is_sd1 = True
    is_sd2 = False
    is_sdxl = False
    is_sd3 = False
    is_sdxl_inpaint = False
    is_sdxl_refiner = False
    detected_parameterization = "eps"
    latent_channels = 4
    cond_stage_key = "txt"

    def __init__(self, unet: torch.nn.Module, vae: torch.nn.Module, text_encoder: torch.nn.Module | None, *,
                 checkpoint_info: CheckpointInfo | None, config: sd_models_config.ModelConfig,
                 alphas_cumprod: torch.Tensor, device: torch.device,
                 text_encoder_2: torch.nn.Module | None = None,
                 devices_config: devices.DeviceConfig | None = None):
        super().__init__()
        self.unet = unet
        self.vae = vae
        self.text_encoder = text_encoder
        self.text_encoder_2 = text_encoder_2
        self.__dict__["_tokenizer"] = None
        self.__dict__["_cond_stage_model"] = None
        self.sd_checkpoint_info = checkpoint_info
        self.sd_model_checkpoint = checkpoint_info.filename if checkpoint_info else None
        self.sd_model_hash = checkpoint_info.shorthash if checkpoint_info else None
        self.config = config
        architecture = config.architecture
        self.is_sd1 = architecture == sd_models_config.SD1
        self.is_sd2 = architecture == sd_models_config.SD2
        self.is_sdxl = architecture == sd_models_config.SDXL
        self.is_sdxl_inpaint = self.is_sdxl and config.is_inpainting
        self.is_sdxl_refiner = self.is_sdxl and bool(getattr(config, "is_refiner", False))
        self.__dict__["detected_parameterization"] = getattr(config, "prediction", "eps")
        self.conditioning_key = "crossattn-adm" if self.is_sdxl else ("hybrid" if config.is_inpainting else "crossattn")
        self.is_inpainting = config.is_inpainting
        self.register_buffer("alphas_cumprod", alphas_cumprod.to(torch.float32), persistent=False)
        self.home_device = device  # where the model runs; `unload_model_weights` may park it on the CPU
        self.device_config = devices_config or devices.DeviceConfig(device, next(unet.parameters()).dtype,
                                                                    next(vae.parameters()).dtype)
        self.scale_factor = float(getattr(vae.config, "scaling_factor", sd_models_config.SCALE_FACTOR))
        self.loaded_vae_file: str | None = None  # the VAE file `self.vae` came from (None: the checkpoint's own)
        self.__dict__["base_vae"] = None  # the checkpoint's own VAE while a file's VAE is in use (not a submodule)

    @property
    def parameterization(self) -> str:
        """"eps" or "v": the option `sd_prediction_type` when it is not "Automatic", else what loading
        found (a `.yaml` beside the file, else A1111's probe for SD2; "eps" for SD1 and SDXL)."""
        from modules import shared
        chosen = getattr(shared.opts, "sd_prediction_type", "Automatic")
        return chosen if chosen in ("eps", "v") else self.detected_parameterization

    @parameterization.setter
    def parameterization(self, value: str) -> None:
        self.__dict__["detected_parameterization"] = value

    @property
    def base_vae(self) -> torch.nn.Module | None:
        """The checkpoint's own VAE module while `vae` is one from a file (`sd_vae`), else None."""
        return self.__dict__["base_vae"]

    def swap_vae(self, vae: torch.nn.Module, vae_file: str | None, base_vae: torch.nn.Module | None) -> None:
        """Make `vae` (loaded from `vae_file`; None: the checkpoint's own) the VAE this model uses.

        `base_vae` is the checkpoint's own VAE to keep aside (None when `vae` is it). Nothing is
        copied: modules are swapped, so going back to a VAE gives exactly its old weights. The
        module put in use moves to the device of the one it replaces; off the CPU, the one kept
        aside waits on the CPU.
        """
        device = next(self.vae.parameters()).device
        self.vae = vae.to(device)
        if self.device_config.channels_last:
            self.vae.to(memory_format=torch.channels_last)
        if base_vae is not None and base_vae is not vae and device.type != "cpu":
            base_vae.to(devices.cpu)
        self.__dict__["base_vae"] = None if base_vae is vae else base_vae
        self.loaded_vae_file = vae_file
        sd_attention.apply(self)
        sd_compile.apply(self)

    @property
    def device(self) -> torch.device:
        """The device the UNet's weights are on now."""
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the UNet and text encoder weights."""
        return next(self.unet.parameters()).dtype

    @property
    def dtype_vae(self) -> torch.dtype:
        return next(self.vae.parameters()).dtype

    @property
    def tokenizer(self) -> Any:
        """The CLIP tokenizer, loaded from `<models>/tokenizers/clip-vit-large-patch14` on first use."""
        if self.__dict__["_tokenizer"] is None:
            from modules import clip_tokenizer, shared
            self.__dict__["_tokenizer"] = clip_tokenizer.load_tokenizer(
                os.path.join(shared.data_paths.tokenizers_dir, TOKENIZER_SUBDIR))
        return self.__dict__["_tokenizer"]

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        self.__dict__["_tokenizer"] = value
        self.__dict__["_cond_stage_model"] = None

    @property
    def cond_stage_model(self) -> Any:
        """The prompt conditioner for this architecture, built on first use: SD1
        `text_conditioner.ClipConditioner`, SD2 `OpenClipConditioner`, SDXL `sd_models_xl.SdxlConditioner`."""
        if self.__dict__["_cond_stage_model"] is None:
            self.__dict__["_cond_stage_model"] = self._build_conditioner()
        return self.__dict__["_cond_stage_model"]

    def _build_conditioner(self) -> Any:
        from modules import sd_models_xl, shared, text_conditioner
        if self.is_sd2:
            return text_conditioner.OpenClipConditioner(self.tokenizer, self.text_encoder)
        if not self.is_sdxl:
            return text_conditioner.ClipConditioner(self.tokenizer, self.text_encoder)
        clip_l = None
        if self.text_encoder is not None:
            clip_l = text_conditioner.SdxlClipLConditioner(
                self.tokenizer, self.text_encoder, use_clip_skip=lambda: bool(shared.opts.sdxl_clip_l_skip))
        clip_g = text_conditioner.SdxlOpenClipConditioner(self.tokenizer, self.text_encoder_2)
        return sd_models_xl.SdxlConditioner(clip_l, clip_g, is_refiner=self.is_sdxl_refiner)

    @property
    def first_stage_model(self) -> torch.nn.Module:
        return self.vae

    @torch.no_grad()
    def get_learned_conditioning(self, texts: list[str]) -> Any:
        """Text conditioning with the current Clip skip / emphasis / word-wrap options: `[B, 77·k, D]`
        (SD1, SD2), or for SDXL `{"crossattn": [B, 77·k, D], "vector": [B, A]}` sized by the
        `width`/`height` of `texts` (a `prompt_parser.SdConditioning`)."""
        from modules import shared
        opts = shared.opts
        common = dict(clip_skip=int(opts.CLIP_stop_at_last_layers), emphasis=opts.emphasis,
                      comma_padding_backtrack=int(opts.comma_padding_backtrack))
        if not self.is_sdxl:
            return self.cond_stage_model(list(texts), **common)
        return self.cond_stage_model(
            texts, **common, crop_top=int(opts.sdxl_crop_top), crop_left=int(opts.sdxl_crop_left),
            aesthetic_score=(float(opts.sdxl_refiner_high_aesthetic_score), float(opts.sdxl_refiner_low_aesthetic_score)))

    @torch.no_grad()
    def apply_model(self, x: torch.Tensor, t: torch.Tensor | float, cond: Any,
                    c_concat: torch.Tensor | None = None) -> torch.Tensor:
        """The UNet's output (eps, or v for a v-prediction model) for latents `x` at timesteps `t`,
        in `x`'s dtype.

        `cond` is the text conditioning tensor, or for SDXL a dict whose `crossattn` goes to the
        cross-attention and `vector` to the class embedding. `c_concat` (inpainting image
        conditioning) is concatenated on the channel axis.
        """
        if c_concat is not None:
            x_in = torch.cat([x, c_concat.to(device=x.device, dtype=x.dtype)], dim=1)
        else:
            x_in = x
        t = torch.as_tensor(t, device=self.device)
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        config = self.device_config
        compute = torch.float32 if config.autocast else self.dtype
        extra: dict[str, Any] = {}
        if isinstance(cond, dict):
            extra["class_labels"] = cond["vector"].to(self.device, compute)
            cond = cond["crossattn"]
        x_in = x_in.to(self.device, compute)
        if config.channels_last:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        with self._unet_autocast():
            out = unet_batching.forward(self.unet, x_in, t.to(self.device, torch.float32),
                                        encoder_hidden_states=cond.to(self.device, compute), **extra)
        return out.to(x.dtype)

    def _unet_autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the UNet's half dtype when the model computes it that way (`--upcast-sampling`)."""
        if not self.device_config.autocast or self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    @torch.no_grad()
    def encode_first_stage(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] → latents × scale_factor (posterior mean: deterministic)."""
        mean = sd_vae_tiling.encode(self.vae, self._vae_input(x))
        return (mean * self.scale_factor).to(x.dtype)

    @torch.no_grad()
    def decode_first_stage(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (scaled) → images in about [-1, 1]."""
        return sd_vae_tiling.decode(self.vae, self._vae_input(z / self.scale_factor)).to(z.dtype)

    def _vae_input(self, x: torch.Tensor) -> torch.Tensor:
        """`x` on the VAE's device and dtype, channels-last when the model uses that format."""
        x = x.to(self.device, self.dtype_vae)
        return x.contiguous(memory_format=torch.channels_last) if self.device_config.channels_last else x

    def get_first_stage_encoding(self, encoder_posterior: Any) -> torch.Tensor:
        """Scaled latents from what `encode_first_stage` returned (A1111 name).

        Serena's `encode_first_stage` already returns scaled latents, which pass through unchanged;
        a diffusers posterior (`latent_dist`, or an object with `mean`) gives its mean × scale_factor
        (deterministic, where A1111 samples the distribution)."""
        if isinstance(encoder_posterior, torch.Tensor):
            return encoder_posterior
        posterior = getattr(encoder_posterior, "latent_dist", encoder_posterior)
        if hasattr(posterior, "mean"):
            return posterior.mean * self.scale_factor
        raise TypeError(f"encoder_posterior of type {type(encoder_posterior).__name__} is not supported")


class ModelData:
    """Holder of the current model (A1111's `sd_models.model_data`)."""

    def __init__(self) -> None:
        self.sd_model: StableDiffusionModel | None = None
        self.loaded_sd_models: list[StableDiffusionModel] = []
        self.was_loaded_at_least_once = False
        self.lock = threading.RLock()

    def get_sd_model(self) -> StableDiffusionModel:
        """The current model, loading the selected checkpoint if none is loaded."""
        with self.lock:
            if self.sd_model is None:
                load_model()
            assert self.sd_model is not None
            return self.sd_model

    def set_sd_model(self, model: StableDiffusionModel | None) -> None:
        """Make `model` current and first of `loaded_sd_models` (None: drop the current model)."""
        previous = self.sd_model
        self.sd_model = model
        others = [m for m in self.loaded_sd_models if m is not model and m is not previous]
        if model is None:
            self.loaded_sd_models = others
            return
        kept = [previous] if previous is not None and previous is not model else []
        self.loaded_sd_models = [model] + kept + others
        self.was_loaded_at_least_once = True
        self.trim(_checkpoints_limit())

    def trim(self, limit: int) -> None:
        """Keep at most `limit` models loaded (option `sd_checkpoints_limit`), dropping the least
        recently used; the current model always stays."""
        while len(self.loaded_sd_models) > max(limit, 1):
            dropped = self.loaded_sd_models.pop()
            log.info("Unloading %s: more than %d checkpoints loaded", getattr(dropped.sd_checkpoint_info, "title", "?"), limit)

    def find_loaded(self, info: CheckpointInfo) -> StableDiffusionModel | None:
        """The loaded model of checkpoint `info`, if it is among `loaded_sd_models`."""
        wanted = os.path.abspath(info.filename)
        for model in self.loaded_sd_models:
            loaded = model.sd_checkpoint_info
            if loaded is not None and os.path.abspath(loaded.filename) == wanted:
                return model
        return None


def _checkpoints_limit() -> int:
    from modules import shared
    try:
        return int(shared.opts.sd_checkpoints_limit)
    except (AttributeError, TypeError, ValueError):
        return 1


model_data = ModelData()


_INIT_FUNCTIONS = ("uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
                   "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_")
_init_lock = threading.Lock()


@contextlib.contextmanager
def _no_init_on_meta() -> Any:
    """`torch.nn.init`'s functions skip meta tensors while modules are built on the meta device.

    Their values would be thrown away (every tensor is then assigned from the file), but drawing them
    is most of the build: ~0.3 s of the ~0.55 s for SDXL's 2,500 tensors, through the meta device's
    function mode. Other threads are not affected: a tensor that is not on the meta device gets the
    real function.
    """
    def skipping(original: Callable) -> Callable:
        @functools.wraps(original)
        def init(tensor: Any, *args: Any, **kwargs: Any) -> Any:
            return tensor if getattr(tensor, "is_meta", False) else original(tensor, *args, **kwargs)
        return init

    with _init_lock:
        originals = {n: getattr(torch.nn.init, n) for n in _INIT_FUNCTIONS if hasattr(torch.nn.init, n)}
        for n, fn in originals.items():
            setattr(torch.nn.init, n, skipping(fn))
        try:
            yield
        finally:
            for n, fn in originals.items():
                setattr(torch.nn.init, n, fn)


def _build_part(name: str, factory: Callable[[], torch.nn.Module], state: dict[str, torch.Tensor],
                dtype: torch.dtype, device: torch.device, filename: str) -> torch.nn.Module:
    """Build a module on the meta device and assign `state` into it; keys must match exactly."""
    with _no_init_on_meta(), torch.device("meta"):
        module = factory()
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {sd_models_convert._names(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {sd_models_convert._names(unexpected)}")
        raise errors.CheckpointLoadError(f"{name} weights in {filename!r} do not fit: " + "; ".join(parts))
    cast = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in state.items()}
    try:
        module.load_state_dict(cast, strict=True, assign=True)
    except RuntimeError as e:
        raise errors.CheckpointLoadError(f"{name} weights in {filename!r} do not fit: {e}") from e
    for buffer_name, buffer in list(module.named_buffers()):
        if buffer.is_meta:
            if not buffer_name.endswith("position_ids"):
                raise errors.CheckpointLoadError(f"{name}: buffer {buffer_name!r} has no value after loading {filename!r}")
            owner_name, _, attr = buffer_name.rpartition(".")
            owner = module.get_submodule(owner_name)
            owner.register_buffer(attr, torch.arange(buffer.shape[-1]).expand(buffer.shape), persistent=False)
    return module.to(device).eval().requires_grad_(False)


def build_vae(state_dict: Mapping[str, torch.Tensor], model: StableDiffusionModel, filename: str) -> torch.nn.Module:
    """A VAE module for `model` from a VAE file's tensors in the A1111/LDM layout (`encoder.*`,
    `decoder.*`, `quant_conv.*`, `post_quant_conv.*`), with the dtype and device of the model's VAE.

    The model is not touched: the module is built on its own, so a file that does not fit leaves
    the model's VAE as it was.

    Raises:
        errors.CheckpointLoadError: the file holds no VAE weights, or keys or shapes that do not
            fit the model's VAE; the message names the file and the keys.
    """
    from diffusers import AutoencoderKL

    if not any(k.startswith(("encoder.", "decoder.")) for k in state_dict):
        raise errors.CheckpointLoadError(
            f"{filename!r} holds no VAE weights: a VAE file has encoder.* and decoder.* keys "
            f"(found {sd_models_convert._names(sorted(state_dict))})", field="sd_vae")
    config = model.config.vae
    converted, unmapped = sd_models_convert.convert_part(state_dict, "", sd_models_convert.vae_table(config))
    if unmapped:
        raise errors.CheckpointLoadError(
            f"VAE file {filename!r} does not fit the loaded model's VAE: unexpected keys ({len(unmapped)}): "
            f"{sd_models_convert._names(unmapped)}", field="sd_vae")
    current = next(model.vae.parameters())
    try:
        return _build_part("VAE", lambda: AutoencoderKL(**config), converted, current.dtype, current.device, filename)
    except errors.CheckpointLoadError as e:  # the message names the file and the keys
        e.field = "sd_vae"
        raise


def _build_unet(config: sd_models_config.ModelConfig, state: dict[str, torch.Tensor], dtype: torch.dtype,
                device: torch.device, filename: str) -> torch.nn.Module:
    """The UNet; when `config.needs_prediction_probe`, built in float32 on the CPU first so that
    A1111's v-prediction probe decides `config.prediction`, then moved to `device` / `dtype`
    (a float16 file costs one float32 copy of the UNet for that while, as in A1111)."""
    from diffusers import UNet2DConditionModel

    def factory() -> torch.nn.Module:
        return UNet2DConditionModel(**config.unet)

    if not config.needs_prediction_probe:
        return _build_part("UNet", factory, state, dtype, device, filename)
    unet = _build_part("UNet", factory, state, torch.float32, devices.cpu, filename)
    is_v = sd_models_config.is_v_prediction(unet)
    config.prediction = sd_models_config.V if is_v else sd_models_config.EPS
    config.needs_prediction_probe = False
    config.notes.append(f"A1111's v-prediction probe reads {config.prediction!r}")
    return torch.nn.Module.to(unet, device=device, dtype=dtype)  # diffusers' own `to` warns about dtype casts


def _build_text_encoder(source: sd_models_config.EncoderSource, kwargs: dict[str, Any],
                        state: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device,
                        filename: str) -> torch.nn.Module:
    """A transformers CLIPTextModel, or CLIPTextModelWithProjection when `source.projection`."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if source.projection else CLIPTextModel
    name = "CLIP text encoder" if source.layout == sd_models_config.HF_CLIP else "OpenCLIP text encoder"
    clip_config = CLIPTextConfig(**kwargs)
    return _build_part(name, lambda: cls(clip_config), state, dtype, device, filename)


def build_model(state_dict: Mapping[str, torch.Tensor], *, filename: str = "",
                checkpoint_info: CheckpointInfo | None = None, device: torch.device | None = None,
                dtype: torch.dtype | None = None, dtype_vae: torch.dtype | None = None,
                prediction: str | None = None) -> StableDiffusionModel:
    """A StableDiffusionModel from an LDM/sgm-layout state dict of SD1.x, SD2.x or SDXL (the
    tensors are reused, not copied, when their dtype is the target dtype).

    `prediction` ("eps" / "v") overrides the detection (`sd_models_config.infer_config`); the
    model's `parameterization` is the one chosen. SD2 and SDXL use SD1's scaled-linear schedule
    unless the file carries `alphas_cumprod`.

    Raises:
        errors.UnsupportedModel: a recognised model Serena does not load (SD2 depth-to-image).
        errors.CheckpointLoadError: keys or shapes that do not fit; the message names them.
    """
    from diffusers import AutoencoderKL

    chosen = devices.current()
    device = device or chosen.device
    dtype_text = chosen.text_dtype if dtype is None else dtype  # an explicit dtype is for every part
    dtype = dtype or chosen.dtype
    dtype_vae = dtype_vae or (dtype if dtype == torch.float32 else chosen.dtype_vae)
    same = dtype == chosen.dtype and dtype_vae == chosen.dtype_vae  # a caller's own dtypes: no chosen compute mode
    speed = dataclasses.replace(chosen, device=device, dtype=dtype, dtype_vae=dtype_vae, dtype_text=dtype_text,
                                autocast=same and chosen.autocast, channels_last=same and chosen.channels_last)
    config = sd_models_config.infer_config(state_dict, filename, prediction)
    parts = sd_models_convert.convert_model(state_dict, config, filename)
    alphas = state_dict.get("alphas_cumprod")
    alphas = alphas.to(torch.float32) if alphas is not None and alphas.shape == (1000,) else sd1_alphas_cumprod()
    unet = _build_unet(config, parts.unet, dtype, device, filename)
    vae = _build_part("VAE", lambda: AutoencoderKL(**config.vae), parts.vae, dtype_vae, device, filename)
    configs = {"text_encoder": config.clip, "text_encoder_2": config.clip2}
    states = {"text_encoder": parts.text_encoder, "text_encoder_2": parts.text_encoder_2}
    encoders = {source.slot: _build_text_encoder(source, configs[source.slot] or {}, states[source.slot] or {},
                                                 dtype_text, device, filename)
                for source in config.encoders}
    if speed.channels_last:
        unet.to(memory_format=torch.channels_last)
        vae.to(memory_format=torch.channels_last)
    model = StableDiffusionModel(unet, vae, encoders.get("text_encoder"), checkpoint_info=checkpoint_info,
                                 config=config, alphas_cumprod=alphas, device=device,
                                 text_encoder_2=encoders.get("text_encoder_2"), devices_config=speed)
    model.parameterization = config.prediction
    sd_attention.apply(model)
    sd_compile.apply(model)
    return model


def load_checkpoint(info: CheckpointInfo, *, device: torch.device | None = None, dtype: torch.dtype | None = None,
                    dtype_vae: torch.dtype | None = None) -> StableDiffusionModel:
    """Read and build one checkpoint without making it current."""
    state_dict = safe_load.load_state_dict(info.filename)
    model = build_model(state_dict, filename=info.filename, checkpoint_info=info,
                        device=device, dtype=dtype, dtype_vae=dtype_vae)
    del state_dict
    if model.sd_model_hash is None:
        model.sd_model_hash = info.calculate_shorthash()
    return model


def load_model(checkpoint_info: CheckpointInfo | None = None, *, device: torch.device | None = None,
               dtype: torch.dtype | None = None, dtype_vae: torch.dtype | None = None) -> StableDiffusionModel:
    """Load a checkpoint (default: `select_checkpoint()`) and make it `model_data.sd_model`.

    The previous model stays current until the new one is fully built, with the VAE the `sd_vae`
    options choose (`sd_vae.reload_vae_weights`), so a failed load (of the checkpoint or of that
    VAE) leaves it in place. The option `sd_model_checkpoint` is set to the loaded title.
    """
    from modules import shared
    info = checkpoint_info or select_checkpoint()
    with model_data.lock:
        log.info("Loading weights from %s", info.filename)
        model = load_checkpoint(info, device=device, dtype=dtype, dtype_vae=dtype_vae)
        sd_vae.reload_vae_weights(model)  # the VAE option's choice, before the model becomes current
        previous = model_data.sd_model
        model_data.set_sd_model(model)
        if previous is not None and previous in model_data.loaded_sd_models \
                and shared.opts.sd_checkpoints_keep_in_cpu and previous.home_device.type != "cpu":
            previous.to(devices.cpu)
        shared.opts.data["sd_model_checkpoint"] = info.title
        shared.opts.data["sd_checkpoint_hash"] = info.sha256
        del previous
        devices.torch_gc()
    _run_model_loaded_callbacks(model)
    return model


def _run_model_loaded_callbacks(model: StableDiffusionModel) -> None:
    try:
        from modules import script_callbacks
    except ImportError:
        return
    callback = getattr(script_callbacks, "model_loaded_callback", None)
    if callback is not None:
        callback(model)


def reload_model_weights(sd_model: StableDiffusionModel | None = None,
                         info: CheckpointInfo | None = None) -> StableDiffusionModel:
    """Make `info` (default: the selected checkpoint) the current model.

    Nothing is reloaded when it is already current (its weights go back to the device if
    `unload_model_weights` moved them off). If loading fails the previous model stays current
    and the error propagates.
    """
    info = info or select_checkpoint()
    with model_data.lock:
        current = model_data.sd_model
        if current is not None and current.sd_checkpoint_info is not None \
                and os.path.abspath(current.sd_checkpoint_info.filename) == os.path.abspath(info.filename):
            if current.device != current.home_device:
                current.to(current.home_device)
            return current
        loaded = model_data.find_loaded(info)
        if loaded is not None:
            return _make_current(loaded, info)
        return load_model(info)


def _make_current(model: StableDiffusionModel, info: CheckpointInfo) -> StableDiffusionModel:
    """Switch to a model kept loaded (`sd_checkpoints_limit` > 1): it goes back to its device and,
    with `sd_checkpoints_keep_in_cpu`, the one it replaces waits on the CPU."""
    from modules import shared
    previous = model_data.sd_model
    if previous is not None and shared.opts.sd_checkpoints_keep_in_cpu and previous.home_device.type != "cpu":
        previous.to(devices.cpu)
    if model.device != model.home_device:
        model.to(model.home_device)
    model_data.set_sd_model(model)
    shared.opts.data["sd_model_checkpoint"] = info.title
    shared.opts.data["sd_checkpoint_hash"] = info.sha256
    _run_model_loaded_callbacks(model)
    return model


def unload_model_weights(sd_model: StableDiffusionModel | None = None,
                         info: CheckpointInfo | None = None) -> StableDiffusionModel | None:
    """Free the device memory the model holds.

    On an accelerator the weights move to the CPU (`reload_model_weights` moves them back); on
    the CPU the model is dropped and the next use loads it again.
    """
    with model_data.lock:
        model = sd_model or model_data.sd_model
        if model is None:
            return None
        if model.home_device.type != "cpu":
            model.to(devices.cpu)
        elif model is model_data.sd_model:
            model_data.set_sd_model(None)
        devices.torch_gc()
        return model


def setup_option_hooks(opts: Any, wrap: Callable[[Callable[[], Any]], Callable[[], Any]] | None = None) -> None:
    """Make setting `sd_model_checkpoint` switch the model, `sd_vae` its VAE (see
    `sd_vae.setup_option_hooks`) and `cross_attention_optimization` its attention implementation;
    the composition root calls this once.

    `wrap` lets the caller run the switch under the queue lock. An unknown alias raises
    CheckpointNotFound and a failed load raises CheckpointLoadError; in both cases the option
    keeps its old value and the previous model stays loaded.
    """
    def on_checkpoint_change() -> None:
        info = get_checkpoint_info(opts.sd_model_checkpoint)
        if model_data.sd_model is None and not model_data.was_loaded_at_least_once:
            opts.data["sd_model_checkpoint"] = info.title
            return
        reload_model_weights(info=info)

    def on_attention_change() -> None:
        model = model_data.sd_model
        if model is not None:
            sd_attention.apply(model)
            sd_compile.reset_graphs(model)  # graphs captured with the old attention kernels

    opts.onchange("sd_model_checkpoint", wrap(on_checkpoint_change) if wrap else on_checkpoint_change)
    opts.onchange("cross_attention_optimization", wrap(on_attention_change) if wrap else on_attention_change)
    sd_vae.setup_option_hooks(opts, wrap)


# --- A1111's helpers extensions call -----------------------------------------------------------------

CHECKPOINT_DICT_REPLACEMENTS = {
    "cond_stage_model.transformer.embeddings.": "cond_stage_model.transformer.text_model.embeddings.",
    "cond_stage_model.transformer.encoder.": "cond_stage_model.transformer.text_model.encoder.",
    "cond_stage_model.transformer.final_layer_norm.": "cond_stage_model.transformer.text_model.final_layer_norm.",
}
"""Old SD1 text-encoder key prefixes and the ones A1111's `read_state_dict` renames them to."""


def transform_checkpoint_dict_key(key: str) -> str:
    """A1111 name: `key` with an old text-encoder prefix renamed (see CHECKPOINT_DICT_REPLACEMENTS)."""
    for old, new in CHECKPOINT_DICT_REPLACEMENTS.items():
        if key.startswith(old):
            return new + key[len(old):]
    return key


def read_state_dict(checkpoint_file: str, print_global_state: bool = False,
                    map_location: str | torch.device | None = None) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (A1111 name): unwrapped from "state_dict", old text-encoder
    keys renamed as A1111 does, on `map_location` (default: the CPU).

    Pickled files go through `safe_load`, which never runs code from the file (whatever
    --disable-safe-unpickle says); non-tensor entries such as "global_step" are left out, so
    `print_global_state` has nothing to print.

    Raises:
        errors.CheckpointNotFound / errors.CheckpointLoadError: see `safe_load.load_state_dict`.
    """
    state = safe_load.load_state_dict(checkpoint_file, map_location or devices.cpu)
    return {transform_checkpoint_dict_key(k): v for k, v in state.items()}


def get_checkpoint_state_dict(checkpoint_info: CheckpointInfo, timer: Any = None) -> dict[str, torch.Tensor]:
    """The tensors of `checkpoint_info`'s file (A1111 name); its short hash is computed first, as
    A1111 does, and `timer.record(...)` is called after each step when a timer is given."""
    checkpoint_info.calculate_shorthash()
    if timer is not None:
        timer.record("calculate hash")
    log.info("Loading weights [%s] from %s", checkpoint_info.shorthash, checkpoint_info.filename)
    state = read_state_dict(checkpoint_info.filename)
    if timer is not None:
        timer.record("load weights from disk")
    return state


def model_target_device(m: Any) -> torch.device:
    """The device `m` runs on when it is not parked (A1111 name)."""
    return getattr(m, "home_device", None) or devices.device


def send_model_to_cpu(m: Any) -> None:
    """Move the model's weights to the CPU and free the accelerator's cache (A1111 name)."""
    m.to(devices.cpu)
    devices.torch_gc()


def send_model_to_device(m: Any) -> None:
    """Move the model's weights back to the device it runs on (A1111 name)."""
    m.to(model_target_device(m))


def send_model_to_trash(m: Any) -> None:
    """Drop the model's weights (A1111 moves them to the meta device). Serena also forgets the
    model, so the next use of its checkpoint loads the file again instead of finding an empty model."""
    with model_data.lock:
        if m is model_data.sd_model:
            model_data.set_sd_model(None)
        elif m in model_data.loaded_sd_models:
            model_data.loaded_sd_models.remove(m)
    m.to(device="meta")
    devices.torch_gc()


def apply_token_merging(sd_model: Any, token_merging_ratio: float) -> None:
    """Accepted for compatibility: Serena has no token merging (ToMe), so nothing changes."""
