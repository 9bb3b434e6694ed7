"""Tiled inference for model upscalers: split, run each tile, blend the overlaps (pure functions).

Tiles are placed as A1111's ``images.split_grid`` places them: as many as ``ceil((L - overlap) /
(tile - overlap))`` along an axis, spread evenly, the last one flush with the far edge. Where two
tiles meet, each output tile is weighted by a linear ramp over its ``overlap × scale`` edge pixels
(only on sides that have a neighbour), and the weighted sum is divided by the summed weights, so a
seam fades from one tile into the next instead of showing as a line. A model that maps each pixel
independently gives exactly the untiled result.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

TileFn = Callable[[torch.Tensor], torch.Tensor]
"""A model call: ``[1, C, h, w]`` in, ``[1, C', h*scale, w*scale]`` out."""


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of the tiles along one axis of ``length`` pixels.

    ``tile <= 0`` or ``tile >= length`` gives one tile at 0. ``overlap`` is clamped to
    ``[0, tile // 2]`` so that every tile moves on by at least half a tile.
    """
    if tile <= 0 or tile >= length:
        return [0]
    overlap = max(0, min(overlap, tile // 2))
    count = math.ceil((length - overlap) / (tile - overlap))
    if count <= 1:
        return [0]
    step = (length - tile) / (count - 1)
    return [min(int(i * step), length - tile) for i in range(count)]


def edge_ramp(size: int, ramp: int, before: bool, after: bool) -> torch.Tensor:
    """1-D blend weights of one tile: 1 inside, rising linearly over ``ramp`` pixels on each side
    that has a neighbour (``before``/``after``); every weight stays above 0."""
    weights = torch.ones(size, dtype=torch.float32)
    ramp = min(ramp, size)
    if ramp > 0:
        rise = torch.arange(1, ramp + 1, dtype=torch.float32) / (ramp + 1)
        if before:
            weights[:ramp] = torch.minimum(weights[:ramp], rise)
        if after:
            weights[size - ramp:] = torch.minimum(weights[size - ramp:], rise.flip(0))
    return weights


def tiled_apply(x: torch.Tensor, fn: TileFn, tile: int, overlap: int) -> torch.Tensor:
    """``fn`` over ``x`` (``[1, C, H, W]``) in ``tile``×``tile`` pieces overlapping by ``overlap``.

    ``tile <= 0`` (or a tile as large as the image) calls ``fn`` once on the whole image. The
    scale is read from the first tile's output.
    """
    _, _, height, width = x.shape
    ys = tile_starts(height, tile, overlap)
    xs = tile_starts(width, tile, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return fn(x)
    th, tw = min(tile, height), min(tile, width)
    out = weight_sum = None
    scale = 1
    for y in ys:
        for x0 in xs:
            piece = fn(x[:, :, y:y + th, x0:x0 + tw])
            if out is None:
                scale = piece.shape[-1] // tw
                out = torch.zeros(piece.shape[0], piece.shape[1], height * scale, width * scale, dtype=torch.float32)
                weight_sum = torch.zeros(1, 1, height * scale, width * scale, dtype=torch.float32)
            ramp = overlap * scale
            wy = edge_ramp(th * scale, ramp, y > 0, y + th < height)
            wx = edge_ramp(tw * scale, ramp, x0 > 0, x0 + tw < width)
            weight = (wy[:, None] * wx[None, :])[None, None]
            region = (..., slice(y * scale, (y + th) * scale), slice(x0 * scale, (x0 + tw) * scale))
            out[region] += piece.float() * weight
            weight_sum[region] += weight
    return out / weight_sum
