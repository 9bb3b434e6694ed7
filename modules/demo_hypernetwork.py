"""A tiny hypernetwork for the demo checkpoint, in A1111's `.pt` layout, for tests and demos.

It has one entry, for the demo text encoder's width (`demo_checkpoint.CLIP_CONFIG["hidden_size"]`,
64), which is the context width of the demo UNet's cross-attention (and, as the demo UNet's
attention blocks are 64 channels wide, of its self-attention too: A1111 applies a hypernetwork to
both). The weights are drawn from a generator seeded by the salt, large enough (Xavier-normal) that
the images visibly change. torch writes a random serialization id, so the bytes of two files differ
while their tensors are equal.
"""
from __future__ import annotations

import io
import os
import zlib

import torch

from modules import demo_checkpoint
from modules.fileio import atomic_write_bytes
from modules.hypernetworks.hypernetwork import Hypernetwork

SALT = "serena-demo-hypernetwork"


def demo_width() -> int:
    """The demo checkpoint's context width."""
    return int(demo_checkpoint.CLIP_CONFIG["hidden_size"])


def build_demo_hypernetwork(name: str = "demo", salt: str = SALT, width: int | None = None,
                            layer_structure: tuple = (1, 2, 1), activation_func: str = "relu",
                            add_layer_norm: bool = False, use_dropout: bool = False) -> Hypernetwork:
    """The same `Hypernetwork` for the same arguments: one (k, v) pair at `width` (default 64)."""
    generator = torch.Generator().manual_seed(demo_checkpoint.SEED ^ zlib.crc32(salt.encode("utf8")))
    hypernetwork = Hypernetwork(name=name, enable_sizes=[width or demo_width()], layer_structure=list(layer_structure),
                                activation_func=activation_func, weight_init="XavierNormal",
                                add_layer_norm=add_layer_norm, use_dropout=use_dropout, activate_output=False,
                                last_layer_dropout=False, generator=generator)
    hypernetwork.step = 100
    hypernetwork.sd_checkpoint = "0123456789"
    hypernetwork.sd_checkpoint_name = "serena-demo-tiny"
    return hypernetwork


def write_demo_hypernetwork(path: str, **kwargs) -> str:
    """Write `build_demo_hypernetwork(**kwargs)` to `path` as A1111 saves it (`torch.save` of its dict)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    kwargs.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    buffer = io.BytesIO()
    torch.save(build_demo_hypernetwork(**kwargs).state_dict(), buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path
