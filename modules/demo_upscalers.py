"""Tiny random-weight upscaler files in the real key layouts, for tests and demos.

One file per layout A1111 users drop into ``models/<folder>``:

- ESRGAN, old layout (``model.0.weight``, ``model.1.sub.N.RDBr.convc.0.weight``, …);
- ESRGAN, new layout (``conv_first``, ``RRDB_trunk.N.RDBr.convc``, ``trunk_conv``, ``upconv1/2``,
  ``HRconv``, ``conv_last``), saved as .safetensors;
- Real-ESRGAN RRDBNet (BasicSR: ``body.N.rdbr.convc``, ``conv_body``, ``conv_up1/2``, ``conv_hr``)
  and Real-ESRGAN SRVGGNetCompact (``body.N.weight``), both wrapped in ``{"params_ema": …}`` as the
  published .pth files are;
- SwinIR, DAT, HAT and SCUNet, whose attention layouts are too long to spell out by hand: their
  tensors come from spandrel's own model classes built with tiny hyper-parameters (through
  `modules.spandrel_loader`), then saved like the published files (``{"params": …}``).

The ESRGAN and Compact tensors are written here key by key, so spandrel's detection reading them
back is an independent check of the layout. Widths are a few channels: a 64×64 image upscales in
well under a second. Every file is a pure function of this module (seeded generators), and the
images they make are noise-like patterns, not upscales.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from typing import Callable

import torch

SEED = 20251203


@dataclass(frozen=True)
class DemoFile:
    """One demo file: where it goes and what spandrel must detect in it."""

    folder: str
    filename: str
    architecture: str
    scale: int
    build: Callable[[], dict]


def _tensor(name: str, shape: tuple[int, ...], std: float = 0.05) -> torch.Tensor:
    """A reproducible random tensor seeded by its key name."""
    gen = torch.Generator().manual_seed(SEED ^ zlib.crc32(name.encode()))
    return torch.randn(shape, generator=gen) * std


def _conv(state: dict, prefix: str, cin: int, cout: int, k: int = 3, bias: float | None = None) -> None:
    state[f"{prefix}.weight"] = _tensor(f"{prefix}.weight", (cout, cin, k, k), std=(2.0 / (cin * k * k)) ** 0.5 * 0.5)
    state[f"{prefix}.bias"] = torch.full((cout,), bias) if bias is not None else _tensor(f"{prefix}.bias", (cout,))


def _rrdb_blocks(state: dict, key: Callable[[int, int, int], str], blocks: int, nf: int, gc: int) -> None:
    """Residual-in-residual dense blocks: 3 dense blocks of 5 convs each per RRDB."""
    for b in range(blocks):
        for r in (1, 2, 3):
            for c in range(1, 6):
                _conv(state, key(b, r, c), nf + (c - 1) * gc, nf if c == 5 else gc)


def esrgan_old(nf: int = 8, gc: int = 32, blocks: int = 1, scale: int = 4, channels: int = 3) -> dict:
    """ESRGAN's original layout: one ``model`` sequence, upsampling convs every 3 indices."""
    state: dict = {}
    _conv(state, "model.0", channels, nf)
    _rrdb_blocks(state, lambda b, r, c: f"model.1.sub.{b}.RDB{r}.conv{c}.0", blocks, nf, gc)
    _conv(state, f"model.1.sub.{blocks}", nf, nf)
    steps = {1: 0, 2: 1, 4: 2, 8: 3}[scale]
    for i in range(steps):
        _conv(state, f"model.{3 + 3 * i}", nf, nf)
    _conv(state, f"model.{2 + 3 * steps}", nf, nf)
    _conv(state, f"model.{4 + 3 * steps}", nf, channels, bias=0.5)
    return state


def _rrdbnet(names: tuple[str, ...], block_key: Callable[[int, int, int], str], nf: int, gc: int,
             blocks: int) -> dict:
    """A named 4× RRDBNet: first conv, RRDB blocks, then the trunk, two upsampling, HR and last convs
    (`names` gives those six convs' names in that order)."""
    first, trunk, up1, up2, hr, last = names
    state: dict = {}
    _conv(state, first, 3, nf)
    _rrdb_blocks(state, block_key, blocks, nf, gc)
    for name in (trunk, up1, up2, hr):
        _conv(state, name, nf, nf)
    _conv(state, last, nf, 3, bias=0.5)
    return state


def esrgan_new(nf: int = 8, gc: int = 32, blocks: int = 1) -> dict:
    """The ESRGAN repository's named layout (always 4×: two upsampling convs)."""
    return _rrdbnet(("conv_first", "trunk_conv", "upconv1", "upconv2", "HRconv", "conv_last"),
                    lambda b, r, c: f"RRDB_trunk.{b}.RDB{r}.conv{c}", nf, gc, blocks)


def realesrgan_rrdb(nf: int = 8, gc: int = 32, blocks: int = 1) -> dict:
    """BasicSR's RRDBNet layout (Real-ESRGAN x4plus), inside ``params_ema``."""
    return {"params_ema": _rrdbnet(("conv_first", "conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"),
                                   lambda b, r, c: f"body.{b}.rdb{r}.conv{c}", nf, gc, blocks)}


def realesrgan_compact(nf: int = 8, convs: int = 2, scale: int = 4) -> dict:
    """SRVGGNetCompact: ``body`` = conv, PReLU, (conv, PReLU)×convs, conv to 3·scale² channels."""
    state: dict = {}
    _conv(state, "body.0", 3, nf)
    state["body.1.weight"] = torch.full((nf,), 0.25)
    for i in range(convs):
        _conv(state, f"body.{2 + 2 * i}", nf, nf)
        state[f"body.{3 + 2 * i}.weight"] = torch.full((nf,), 0.25)
    _conv(state, f"body.{2 + 2 * convs}", nf, 3 * scale * scale)
    return {"params_ema": state}


def _from_spandrel_class(arch_id: str, seed_name: str, **hyper) -> dict:
    """Tensors of spandrel's ``arch_id`` model built with ``hyper``, seeded, inside ``params``."""
    from modules import spandrel_loader
    cls = getattr(spandrel_loader.architecture_module(arch_id), arch_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED ^ zlib.crc32(seed_name.encode()))
        model = cls(**hyper)
    return {"params": {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}}


def swinir() -> dict:
    return _from_spandrel_class("SwinIR", "swinir", embed_dim=12, depths=[1], num_heads=[2], window_size=8,
                                mlp_ratio=1.0, upscale=2, upsampler="pixelshuffle", img_size=32)


def dat() -> dict:
    return _from_spandrel_class("DAT", "dat", embed_dim=32, split_size=[4, 8], depth=[2], num_heads=[2],
                                expansion_factor=1.0, upscale=2, img_size=32)


def hat() -> dict:
    return _from_spandrel_class("HAT", "hat", embed_dim=12, depths=[1], num_heads=[2], window_size=8,
                                compress_ratio=3, squeeze_factor=4, mlp_ratio=1.0, upscale=2, num_feat=16,
                                img_size=32)


def scunet() -> dict:
    return _from_spandrel_class("SCUNet", "scunet", config=[1] * 7, dim=64)


DEMO_FILES: tuple[DemoFile, ...] = (
    DemoFile("ESRGAN", "demo-esrgan-old-4x.pth", "ESRGAN", 4, esrgan_old),
    DemoFile("ESRGAN", "demo-esrgan-old-2x.pth", "ESRGAN", 2, lambda: esrgan_old(scale=2)),
    DemoFile("ESRGAN", "demo-esrgan-new-4x.safetensors", "ESRGAN", 4, esrgan_new),
    DemoFile("RealESRGAN", "demo-realesrgan-rrdb-4x.pth", "ESRGAN", 4, realesrgan_rrdb),
    DemoFile("RealESRGAN", "demo-realesrgan-compact-4x.pth", "Compact", 4, realesrgan_compact),
    DemoFile("SwinIR", "demo-swinir-2x.pth", "SwinIR", 2, swinir),
    DemoFile("DAT", "demo-dat-2x.pth", "DAT", 2, dat),
    DemoFile("HAT", "demo-hat-2x.pth", "HAT", 2, hat),
    DemoFile("ScuNET", "demo-scunet-1x.pth", "SCUNet", 1, scunet),
)


def _flat(state: dict) -> dict[str, torch.Tensor]:
    """The tensors of a (possibly wrapped) state dict, keys unchanged."""
    inner = next(iter(state.values())) if len(state) == 1 and isinstance(next(iter(state.values())), dict) else state
    return inner


def write_demo_file(models_path: str, demo: DemoFile) -> str:
    """Write one demo file under ``models_path`` (creating its folder); returns its path."""
    return write_demo_to(os.path.join(models_path, demo.folder, demo.filename), demo)


def write_demo_to(path: str, demo: DemoFile) -> str:
    """Write ``demo``'s weights to ``path`` (format from its extension; folders created); returns it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = demo.build()
    if path.endswith(".safetensors"):
        import safetensors.torch
        safetensors.torch.save_file(_flat(state), path)
    else:
        torch.save(state, path)
    return path


def write_demo_upscalers(models_path: str, demos: tuple[DemoFile, ...] = DEMO_FILES) -> list[str]:
    """Write every demo file under ``models_path``; returns their paths in ``demos`` order."""
    return [write_demo_file(models_path, demo) for demo in demos]
