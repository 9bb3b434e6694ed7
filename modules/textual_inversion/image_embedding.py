"""Embeddings stored in images, in the two ways A1111 writes them (`image_embedding.py` there).

1. A PNG text chunk `sd-ti-embedding`: base64 of JSON in which each tensor is written as
   `{"TORCHTENSOR": nested lists}`.
2. Data in the pixels: the same JSON, zlib-compressed (level 9); each byte's high and low nibbles go
   into two blocks of `height` rows × 3 channels (the byte stream repeated cyclically to fill
   them), each nibble XOR-ed with A1111's LCG stream (`seed = (1664525*seed + 1013904223) mod 2**32`,
   starting from 0, each value `seed % 255`, low 4 bits used). The image is then
   `[low block | one black column | picture | one black column | high block]`. A1111 also XORs a
   decorative pattern into the blocks' high nibbles; readers look only at the low nibbles. Reading:
   crop away black borders, find the black columns by their all-zero low nibbles, un-XOR both blocks,
   join the nibbles and decompress.

A1111 reads both from `.png`, `.webp`, `.jxl` and `.avif` files (the text chunk only from PNG), skips
`*.preview.*` files, and takes the embedding's name from the data's `name` when it has one. An image
without either is a preview picture, not an embedding. Nothing here runs code from the file: JSON
gives only numbers, strings, lists and dicts, and decompression is capped.
"""
from __future__ import annotations

import base64
import json
import zlib
from typing import Any

import numpy as np
import torch
from PIL import Image

TEXT_KEY = "sd-ti-embedding"
TENSOR_KEY = "TORCHTENSOR"
EXTENSIONS = (".png", ".webp", ".jxl", ".avif")
MAX_DECOMPRESSED = 256 * 1024 * 1024
CHANNELS = 3


class EmbeddingEncoder(json.JSONEncoder):
    """JSON with tensors as `{"TORCHTENSOR": nested lists}` (A1111's encoding)."""

    def default(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return {TENSOR_KEY: obj.detach().cpu().numpy().tolist()}
        return super().default(obj)


def _decode_object(d: dict) -> Any:
    """A `{"TORCHTENSOR": …}` object back into a tensor; numbers only (a ragged or text array is refused)."""
    if TENSOR_KEY not in d:
        return d
    array = np.array(d[TENSOR_KEY])
    if array.dtype.kind not in "biuf":
        raise ValueError(f"a {TENSOR_KEY} value must be a rectangular array of numbers, got dtype {array.dtype}")
    return torch.from_numpy(array)


def decode_json(text: str | bytes) -> Any:
    """Parse A1111's embedding JSON, tensors restored."""
    return json.loads(text, object_hook=_decode_object)


def embedding_to_b64(data: Any) -> bytes:
    """The `sd-ti-embedding` text chunk's value for `data`."""
    return base64.b64encode(json.dumps(data, cls=EmbeddingEncoder).encode())


def embedding_from_b64(data: str | bytes) -> Any:
    """The data in an `sd-ti-embedding` text chunk."""
    return decode_json(base64.b64decode(data))


# ---- data in the pixels ------------------------------------------------------------------------

def lcg(m: int = 2**32, a: int = 1664525, c: int = 1013904223, seed: int = 0):
    """A1111's pseudo-random stream: each step's new seed, modulo 255."""
    while True:
        seed = (a * seed + c) % m
        yield seed % 255


_stream = np.zeros(0, dtype=np.uint8)


def lcg_bytes(count: int) -> np.ndarray:
    """The first `count` values of `lcg()` as uint8 (kept and extended between calls)."""
    global _stream
    if len(_stream) < count:
        values = np.empty(count, dtype=np.uint8)
        generator = lcg()
        for i in range(count):
            values[i] = next(generator)
        _stream = values
    return _stream[:count]


def xor_block(block: np.ndarray) -> np.ndarray:
    """`block`'s low nibbles XOR-ed with the LCG stream (its own inverse)."""
    noise = lcg_bytes(block.size).reshape(block.shape) & 0x0F
    return np.bitwise_xor(block.astype(np.uint8), noise)


def decorate_block(block: np.ndarray, sequence: np.ndarray) -> np.ndarray:
    """A visible pattern XOR-ed into the high nibbles only (never 0, so no data pixel is black).

    A1111 draws shaded dots here; the pattern carries no data, so any one that leaves the low
    nibbles alone reads back the same.
    """
    rows, cols, _ = block.shape
    shades = (np.asarray(sequence, dtype=np.uint8) & 0xF0) | 0x10
    index = (np.arange(rows)[:, None] // 4 + np.arange(cols)[None, :] // 4) % len(shades)
    pattern = np.repeat(shades[index][:, :, None], block.shape[2], axis=2)
    return block ^ pattern


def _nibble_blocks(payload: bytes, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The low and high nibbles of `payload`, repeated to fill whole `height`×n×3 blocks (A1111's sizes)."""
    data = np.frombuffer(payload, np.uint8)
    size = data.shape[0] + (height - data.shape[0] % height)
    size = size + (height * CHANNELS - size % (height * CHANNELS))
    low = np.resize(data & 0x0F, size).reshape((height, -1, CHANNELS))
    high = np.resize(data >> 4, size).reshape((height, -1, CHANNELS))
    return low, high


def _edge_sequence(data: dict) -> np.ndarray:
    """Shades from the first vector (A1111 styles the blocks with them)."""
    params = data.get("string_to_param") if isinstance(data, dict) else None
    tensor = next(iter(params.values())) if isinstance(params, dict) and params else None
    if not isinstance(tensor, torch.Tensor) or tensor.numel() == 0:
        return np.array([128], dtype=np.uint8)
    values = tensor.detach().reshape(-1)[:1024].abs().double().numpy()
    peak = values.max() or 1.0
    return (values / peak * 255).astype(np.uint8)


def insert_image_data_embed(image: Image.Image, data: dict) -> Image.Image:
    """`image` with `data` hidden in blocks to its left (low nibbles) and right (high nibbles)."""
    payload = zlib.compress(json.dumps(data, cls=EmbeddingEncoder).encode(), level=9)
    low, high = _nibble_blocks(payload, image.size[1])
    sequence = _edge_sequence(data)
    low = xor_block(decorate_block(low, sequence))
    high = xor_block(decorate_block(high, sequence[::-1]))
    im_low, im_high = Image.fromarray(low, mode="RGB"), Image.fromarray(high, mode="RGB")
    width = im_low.size[0] + image.size[0] + im_high.size[0] + 2
    out = Image.new("RGB", (width, image.size[1]), (0, 0, 0))
    out.paste(im_low, (0, 0))
    out.paste(image.convert("RGB"), (im_low.size[0] + 1, 0))
    out.paste(im_high, (im_low.size[0] + 1 + image.size[0] + 1, 0))
    return out


def crop_black(img: np.ndarray, tol: int = 0) -> np.ndarray:
    """The smallest box holding every pixel whose channels are all above `tol`."""
    mask = (img > tol).all(2)
    cols, rows = mask.any(0), mask.any(1)
    if not cols.any():
        return img[0:0, 0:0]
    col_start, col_end = cols.argmax(), mask.shape[1] - cols[::-1].argmax()
    row_start, row_end = rows.argmax(), mask.shape[0] - rows[::-1].argmax()
    return img[row_start:row_end, col_start:col_end]


def _inflate(data: bytes) -> bytes:
    """zlib-decompress, ignoring what follows the stream (the blocks' padding), at most MAX_DECOMPRESSED."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, MAX_DECOMPRESSED)
    if inflater.unconsumed_tail:
        raise ValueError(f"embedded data inflates to more than {MAX_DECOMPRESSED} bytes")
    if not inflater.eof:
        raise ValueError("embedded data ends before its zlib stream does (truncated?)")
    return out


def extract_image_data_embed(image: Image.Image) -> Any:
    """The data hidden in `image`'s pixels, or None when it has no data blocks.

    Raises:
        ValueError, zlib.error: blocks are there but do not decode.
    """
    rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
    nibbles = crop_black(rgb) & 0x0F
    black_cols = np.where(np.sum(nibbles, axis=(0, 2)) == 0)[0]
    if black_cols.shape[0] < 2:
        return None
    lower = xor_block(nibbles[:, :black_cols.min(), :])
    upper = xor_block(nibbles[:, black_cols.max() + 1:, :])
    if lower.shape != upper.shape or lower.size == 0:
        raise ValueError(f"the two data blocks differ in size ({lower.shape} and {upper.shape})")
    joined = ((upper << 4) | lower).astype(np.uint8).flatten().tobytes()
    return decode_json(_inflate(joined))


def read_image_embedding(path: str) -> Any:
    """The embedding data stored in the image at `path` (text chunk first, then pixels), or None.

    Raises:
        OSError, ValueError, zlib.error: the image or its data cannot be read.
    """
    with Image.open(path) as image:
        text = getattr(image, "text", None)
        if isinstance(text, dict) and TEXT_KEY in text:
            return embedding_from_b64(text[TEXT_KEY])
        image.load()
        return extract_image_data_embed(image)
