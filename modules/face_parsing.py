"""ParseNet face parsing, the mask A1111 pastes restored faces back with (facexlib ``use_parse=True``).

facexlib's ``parsing_parsenet.pth`` (kept in ``models/GFPGAN`` by A1111) is a PSFRGAN-style
encoder/body/decoder built for 512×512 faces: a plain 3×3 input conv (64 ch), four residual
down-steps (64→128→256→256→256, channels clipped to 32…256), ten residual blocks at 256 ch, four
residual up-steps back to 64 ch (nearest ×2 first), and two 3×3 output convs: 19 parsing classes
and an RGB image. Every conv pads by reflection; residual convs use BatchNorm (no bias) and
LeakyReLU(0.2); shortcuts that change size or width are plain biased 3×3 convs. Module names
match the published file (``encoder.N``, ``body.N``, ``decoder.N``, ``conv1/conv2/shortcut_func``,
``conv2d``, ``norm.norm``, ``out_img_conv``, ``out_mask_conv``), so it loads strictly.

The mask (:func:`parse_mask`): classes 1–13 and 15 (skin, brows, eyes, glasses, ears, nose, mouth,
lips; and the earring class) count as face, background, hat (14), neck, necklace and cloth (16–18)
do not; the 0/255 map is blurred twice with a 101×101 Gaussian (sigma 11), a 10 px border is
zeroed, and the result is scaled to ``[0, 1]``.
"""
from __future__ import annotations

import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from modules import errors
from modules.fileio import FileModelCache

PARSENET_FILE = "parsing_parsenet.pth"
FACE_CLASSES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15)
PARSING_CLASSES = 19


def _clip(channels: int) -> int:
    return max(32, min(channels, 256))


class NormLayer(nn.Module):
    """BatchNorm under the published key name ``norm.norm``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class ConvLayer(nn.Module):
    """Reflection-padded 3×3 conv, optionally with a ×2 nearest upsample first, a stride of 2,
    BatchNorm and LeakyReLU(0.2)."""

    def __init__(self, cin: int, cout: int, scale: str = "none", norm: bool = False, act: bool = False) -> None:
        super().__init__()
        self.scale, self.act = scale, act
        self.conv2d = nn.Conv2d(cin, cout, 3, 2 if scale == "down" else 1, bias=not norm)
        if norm:
            self.norm = NormLayer(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"))
        if hasattr(self, "norm"):
            x = self.norm(x)
        return F.leaky_relu(x, 0.2) if self.act else x


class ResidualBlock(nn.Module):
    """Two ConvLayers (BN; LeakyReLU after the first); the size change on the second (down) or first (up)."""

    def __init__(self, cin: int, cout: int, scale: str = "none") -> None:
        super().__init__()
        first, second = {"down": ("none", "down"), "up": ("up", "none"), "none": ("none", "none")}[scale]
        self.shortcut_func = None if scale == "none" and cin == cout else ConvLayer(cin, cout, scale)
        self.conv1 = ConvLayer(cin, cout, first, norm=True, act=True)
        self.conv2 = ConvLayer(cout, cout, second, norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut_func is None else self.shortcut_func(x)
        return identity + self.conv2(self.conv1(x))


class ParseNet(nn.Module):
    """facexlib's ParseNet for 512 px faces; ``forward`` returns ``(class logits [B, 19, H, W], image)``."""

    def __init__(self, steps: int = 4, base: int = 64, depth: int = 10) -> None:
        super().__init__()
        encoder: list[nn.Module] = [ConvLayer(3, base)]
        width = base
        for _ in range(steps):
            encoder.append(ResidualBlock(_clip(width), _clip(width * 2), "down"))
            width *= 2
        self.encoder = nn.Sequential(*encoder)
        self.body = nn.Sequential(*(ResidualBlock(_clip(width), _clip(width)) for _ in range(depth)))
        decoder = []
        for _ in range(steps):
            decoder.append(ResidualBlock(_clip(width), _clip(width // 2), "up"))
            width //= 2
        self.decoder = nn.Sequential(*decoder)
        self.out_img_conv = ConvLayer(_clip(width), 3)
        self.out_mask_conv = ConvLayer(_clip(width), PARSING_CLASSES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.encoder(x)
        x = self.decoder(feat + self.body(feat))
        return self.out_mask_conv(x), self.out_img_conv(x)


def parse_mask(classes: np.ndarray) -> np.ndarray:
    """The soft ``[0, 1]`` paste mask of a ``[512, 512]`` class map (see the module docstring)."""
    mask = np.where(np.isin(classes, FACE_CLASSES), 255.0, 0.0)
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    mask = cv2.GaussianBlur(mask, (101, 101), 11)
    mask[:10, :], mask[-10:, :], mask[:, :10], mask[:, -10:] = 0, 0, 0, 0
    return mask / 255.0


def face_classes(net: ParseNet, face_bgr: np.ndarray) -> np.ndarray:
    """The class of every pixel of a 512×512 BGR uint8 face (RGB in ``[-1, 1]`` into the net)."""
    rgb = np.ascontiguousarray(face_bgr[:, :, ::-1]).astype(np.float32) / 255.0  # float32 first, as facexlib
    x = (torch.from_numpy(rgb.transpose(2, 0, 1))[None] - 0.5) / 0.5
    with torch.inference_mode():
        logits = net(x)[0]
    return logits.argmax(dim=1)[0].numpy()


def load_parsenet(path: str) -> ParseNet:
    """ParseNet from ``path`` (via `modules.safe_load`), float32, eval.

    Raises:
        errors.CheckpointNotFound, errors.CheckpointLoadError: naming ``path``.
    """
    from modules import face_detection
    return face_detection.load_network_file(path, ParseNet(), "a ParseNet face parser")


_cache = FileModelCache(size=1)


def cached_parser(path: str) -> ParseNet | None:
    """:func:`load_parsenet` cached by path, mtime and size; None when the file is absent."""
    if not os.path.exists(path):
        return None
    return _cache.get(path, lambda: load_parsenet(path),
                      missing=lambda e: errors.CheckpointNotFound(f"face parsing file not found: {path!r}"))


def clear_cache() -> None:
    """Drop the loaded parser."""
    _cache.clear()
