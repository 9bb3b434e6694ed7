"""The one place Serena imports `spandrel`, the model-architecture library A1111 loads upscalers with.

Why a loader module: spandrel 0.4.2 declares ``torchvision`` as a dependency and ``import spandrel``
imports every architecture it knows. Only two of them touch torchvision, both at import time:
LaMa (``torchvision.transforms.functional``: ``InterpolationMode``, ``rotate``) and RestoreFormer
(``normalize``). Serena pins the CPU build of torch, and the torchvision wheels the package index
offers beside it are CUDA builds that fail to import there ("operator torchvision::nms does not
exist"). So spandrel is installed with ``pip install --no-deps`` (``requirements-nodeps.txt``) and,
only when a real torchvision cannot be imported, :func:`import_spandrel` registers a minimal
stand-in for exactly those three names while spandrel is imported, then removes it again:

- ``normalize`` is implemented in torch (what RestoreFormer needs to run);
- ``rotate`` and ``InterpolationMode`` raise ``NotImplementedError`` naming LaMa, the only user.

The stand-in lives in ``sys.modules`` only during the import, so nothing else (transformers,
diffusers) ever mistakes it for an installed torchvision.

Model files are read by `modules.safe_load` (no pickled code runs); spandrel only sees the tensors.

Face restoration needs CodeFormer, which spandrel keeps in the separate ``spandrel_extra_arches``
package (pinned beside spandrel in ``requirements-nodeps.txt``, installed the same way: it declares
torchvision too but imports none). :func:`install_extra_architectures` adds its architectures to
spandrel's ``MAIN_REGISTRY`` once, as that package's documentation says; until then the registry
holds spandrel's own architectures only.
"""
from __future__ import annotations

import importlib.machinery
import sys
import threading
import types
from typing import Any

import torch

from modules import errors

_SHIM_NAMES = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
_lock = threading.Lock()
_spandrel: Any = None
_extra_installed = False


def normalize(tensor: torch.Tensor, mean: Any, std: Any, inplace: bool = False) -> torch.Tensor:
    """torchvision's ``normalize``: ``(tensor - mean) / std`` per channel of a ``[..., C, H, W]`` tensor."""
    if not isinstance(tensor, torch.Tensor) or tensor.dim() < 3:
        raise TypeError(f"normalize expects a tensor of shape [..., C, H, W], got {type(tensor).__name__}")
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    if (std_t == 0).any():
        raise ValueError(f"normalize: std {std!r} contains a zero")
    out = tensor if inplace else tensor.clone()
    return out.sub_(mean_t).div_(std_t)


def _lama_only(*_: Any, **__: Any) -> Any:
    raise NotImplementedError(
        "torchvision is not installed (Serena pins the CPU torch and no matching torchvision exists): "
        "the LaMa inpainting architecture in spandrel needs torchvision's rotate/InterpolationMode")


class _InterpolationModeStandIn:
    """Stand-in for ``torchvision.transforms.functional.InterpolationMode``: any use raises."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # introspection (copy, inspect) must still see a plain object
            raise AttributeError(name)
        _lama_only()


def _torchvision_importable() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:  # a CUDA build beside the CPU torch raises RuntimeError, not ImportError
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]  # what a failed import left half-initialised
        return False
    return True


def _shim_modules() -> dict[str, types.ModuleType]:
    """The stand-in package: ``torchvision.transforms.functional`` with the three names spandrel imports."""
    made = {}
    for name in _SHIM_NAMES:
        module = types.ModuleType(name, "Serena stand-in for torchvision while spandrel is imported")
        is_package = name != _SHIM_NAMES[-1]
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=is_package)
        if is_package:
            module.__path__ = []
        made[name] = module
    functional = made["torchvision.transforms.functional"]
    functional.normalize = normalize
    functional.rotate = _lama_only
    functional.InterpolationMode = _InterpolationModeStandIn()
    made["torchvision"].transforms = made["torchvision.transforms"]
    made["torchvision.transforms"].functional = functional
    return made


def import_spandrel() -> Any:
    """The ``spandrel`` module, imported once (with the torchvision stand-in when needed)."""
    global _spandrel
    with _lock:
        if _spandrel is not None:
            return _spandrel
        if _torchvision_importable():
            import spandrel
        else:
            shim = _shim_modules()
            sys.modules.update(shim)
            try:
                import spandrel
            finally:
                for name, module in shim.items():
                    if sys.modules.get(name) is module:
                        del sys.modules[name]
        _spandrel = spandrel
        return spandrel


def install_extra_architectures() -> None:
    """Register ``spandrel_extra_arches`` (CodeFormer among them) with spandrel's registry, once."""
    global _extra_installed
    import_spandrel()
    with _lock:
        if _extra_installed:
            return
        import spandrel_extra_arches
        spandrel_extra_arches.install(ignore_duplicates=True)
        _extra_installed = True


def canonicalize(state: dict[str, Any]) -> dict[str, Any]:
    """Unwrap the containers model files put their weights in (``params_ema``, ``params``, ``model``, …)."""
    return import_spandrel().canonicalize_state_dict(state)


def load_descriptor(state_dict: dict[str, torch.Tensor], path: str) -> Any:
    """A spandrel model descriptor (architecture detected from the keys) for the tensors of ``path``.

    Raises:
        errors.CheckpointLoadError: no architecture spandrel knows matches, or the tensors do not
            fit the detected one (a truncated or edited file); the message names ``path``.
    """
    spandrel = import_spandrel()
    try:
        return spandrel.ModelLoader(device=torch.device("cpu")).load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError as e:
        raise errors.CheckpointLoadError(
            f"{path!r} is not a model architecture spandrel recognises ({len(state_dict)} tensors; "
            f"first keys: {', '.join(list(state_dict)[:3])})") from e
    except Exception as e:  # shape mismatches surface as RuntimeError/KeyError/ValueError from torch
        detail = " ".join(str(e).split())
        detail = detail if len(detail) <= 300 else detail[:300] + " …"
        raise errors.CheckpointLoadError(
            f"cannot build a model from {path!r} (truncated or edited weights?): {type(e).__name__}: {detail}") from e


def architecture_module(arch_id: str) -> Any:
    """``spandrel.architectures.<arch_id>``: its model class builds demo files (`modules.demo_upscalers`)."""
    import importlib
    import_spandrel()
    return importlib.import_module(f"spandrel.architectures.{arch_id}")
