"""Tiny textual-inversion embeddings in the formats beyond `demo_checkpoint.write_demo_embedding`:
stored in images as A1111 stores them, and SDXL pairs, for tests and demos.

The vectors are `demo_checkpoint.demo_embedding_vectors` (the same for the same arguments), so a
test can compare what the loader reads with what was written.
"""
from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from modules import demo_checkpoint
from modules.fileio import atomic_write_bytes
from modules.textual_inversion import image_embedding

SDXL_SALT = "serena-demo-sdxl-embedding"
SDXL_WIDTHS = (768, 1280)


def demo_embedding_data(name: str, vectors: int = 1, width: int | None = None,
                        salt: str = demo_checkpoint.EMBEDDING_SALT) -> dict:
    """A1111's embedding dict (what its `.pt` files and images hold) with the demo vectors."""
    return {"string_to_token": {"*": 265},
            "string_to_param": {"*": demo_checkpoint.demo_embedding_vectors(vectors, width, salt)},
            "name": name, "step": 100, "sd_checkpoint": "0123456789", "sd_checkpoint_name": "serena-demo-tiny"}


def demo_picture(size: int = 32) -> Image.Image:
    """A small deterministic picture (a colour gradient) to carry the data."""
    ramp = np.linspace(40, 220, size, dtype=np.float64)
    pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size))], -1)
    return Image.fromarray(pixels.astype(np.uint8), mode="RGB")


def write_demo_image_embedding(path: str, vectors: int = 1, width: int | None = None,
                               salt: str = demo_checkpoint.EMBEDDING_SALT, store: str = "text",
                               name: str | None = None) -> str:
    """Write an embedding stored in an image to `path`; return `path`.

    `store="text"`: a PNG with the `sd-ti-embedding` text chunk over the plain picture;
    `store="pixels"`: the data hidden in the pixels (PNG, or lossless WebP for `.webp`);
    `store="both"`: a PNG with both, as A1111's training previews have. `name` (default: the file's
    stem) is the name stored in the data.
    """
    name = name or os.path.splitext(os.path.basename(path))[0].removesuffix(".preview")
    data = demo_embedding_data(name, vectors, width, salt)
    if store not in ("text", "pixels", "both"):
        raise ValueError(f"store must be 'text', 'pixels' or 'both', got {store!r}")
    image = demo_picture()
    if store in ("pixels", "both"):
        image = image_embedding.insert_image_data_embed(image, data)
    buffer = io.BytesIO()
    if path.lower().endswith(".webp"):
        if store != "pixels":
            raise ValueError(f"{path!r}: WebP carries no text chunk; use store='pixels'")
        image.save(buffer, format="WEBP", lossless=True, quality=100)
    else:
        info = PngImagePlugin.PngInfo()
        if store in ("text", "both"):
            info.add_text(image_embedding.TEXT_KEY, image_embedding.embedding_to_b64(data).decode())
        image.save(buffer, format="PNG", pnginfo=info)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def demo_sdxl_vectors(vectors: int = 1, widths: tuple[int, int] = SDXL_WIDTHS,
                      salt: str = SDXL_SALT) -> dict[str, torch.Tensor]:
    """`{"clip_l": [vectors, w1], "clip_g": [vectors, w2]}`, the same for the same arguments."""
    return {"clip_l": demo_checkpoint.demo_embedding_vectors(vectors, widths[0], salt + "/clip_l"),
            "clip_g": demo_checkpoint.demo_embedding_vectors(vectors, widths[1], salt + "/clip_g")}


def write_demo_sdxl_embedding(path: str, vectors: int = 1, widths: tuple[int, int] = SDXL_WIDTHS,
                              salt: str = SDXL_SALT) -> str:
    """Write an SDXL embedding (`.safetensors` with `clip_l` and `clip_g`) to `path`; return `path`."""
    import safetensors.torch
    tensors = {key: value.contiguous() for key, value in demo_sdxl_vectors(vectors, widths, salt).items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write_bytes(path, safetensors.torch.save(tensors))
    return path
