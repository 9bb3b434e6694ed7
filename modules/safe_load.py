"""Reading model files without ever running code from them.

`.safetensors` files hold only tensors and are read with the safetensors library. Pickled files
(`.ckpt`, `.pt`, `.pth`, `.bin`) go through `torch.load(weights_only=True)`, whose unpickler
accepts tensors and plain containers only: a file that asks for any other callable is refused
before that callable is looked up, so nothing in it executes. A few globals that only rebuild
data are allowed besides (`_data_globals`: numpy scalars, arrays and dtypes, and an inert stand-in for
the Lightning callback class that LDM training checkpoints use as a dict key), as A1111's
restricted unpickler allows them. Every failure becomes a
`CheckpointLoadError` naming the file.
"""
from __future__ import annotations

import codecs
import json
import os
import pickle
import struct
import zipfile
from typing import Any

import numpy
import torch

from modules import errors

SAFETENSORS_EXTENSIONS = (".safetensors",)
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin")
MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit on the JSON header


class LightningCallbackName:
    """Inert stand-in for `pytorch_lightning...ModelCheckpoint`, which LDM training checkpoints
    (the official SD 1.x `.ckpt` files among them) name as a dict key in their "callbacks"."""


def _data_globals() -> list[tuple[Any, str]]:
    """Globals that old checkpoints name and that only rebuild data (A1111's safe unpickler
    allows the same): numpy scalars, arrays and dtypes, `set`, `_codecs.encode`, the Lightning key."""
    multiarray = getattr(getattr(numpy, "_core", None), "multiarray", None) or numpy.core.multiarray
    named = [(getattr(multiarray, f), f"numpy.{core}.multiarray.{f}") for f in ("scalar", "_reconstruct")
             for core in ("core", "_core")]
    return [*named, (numpy.dtype, "numpy.dtype"), (numpy.ndarray, "numpy.ndarray"),
            (set, "__builtin__.set"), (codecs.encode, "_codecs.encode"),
            (LightningCallbackName, "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint"),
            *((cls, f"numpy.dtypes.{name}") for name, cls in vars(numpy.dtypes).items()
              if isinstance(cls, type) and issubclass(cls, numpy.dtype))]


def is_safetensors(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in SAFETENSORS_EXTENSIONS


def load_state_dict(path: str, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Every tensor of a model file, keyed by name, on `device`.

    A pickled checkpoint that nests its weights under "state_dict" is unwrapped (LDM training
    checkpoints do).

    Raises:
        errors.CheckpointNotFound: the file does not exist.
        errors.CheckpointLoadError: the file is corrupt, truncated, holds pickled code, or is
            not a mapping of names to tensors.
    """
    if not os.path.isfile(path):
        raise errors.CheckpointNotFound(f"checkpoint file not found: {path!r}")
    if is_safetensors(path):
        state = _load_safetensors(path, device)
    else:
        state = _load_pickle(path, device)
    return _tensors_only(path, state)


def _prefetch(path: str) -> None:
    """Ask the kernel to read the file ahead, in file order, while the model is being built.

    safetensors maps the file lazily, so without this the first generation faults the weights in
    in module order, which is random access on disk.
    """
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass
    finally:
        os.close(fd)


def _load_safetensors(path: str, device: str | torch.device) -> dict[str, Any]:
    import safetensors.torch
    _prefetch(path)
    try:
        return safetensors.torch.load_file(path, device=str(device))
    except Exception as e:  # safetensors raises its own SafetensorError and OSError variants
        raise errors.CheckpointLoadError(
            f"cannot read {path!r} as safetensors (corrupt or truncated?): {type(e).__name__}: {e}") from e


def _load_pickle(path: str, device: str | torch.device) -> Any:
    mmap = zipfile.is_zipfile(path)
    try:
        with torch.serialization.safe_globals(_data_globals()):
            state = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise errors.CheckpointLoadError(
            f"refused to load {path!r}: it holds pickled objects other than tensors (code that would run "
            f"on load); convert it to .safetensors with a trusted tool. Details: {e}".strip()) from e
    except Exception as e:
        raise errors.CheckpointLoadError(
            f"cannot read {path!r} as a torch checkpoint (corrupt or truncated?): {type(e).__name__}: {e}") from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    return state


def _tensors_only(path: str, state: Any) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict):
        raise errors.CheckpointLoadError(f"{path!r} does not hold a state dict (found {type(state).__name__})")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            out[str(key)] = value
        # Training checkpoints carry scalars and optimiser state beside the weights; they are
        # not weights and are left out on purpose.
    if not out:
        raise errors.CheckpointLoadError(f"{path!r} holds no tensors")
    return out


def read_safetensors_metadata(path: str) -> dict[str, Any]:
    """The `__metadata__` of a .safetensors header (values JSON-decoded when they parse as JSON)."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > min(MAX_HEADER, os.path.getsize(path) - 8):
                raise ValueError(f"header length {length} is impossible")
            header = json.loads(f.read(length))
    except (OSError, struct.error, ValueError) as e:
        raise errors.CheckpointLoadError(f"cannot read the safetensors header of {path!r}: {e}") from e
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if isinstance(value, str) and value[:1] in "{[":
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key] = value
    return out
