"""Seamless tiling: Conv2d layers of the UNet and VAE pad circularly for one job, then are restored.

With circular padding every convolution sees the image as a torus, so the generated picture
wraps: its left edge continues its right edge and its top continues its bottom.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch


def _conv_layers(model: Any) -> list[torch.nn.Conv2d]:
    """Every Conv2d of the model's UNet and VAE (or of `model` itself if it is a Module)."""
    parts = [getattr(model, name, None) for name in ("unet", "vae")]
    if isinstance(model, torch.nn.Module):
        parts.append(model)
    layers: list[torch.nn.Conv2d] = []
    seen: set[int] = set()
    for part in parts:
        if not isinstance(part, torch.nn.Module):
            continue
        for module in part.modules():
            if isinstance(module, torch.nn.Conv2d) and id(module) not in seen:
                seen.add(id(module))
                layers.append(module)
    return layers


def set_tiling(model: Any, enabled: bool) -> list[tuple[torch.nn.Conv2d, str]]:
    """Switch padding to circular (enabled) or zeros; returns the previous modes to restore."""
    previous = []
    for layer in _conv_layers(model):
        previous.append((layer, layer.padding_mode))
        layer.padding_mode = "circular" if enabled else "zeros"
    return previous


@contextlib.contextmanager
def tiled(model: Any, enabled: bool) -> Iterator[None]:
    """Inside the block the model tiles if `enabled`; padding modes are restored on exit."""
    if not enabled or model is None:
        yield
        return
    previous = set_tiling(model, True)
    try:
        yield
    finally:
        for layer, mode in previous:
            layer.padding_mode = mode
