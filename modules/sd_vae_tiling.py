"""Tiled VAE decode and encode, so large images (2048² and up) fit in bounded memory.

`decode_first_stage` / `encode_first_stage` of `sd_models.StableDiffusionModel` call `decode` and
`encode` here. When tiling is off for the size at hand (the `vae_tiling` options; see
`should_tile`), they call `vae.decode(latents).sample` / `vae.encode(images).latent_dist.mean` and
nothing else, so results are byte-identical to a plain decode (the goldens depend on it).

When tiling is on, the input is cut into full-size tiles that overlap by at least a quarter of a
tile, spread evenly so the last one ends at the border (`tile_starts`); each tile goes through the
VAE's public `decode` / `encode` on its own, and is added, weighted by a linear ramp across each
overlap with a neighbour (`tile_weights`), into one output and one weight sum; the output is the
weighted average. Memory: one tile's activations (the part that grows: about tile² × 128 channels
× 4 bytes per tensor for SD) plus the output and a one-channel weight map.

Why not diffusers' own `AutoencoderKL` tiling (`use_tiling`, `tiled_decode`, `_tiled_encode`, read
in diffusers 0.42): it steps by a fixed stride until the end of the input, so the last row and
column of tiles are partial — as narrow as a few latent cells, often lying wholly inside the tile
before — and their narrow view (GroupNorm statistics and mid-block attention over a sliver) is
blended across a full ramp: on the demo VAE, decoding a 512² image in 256 px tiles, the bottom
64 px strip differs from the untiled decode by 50 (0–255 units, mean) against 15 here, and the whole
image by 28.5 against 23.2 (random weights and an image of large uneven regions: the worst case).
It also keeps every decoded tile until the end (about 1.7× the output image), decodes those
redundant edge tiles (36 tiles for 2048² at 512 px against 25 here), and tiled encoding is reachable
only through a private (`_tiled_encode`) or deprecated (`tiled_encode`) method. What remains here is
what every tiled VAE has: each tile normalises (GroupNorm) over its own content, so colours can
drift between regions of an image with large uneven areas; the overlap ramps keep that free of hard
seams. Exact statistics shared across tiles would need every tile's activations at once (the memory
tiling exists to avoid) or each tile recomputed once per normalisation layer.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from modules import shared

TILE_OVERLAP = 0.25
"""Smallest fraction of a tile shared with each neighbour (as diffusers' `tile_overlap_factor`)."""

MIN_LATENT_TILE = 8
"""Smallest latent tile used, whatever the option says (the option's minimum, 256 px, is 32 for SD)."""


def supports_tiling(vae: Any) -> bool:
    """Whether `vae` is an AutoencoderKL-like VAE whose scale is known (others are always whole)."""
    return hasattr(getattr(vae, "config", None), "block_out_channels")


def latent_scale(vae: Any) -> int:
    """Pixels per latent cell along one side: 2 ** (number of VAE levels - 1), 8 for SD's VAE."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def latent_tile(tile_px: int, scale: int) -> int:
    """The latent tile for a pixel tile: whole latent cells, at least `MIN_LATENT_TILE`."""
    return max(MIN_LATENT_TILE, int(tile_px) // scale)


def tile_starts(size: int, tile: int, min_overlap: int) -> list[int]:
    """Starts of the fewest full tiles of `tile` cells covering `size` cells with neighbours sharing
    at least `min_overlap` cells; spread evenly, the first at 0 and the last ending at `size`.
    One start (0) when the input fits in one tile (that tile is then the whole input)."""
    if size <= tile:
        return [0]
    count = math.ceil((size - min_overlap) / (tile - min_overlap))
    return [round(i * (size - tile) / (count - 1)) for i in range(count)]


def _ramp(length: int, overlap_before: int, overlap_after: int) -> torch.Tensor:
    """Weights along one side of a tile: rising across the overlap with the previous tile, falling
    across the overlap with the next, 1 between; never 0, so every cell has weight."""
    weights = torch.ones(length)
    if overlap_before:
        weights[:overlap_before] = torch.linspace(0, 1, overlap_before + 2)[1:-1]
    if overlap_after:
        weights[length - overlap_after:] = torch.linspace(1, 0, overlap_after + 2)[1:-1]
    return weights


def tile_weights(starts: list[int], index: int, tile: int, scale: int) -> torch.Tensor:
    """Weights along one side of tile `index` of `starts` (tiles of `tile` cells), at `scale` output
    cells per input cell: ramps over the output cells it shares with each neighbour."""
    before = (starts[index - 1] + tile - starts[index]) * scale if index > 0 else 0
    after = (starts[index] + tile - starts[index + 1]) * scale if index + 1 < len(starts) else 0
    return _ramp(tile * scale, before, after)


def _tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, step: int,
           cell: int) -> torch.Tensor:
    """`fn` over overlapping tiles of `tile` latent cells of `x` (`step` elements of `x` per cell
    along a side), blended into one output with `cell` elements per cell along a side."""
    height, width = x.shape[-2] // step, x.shape[-1] // step
    tile_h, tile_w = min(tile, height), min(tile, width)
    overlap = max(1, round(tile * TILE_OVERLAP))
    rows, cols = tile_starts(height, tile_h, overlap), tile_starts(width, tile_w, overlap)
    output: torch.Tensor | None = None
    dtype = x.dtype
    weight_sum = torch.zeros(height * cell, width * cell, device=x.device)
    for r, top in enumerate(rows):
        weight_rows = tile_weights(rows, r, tile_h, cell).to(x.device)
        for c, left in enumerate(cols):
            part = fn(x[..., top * step:(top + tile_h) * step, left * step:(left + tile_w) * step])
            if output is None:
                dtype = part.dtype
                output = torch.zeros(*part.shape[:-2], height * cell, width * cell, device=part.device,
                                     dtype=torch.promote_types(dtype, torch.float32))
            weights = weight_rows[:, None] * tile_weights(cols, c, tile_w, cell).to(x.device)[None, :]
            rows_out = slice(top * cell, (top + tile_h) * cell)
            cols_out = slice(left * cell, (left + tile_w) * cell)
            output[..., rows_out, cols_out] += part.to(output.dtype) * weights
            weight_sum[rows_out, cols_out] += weights
    return (output / weight_sum).to(dtype)


def _option(name: str, default: Any) -> Any:
    return getattr(getattr(shared, "opts", None), name, default)


def should_tile(height_px: int, width_px: int) -> bool:
    """Whether an image of this size is decoded/encoded in tiles, from the options.

    "Never": no. An image no larger than one tile (`vae_tile_size`) on both sides: no (it would be
    one tile, the same as untiled). "Always": yes. "Automatic" (and anything else): when
    width × height is above `vae_tiling_threshold`."""
    mode = _option("vae_tiling", "Automatic")
    if mode == "Never":
        return False
    tile = int(_option("vae_tile_size", 512))
    if height_px <= tile and width_px <= tile:
        return False
    if mode == "Always":
        return True
    return width_px * height_px > int(_option("vae_tiling_threshold", 1536 * 1536))


def tiled_decode(vae: Any, latents: torch.Tensor, tile_px: int) -> torch.Tensor:
    """`vae.decode(latents).sample` computed in overlapping tiles of about `tile_px` pixels."""
    scale = latent_scale(vae)
    return _tiled(lambda part: vae.decode(part).sample, latents, latent_tile(tile_px, scale), 1, scale)


def tiled_encode(vae: Any, images: torch.Tensor, tile_px: int) -> torch.Tensor:
    """`vae.encode(images).latent_dist.mean` computed in overlapping tiles of about `tile_px` pixels
    (image sides multiples of the latent scale)."""
    scale = latent_scale(vae)
    return _tiled(lambda part: vae.encode(part).latent_dist.mean, images, latent_tile(tile_px, scale),
                  scale, 1)


def decode(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """`vae.decode(latents).sample` (latents already divided by the scale factor), in tiles when
    `should_tile` says so for the decoded size."""
    if supports_tiling(vae):
        scale = latent_scale(vae)
        if should_tile(latents.shape[-2] * scale, latents.shape[-1] * scale):
            return tiled_decode(vae, latents, int(_option("vae_tile_size", 512)))
    return vae.decode(latents).sample


def encode(vae: Any, images: torch.Tensor) -> torch.Tensor:
    """`vae.encode(images).latent_dist.mean` (images in [-1, 1]), in tiles when `should_tile` says
    so for the image size and both sides are whole latent cells (else whole)."""
    if supports_tiling(vae):
        scale = latent_scale(vae)
        height, width = images.shape[-2:]
        if height % scale == 0 and width % scale == 0 and should_tile(height, width):
            return tiled_encode(vae, images, int(_option("vae_tile_size", 512)))
    return vae.encode(images).latent_dist.mean
