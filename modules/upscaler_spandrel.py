"""Model upscalers from A1111's folders (ESRGAN, Real-ESRGAN, SwinIR, DAT, HAT, ScuNET), run through spandrel.

Discovery: every ``.pth``, ``.pt`` and ``.safetensors`` file under ``models/ESRGAN``,
``models/RealESRGAN``, ``models/SwinIR``, ``models/DAT``, ``models/HAT`` and ``models/ScuNET``
(sub-folders included; A1111 lists ``.pth``/``.pt`` only, the safer ``.safetensors`` is Serena's
addition) becomes an upscaler named by its file stem, as A1111 names user files.
Two folders also know A1111's published models by file name: ``RealESRGAN_x4plus.pth`` is listed
as "R-ESRGAN 4x+" (shown when named in the option ``realesrgan_enabled_models``) and
``DAT_x4.pth`` also as "DAT x4" (option ``dat_enabled_models``). Nothing is downloaded: a model
A1111 would fetch on first use is listed only once its file is in the folder.

Loading: `modules.safe_load` reads the tensors (a pickled file cannot run code), spandrel detects
the architecture from the keys (`modules.spandrel_loader`), and the result must be a 3-channel
image-to-image model of the folder's kind (ESRGAN/Real-ESRGAN: RRDBNet or SRVGGNetCompact; the
others their own architecture); otherwise a `CheckpointLoadError` names the file. Loaded models
are cached by path, modification time and size, and run in float32 on the CPU.

Inference: as A1111 feeds these models, the image goes in as BGR in ``[0, 1]``; it is processed in
tiles of the folder's tile/overlap options (`modules.upscaler_tiling`, tile 0 = whole image) and
comes back rounded to 8 bits. One call runs the model once at its native scale;
`modules.upscaling.UpscalerData.upscale` repeats it until the requested scale is reached and
lands on the exact size with Lanczos, as A1111 does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from modules import errors
from modules.fileio import FileModelCache

EXTENSIONS = (".pth", ".pt", ".safetensors")
CACHE_SIZE = 2


@dataclass(frozen=True)
class ModelFolder:
    """One of A1111's upscaler folders under ``models/`` and how its models are listed and run.

    Attributes:
        folder: the folder name under the models directory.
        architectures: spandrel architecture ids accepted from this folder.
        tile_option, overlap_option: the options holding the tile size and overlap in pixels.
        model_name: A1111's ``Upscaler.model_name`` for the folder, reported by ``/sdapi/v1/upscalers``.
        listed_scale: the scale A1111 reports for a user file (it does not open the file to list it).
    """

    folder: str
    architectures: tuple[str, ...]
    tile_option: str
    overlap_option: str
    model_name: str | None = None
    listed_scale: float | None = 4


FOLDERS: tuple[ModelFolder, ...] = (
    ModelFolder("ESRGAN", ("ESRGAN", "Compact"), "ESRGAN_tile", "ESRGAN_tile_overlap", model_name="ESRGAN_4x"),
    ModelFolder("RealESRGAN", ("ESRGAN", "Compact"), "ESRGAN_tile", "ESRGAN_tile_overlap"),
    ModelFolder("SwinIR", ("SwinIR",), "SWIN_tile", "SWIN_tile_overlap", model_name="SwinIR 4x"),
    ModelFolder("DAT", ("DAT",), "DAT_tile", "DAT_tile_overlap", listed_scale=None),
    ModelFolder("HAT", ("HAT",), "ESRGAN_tile", "ESRGAN_tile_overlap"),  # A1111 tiles HAT with the ESRGAN options
    ModelFolder("ScuNET", ("SCUNet",), "SCUNET_tile", "SCUNET_tile_overlap", model_name="ScuNET GAN"),
)
FOLDERS_BY_NAME = {f.folder: f for f in FOLDERS}


@dataclass(frozen=True)
class KnownModel:
    """A model A1111 lists under its own display name when its file is present and the option enables it."""

    folder: str
    stem: str
    name: str
    scale: float
    url: str
    enabled_option: str


_DAT_URL = "https://huggingface.co/w-e-w/DAT/resolve/main/experiments/pretrained_models/DAT"
KNOWN_MODELS: tuple[KnownModel, ...] = (
    *(KnownModel("RealESRGAN", stem, name, scale, url, "realesrgan_enabled_models") for stem, name, scale, url in (
        ("realesr-general-x4v3", "R-ESRGAN General 4xV3", 4,
         "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-general-x4v3.pth"),
        ("realesr-general-wdn-x4v3", "R-ESRGAN General WDN 4xV3", 4,
         "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-general-wdn-x4v3.pth"),
        ("realesr-animevideov3", "R-ESRGAN AnimeVideo", 4,
         "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-animevideov3.pth"),
        ("RealESRGAN_x4plus", "R-ESRGAN 4x+", 4,
         "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth"),
        ("RealESRGAN_x4plus_anime_6B", "R-ESRGAN 4x+ Anime6B", 4,
         "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth"),
        ("RealESRGAN_x2plus", "R-ESRGAN 2x+", 2,
         "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth"),
    )),
    *(KnownModel("DAT", f"DAT_x{n}", f"DAT x{n}", n, f"{_DAT_URL}/DAT_x{n}.pth", "dat_enabled_models")
      for n in (2, 3, 4)),
)


@dataclass(frozen=True)
class ModelFile:
    """One listed model upscaler: its name, file and folder."""

    name: str
    path: str
    folder: ModelFolder
    scale: float | None
    model_name: str | None


# --- discovery ------------------------------------------------------------------------------------
def _stem(path: str) -> str:
    """A1111's ``friendly_name``: the file name without folder and extension."""
    return os.path.splitext(os.path.basename(path))[0]


def _files_under(root: str, list_hidden: bool) -> list[str]:
    """Model files under ``root`` (recursively, sorted; hidden folders only when ``list_hidden``)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if list_hidden or not d.startswith("."))
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(EXTENSIONS)]
    return found


def discover(models_path: str, enabled: dict[str, list[str]] | None = None,
             list_hidden: bool = True) -> list[ModelFile]:
    """Every model upscaler found under ``models_path``, in folder order (names are not yet unique).

    Args:
        models_path: the models directory (``--models-dir``).
        enabled: option name → enabled display names, for :data:`KNOWN_MODELS`.
        list_hidden: include files in folders whose name starts with a dot (option ``list_hidden_files``).
    """
    enabled = enabled or {}
    out: list[ModelFile] = []
    for folder in FOLDERS:
        files = _files_under(os.path.join(models_path, folder.folder), list_hidden)
        by_stem = {_stem(p): p for p in files}
        known = [k for k in KNOWN_MODELS if k.folder == folder.folder and k.stem in by_stem]
        out += [ModelFile(k.name, by_stem[k.stem], folder, k.scale, folder.model_name)
                for k in known if k.name in enabled.get(k.enabled_option, [])]
        display_only = {k.stem for k in known if k.folder == "RealESRGAN"}  # A1111 lists these by display name only
        out += [ModelFile(_stem(p), p, folder, folder.listed_scale, folder.model_name)
                for p in files if _stem(p) not in display_only]
    return out


def folders_signature(models_path: str) -> tuple:
    """What :func:`discover` depends on in the file system: each folder's modification time.

    A file added or removed directly in a folder changes it; one added in a sub-folder is seen
    at the next change of the folder itself (or ``upscaling.refresh_model_upscalers(force=True)``).
    """
    stamps = []
    for folder in FOLDERS:
        try:
            stamps.append(os.stat(os.path.join(models_path, folder.folder)).st_mtime_ns)
        except OSError:
            stamps.append(None)
    return (models_path, *stamps)


# --- loading --------------------------------------------------------------------------------------
def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The tensors of a model file, unwrapped from ``params_ema``/``params``/… as published files nest them.

    Raises:
        errors.CheckpointNotFound: no such file.
        errors.CheckpointLoadError: truncated, not a model file, or pickled code (refused unrun).
    """
    from modules import safe_load, spandrel_loader
    if safe_load.is_safetensors(path):
        return safe_load.load_state_dict(path)
    if not os.path.isfile(path):
        raise errors.CheckpointNotFound(f"upscaler model file not found: {path!r}")
    raw = safe_load._load_pickle(path, "cpu")  # the safe unpickler; nested dicts are unwrapped below
    if not isinstance(raw, dict):
        raise errors.CheckpointLoadError(f"{path!r} does not hold a state dict (found {type(raw).__name__})")
    return safe_load._tensors_only(path, spandrel_loader.canonicalize(raw))


def check_descriptor(descriptor: Any, path: str, folder: ModelFolder) -> None:
    """Refuse a model that is not a 3-channel image-to-image upscaler of ``folder``'s kind.

    Raises:
        errors.CheckpointLoadError: naming ``path``, the detected architecture and what the folder expects.
    """
    arch = descriptor.architecture.id
    purpose = getattr(descriptor, "purpose", "?")
    expected = ", ".join(folder.architectures)
    if arch not in folder.architectures:
        raise errors.CheckpointLoadError(
            f"{path!r} is a {arch} model ({purpose}); models/{folder.folder} holds {expected} models")
    if purpose not in ("SR", "Restoration") or not hasattr(descriptor, "scale"):
        raise errors.CheckpointLoadError(f"{path!r} is a {arch} {purpose} model, not an image upscaler")
    if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
        raise errors.CheckpointLoadError(
            f"{path!r} maps {descriptor.input_channels} to {descriptor.output_channels} channels; "
            f"an upscaler needs RGB in and out")


_cache = FileModelCache(size=CACHE_SIZE)


def load_model(path: str, folder: ModelFolder) -> Any:
    """The spandrel descriptor of ``path`` (float32, CPU, eval), cached by path, mtime and size.

    Raises:
        errors.CheckpointNotFound, errors.CheckpointLoadError: see :func:`read_state_dict` and
            :func:`check_descriptor`; each names the file.
    """
    def load() -> Any:
        from modules import devices, spandrel_loader
        descriptor = spandrel_loader.load_descriptor(read_state_dict(path), path)
        check_descriptor(descriptor, path, folder)
        descriptor.to(devices.cpu)
        descriptor.to(torch.float32)
        descriptor.eval()
        return descriptor

    return _cache.get(path, load, extra_key=folder.folder,
                      missing=lambda e: errors.CheckpointNotFound(f"upscaler model file not found: {path!r}"))


def clear_cache() -> None:
    """Drop every loaded model."""
    _cache.clear()


# --- inference ------------------------------------------------------------------------------------
def image_to_tensor(image: Image.Image) -> torch.Tensor:
    """An RGB image as A1111 feeds upscaler models: ``[1, 3, H, W]`` float32, BGR order, in ``[0, 1]``."""
    array = np.asarray(image.convert("RGB"), dtype=np.float32)[:, :, ::-1] / 255.0
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))[None]


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """The inverse of :func:`image_to_tensor`: clamped to ``[0, 1]``, rounded to 8 bits."""
    array = tensor[0].detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).numpy()
    return Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)[:, :, ::-1]), "RGB")


def run_model(descriptor: Any, image: Image.Image, tile: int, overlap: int) -> Image.Image:
    """One pass of ``descriptor`` over ``image`` at the model's native scale, tiled as asked."""
    from modules import upscaler_tiling
    with torch.inference_mode():
        out = upscaler_tiling.tiled_apply(image_to_tensor(image), descriptor, int(tile), int(overlap))
    return tensor_to_image(out)


def upscale_step(model: ModelFile, image: Image.Image, scale: float) -> Image.Image:
    """The :data:`modules.upscaling.UpscaleStep` of a model file (``scale`` is handled by the caller)."""
    from modules import shared
    descriptor = load_model(model.path, model.folder)
    opts = shared.opts
    return run_model(descriptor, image, getattr(opts, model.folder.tile_option),
                     getattr(opts, model.folder.overlap_option))


def list_realesrgan_models(models_path: str) -> list[dict[str, Any]]:
    """The ``/sdapi/v1/realesrgan-models`` response: A1111's Real-ESRGAN models whose file is in
    ``models/RealESRGAN`` (A1111 also lists the ones it would download; Serena downloads nothing)."""
    by_stem = {_stem(p): p for p in _files_under(os.path.join(models_path, "RealESRGAN"), list_hidden=True)}
    return [{"name": k.name, "path": by_stem[k.stem], "scale": int(k.scale)}
            for k in KNOWN_MODELS if k.folder == "RealESRGAN" and k.stem in by_stem]
