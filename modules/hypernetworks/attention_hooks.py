"""Hypernetworks inside the diffusers UNet: forward pre-hooks on every attention layer's `to_k`/`to_v`.

A1111 rewrites its attention forward to compute `k = to_k(hyper_k(context))` and
`v = to_v(hyper_v(context))`, where `context` is the text conditioning in cross-attention and the
layer's own input in self-attention. In diffusers both are `Attention` modules whose `to_k`/`to_v`
Linear layers receive that context as their input, so a pre-hook that transforms the input gives the
same result without touching the attention code or any weight. The hooks read
`hypernetwork.loaded_hypernetworks` at call time (as A1111 reads `shared.loaded_hypernetworks`) and
are removed when the job ends, leaving the UNet exactly as it was.
"""
from __future__ import annotations

from typing import Any

import torch

from modules.hypernetworks import hypernetwork


def attention_layers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The UNet's diffusers `Attention` modules that have separate `to_k`/`to_v` projections."""
    from diffusers.models.attention_processor import Attention
    return [m for m in unet.modules() if isinstance(m, Attention)
            and isinstance(getattr(m, "to_k", None), torch.nn.Module)
            and isinstance(getattr(m, "to_v", None), torch.nn.Module)]


def _pre_hook(which: int) -> Any:
    """A `to_k` (`which=0`) or `to_v` (`which=1`) pre-hook that transforms the layer's input."""
    def hook(module: torch.nn.Module, args: tuple) -> tuple | None:
        if not args or not hypernetwork.loaded_hypernetworks:
            return None
        context = args[0]
        return (hypernetwork.apply_to_context(hypernetwork.loaded_hypernetworks, context, which), *args[1:])
    return hook


class AttentionHooks:
    """The hooks in one model now (at most one set): `install(unet)` and `remove()`."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self.unet: torch.nn.Module | None = None

    @property
    def installed(self) -> bool:
        return bool(self.handles)

    def install(self, unet: torch.nn.Module) -> None:
        """Hook `unet`'s attention projections (moving the hooks there from another model if needed)."""
        if self.unet is unet and self.handles:
            return
        self.remove()
        for layer in attention_layers(unet):
            self.handles.append(layer.to_k.register_forward_pre_hook(_pre_hook(0)))
            self.handles.append(layer.to_v.register_forward_pre_hook(_pre_hook(1)))
        self.unet = unet

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        self.unet = None


hooks = AttentionHooks()
"""The process's hooks (one job runs at a time)."""
