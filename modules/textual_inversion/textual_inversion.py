"""Textual-inversion embeddings: the `embeddings/` folder, read without running pickled code.

Files are found recursively under `--embeddings-dir` (default `<data>/embeddings`), sorted by path.
Formats: A1111 `.pt` (`{"string_to_param": {"*": tensor[n, D]}, "name", "step", "sd_checkpoint",
"sd_checkpoint_name"}`) and diffusers `.bin` (`{token: tensor[D]}`), both read through
`safe_load` (tensors and plain containers only: a file that names any other callable is refused
and never runs), `.safetensors` (`emb_params`, or any single tensor; SDXL: `clip_l` [n, w1] and
`clip_g` [n, w2]), and images (`.png`, `.webp`, `.jxl`, `.avif`: the `sd-ti-embedding` text chunk or
the data A1111 hides in the pixels, see `image_embedding`). An embedding's name is its file stem (an
image's: the `name` in its data); the name in a prompt, matched on token ids (longest match first),
triggers it.

Families: an embedding is registered only when it fits the loaded model, judged from the model's
text encoder widths (`text_encoder.config.hidden_size`, and `text_encoder_2`'s when the model has
one): a single tensor [n, w] fits a model with one text encoder of width w (SD1: 768, SD2: 1024;
the demo: 64); an SDXL pair fits a model with two encoders whose widths are those of `clip_l` and
`clip_g`. Others are listed as skipped, with A1111's `shape` (the width; SDXL: w1 + w2) and
`vectors`. Files that cannot be read are skipped too, the reason logged and kept in `failed`.

The database is (re)loaded before a job's conditioning when the folder's listing (paths, sizes,
mtimes, recursively) or the model changed since the last load, and on `refresh-embeddings`.
A1111 compares the top folder's mtime only, which misses a file rewritten in place.
"""
from __future__ import annotations

import logging
import os
import threading
import zlib
from typing import Any

import torch

from modules import errors, safe_load
from modules.textual_inversion import image_embedding

log = logging.getLogger(__name__)

EXTENSIONS = (".pt", ".bin", ".safetensors")
IMAGE_EXTENSIONS = image_embedding.EXTENSIONS
SDXL_KEYS = ("clip_l", "clip_g")


class Embedding:
    """One embedding.

    `vec` is a float32 tensor `[vectors, shape]` for a single-encoder model (SD1/SD2), or for SDXL
    a dict `{"clip_l": [vectors, w1], "clip_g": [vectors, w2]}` of float32 tensors with the same
    number of rows (what the SDXL conditioner puts into each of its two encoders). `shape` is the
    width (SDXL: w1 + w2), `vectors` the number of rows.
    """

    def __init__(self, vec: Any, name: str, step: int | None = None):
        self.vec = vec
        self.name = name
        self.step = step
        self.shape: int | None = None
        self.vectors = 0
        self.sd_checkpoint: str | None = None
        self.sd_checkpoint_name: str | None = None
        self.filename: str | None = None
        self.hash: str | None = None
        self.shorthash: str | None = None

    def set_hash(self, value: str) -> None:
        """Store the file's sha256; `shorthash` (its first 12 hex digits) goes into `TI hashes`."""
        self.hash = value
        self.shorthash = value[0:12]


def embeddings_dir() -> str:
    """`--embeddings-dir`, or `<data>/embeddings`."""
    from modules import shared
    configured = getattr(shared.cmd_opts, "embeddings_dir", None)
    return os.path.abspath(configured) if configured else os.path.join(shared.data_paths.data_path, "embeddings")


def _as_int(value: Any) -> int | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def create_embedding_from_data(data: Any, name: str, filename: str) -> Embedding:
    """Build an `Embedding` from a loaded file's data (A1111's three layouts).

    Raises:
        ValueError: the data is none of the layouts.
    """
    if isinstance(data, torch.Tensor):
        data = {"emb_params": data}
    if not isinstance(data, dict) or not data:
        raise ValueError(f"{filename!r} is neither a textual inversion embedding nor a diffusers concept")
    if "string_to_param" in data:
        params = data["string_to_param"]
        if not isinstance(params, dict) or len(params) != 1:
            raise ValueError(f"{filename!r}: string_to_param must hold exactly one tensor")
        vec = next(iter(params.values()))
        if not isinstance(vec, torch.Tensor):
            raise ValueError(f"{filename!r}: string_to_param holds no tensor")
        vec = vec.detach().to(torch.float32)
    elif isinstance(data.get("clip_l"), torch.Tensor) and isinstance(data.get("clip_g"), torch.Tensor):
        vec = sdxl_vectors(data, filename)
    elif isinstance(next(iter(data.values())), torch.Tensor):
        if len(data) != 1:
            raise ValueError(f"{filename!r}: a diffusers concept must hold exactly one tensor")
        vec = next(iter(data.values())).detach().to(torch.float32)
    else:
        raise ValueError(f"{filename!r} is neither a textual inversion embedding nor a diffusers concept")
    if isinstance(vec, torch.Tensor):
        if vec.ndim == 1:
            vec = vec.unsqueeze(0)
        if vec.ndim != 2 or vec.shape[0] == 0:
            raise ValueError(f"{filename!r}: embedding tensor has shape {list(vec.shape)}, expected [vectors, width]")
    embedding = Embedding(vec, name, step=_as_int(data.get("step")))
    if isinstance(vec, dict):
        embedding.shape = int(vec["clip_l"].shape[-1] + vec["clip_g"].shape[-1])
        embedding.vectors = int(vec["clip_g"].shape[0])
    else:
        embedding.shape = int(vec.shape[-1])
        embedding.vectors = int(vec.shape[0])
    embedding.sd_checkpoint = _as_str(data.get("sd_checkpoint"))
    embedding.sd_checkpoint_name = _as_str(data.get("sd_checkpoint_name"))
    embedding.filename = filename
    return embedding


def sdxl_vectors(data: dict, filename: str) -> dict[str, torch.Tensor]:
    """`{"clip_l": [n, w1], "clip_g": [n, w2]}` in float32 from an SDXL file (1-D rows become [1, w]).

    Raises:
        ValueError: a tensor is not 1- or 2-D, or the two hold different numbers of vectors.
    """
    vec = {}
    for key in SDXL_KEYS:
        tensor = data[key].detach().to(torch.float32)
        tensor = tensor.unsqueeze(0) if tensor.ndim == 1 else tensor
        if tensor.ndim != 2 or tensor.shape[0] == 0:
            raise ValueError(f"{filename!r}: {key} has shape {list(data[key].shape)}, expected [vectors, width]")
        vec[key] = tensor
    if vec["clip_l"].shape[0] != vec["clip_g"].shape[0]:
        raise ValueError(f"{filename!r}: clip_l has {vec['clip_l'].shape[0]} vectors but clip_g "
                         f"{vec['clip_g'].shape[0]}")
    return vec


def model_widths(model: Any) -> tuple[int | None, int | None]:
    """The widths of the loaded model's first text encoder (None for an SDXL refiner, which has
    none) and of its second (SDXL) or None."""
    def width(encoder: Any) -> int | None:
        if encoder is None:
            return None
        config = getattr(encoder, "config", None)
        hidden = getattr(config, "hidden_size", None)
        return int(hidden) if hidden is not None else int(encoder.get_input_embeddings().embedding_dim)

    return width(getattr(model, "text_encoder", None)), width(getattr(model, "text_encoder_2", None))


def fits_model(embedding: Embedding, widths: tuple[int | None, int | None]) -> bool:
    """Whether `embedding` belongs to a model with these text encoder widths (see the module
    docstring); an SDXL refiner (no first encoder) takes the `clip_g` part of an SDXL embedding."""
    first, second = widths
    if isinstance(embedding.vec, dict):
        return (second is not None and embedding.vec["clip_g"].shape[-1] == second
                and (first is None or embedding.vec["clip_l"].shape[-1] == first))
    return second is None and embedding.shape == first


def read_image_file(path: str) -> Any:
    """The embedding data in an image, or None for a plain picture.

    Raises:
        ValueError: the image or its data cannot be read.
    """
    try:
        return image_embedding.read_image_embedding(path)
    except (OSError, ValueError, zlib.error, SyntaxError, image_embedding.Image.DecompressionBombError) as e:
        raise ValueError(f"cannot read an embedding from the image {path!r}: {type(e).__name__}: {e}") from e


def read_embedding_file(path: str) -> Any:
    """The data of an embedding file, never running pickled code.

    Raises:
        errors.CheckpointLoadError: unreadable, or a pickle that names anything but plain data.
    """
    if safe_load.is_safetensors(path):
        import safetensors.torch
        try:
            return safetensors.torch.load_file(path, device="cpu")
        except Exception as e:
            raise errors.CheckpointLoadError(f"cannot read {path!r} as safetensors: {type(e).__name__}: {e}") from e
    return safe_load._load_pickle(path, "cpu")


class EmbeddingDatabase:
    """Embeddings by name, and by the first token id of their name (A1111's `EmbeddingDatabase`)."""

    def __init__(self) -> None:
        self.ids_lookup: dict[int, list[tuple[list[int], Embedding]]] = {}
        self.word_embeddings: dict[str, Embedding] = {}
        self.skipped_embeddings: dict[str, Embedding] = {}
        self.failed: dict[str, str] = {}
        """Files that could not be read (path → reason); not an A1111 field."""
        self.expected_shape = -1
        """The loaded model's width (SDXL: the sum of both encoders'), A1111's field."""
        self.expected_widths: tuple[int, int | None] | None = None
        self.embedding_dirs: list[str] = []
        """Folders to scan; empty: `embeddings_dir()` as the flags give it at each load."""
        self._signature: Any = None
        self._lock = threading.RLock()

    # ---- registry ----

    def clear(self) -> None:
        self.ids_lookup.clear()
        self.word_embeddings.clear()
        self.skipped_embeddings.clear()
        self.failed.clear()

    def register_embedding(self, embedding: Embedding, tokenize: Any) -> Embedding:
        """Make `embedding` triggerable by its name; `tokenize(texts)` gives token ids without specials."""
        self.unregister(embedding.name)
        self.word_embeddings[embedding.name] = embedding
        ids = list(tokenize([embedding.name])[0])
        if not ids:
            return embedding
        entries = self.ids_lookup.setdefault(ids[0], [])
        entries.append((ids, embedding))
        entries.sort(key=lambda entry: len(entry[0]), reverse=True)
        return embedding

    def unregister(self, name: str) -> None:
        if self.word_embeddings.pop(name, None) is None:
            return
        for first, entries in list(self.ids_lookup.items()):
            entries[:] = [e for e in entries if e[1].name != name]
            if not entries:
                del self.ids_lookup[first]

    def find_embedding_at_position(self, tokens: list[int], offset: int) -> tuple[Embedding | None, int | None]:
        """The embedding whose name's token ids start at `tokens[offset]` (longest first), and that length."""
        for ids, embedding in self.ids_lookup.get(tokens[offset], ()):
            if tokens[offset:offset + len(ids)] == ids:
                return embedding, len(ids)
        return None, None

    # ---- files ----

    def add_embedding_dir(self, path: str) -> None:
        if path not in self.embedding_dirs:
            self.embedding_dirs.append(path)
            self._signature = None

    def clear_embedding_dirs(self) -> None:
        self.embedding_dirs.clear()
        self._signature = None

    def _files(self, folders: list[str]) -> list[tuple[str, int, int]]:
        found = []
        for folder in folders:
            for root, dirs, names in os.walk(folder, followlinks=True):
                dirs.sort()
                for name in sorted(names):
                    path = os.path.join(root, name)
                    if os.path.splitext(name)[1].lower() not in EXTENSIONS + IMAGE_EXTENSIONS:
                        continue
                    try:
                        st = os.stat(path)
                    except OSError:
                        continue
                    found.append((path, st.st_size, st.st_mtime_ns))
        return found

    def _read(self, path: str) -> tuple[Any, str] | None:
        """The file's data and the embedding's name; None for an image that holds no embedding."""
        name, ext = os.path.splitext(os.path.basename(path))
        if ext.lower() not in IMAGE_EXTENSIONS:
            return read_embedding_file(path), name
        if os.path.splitext(name)[1].lower() == ".preview":
            return None
        data = read_image_file(path)
        if data is None:
            return None
        stored = data.get("name") if isinstance(data, dict) else None
        return data, stored if isinstance(stored, str) and stored else name

    def load_from_file(self, path: str, tokenize: Any) -> None:
        try:
            found = self._read(path)
            if found is None:
                return
            data, name = found
            embedding = create_embedding_from_data(data, name, path)
        except (errors.CheckpointLoadError, ValueError) as e:
            self.failed[path] = str(e)
            log.error("textual inversion: skipping %s: %s", path, e)
            return
        from modules import hashes
        try:
            embedding.set_hash(hashes.sha256(path, "textual_inversion/" + name) or "")
        except errors.CheckpointNotFound:
            embedding.set_hash("")
        if self.expected_widths is None or fits_model(embedding, self.expected_widths):
            self.register_embedding(embedding, tokenize)
        else:
            self.skipped_embeddings[name] = embedding

    def _sort_by_name(self) -> None:
        """`word_embeddings` in case-insensitive name order (A1111), the same dict object kept."""
        ordered = sorted(self.word_embeddings.values(), key=lambda e: e.name.lower())
        self.word_embeddings.clear()
        self.word_embeddings.update((e.name, e) for e in ordered)

    def load_textual_inversion_embeddings(self, model: Any = None, force_reload: bool = False) -> bool:
        """(Re)load every embedding file when forced, or when the files or `model` changed.

        `model` (default: the current one) gives the tokenizer and the expected width (its token
        embedding's). Returns whether the database was rebuilt.
        """
        if model is None:
            from modules import shared
            model = shared.sd_model
        conditioner = model.cond_stage_model
        with self._lock:
            folders = list(self.embedding_dirs) or [embeddings_dir()]
            files = self._files(folders)
            signature = (id(conditioner), tuple(folders), tuple(files))
            if not force_reload and signature == self._signature:
                return False
            self.clear()
            self.expected_widths = model_widths(model)
            self.expected_shape = sum(w for w in self.expected_widths if w)
            for path, size, _ in files:
                if size > 0:
                    self.load_from_file(path, conditioner.tokenize)
            self._sort_by_name()
            self._signature = signature
            conditioner.embedding_db = self
            if self.word_embeddings or self.skipped_embeddings:
                log.info("textual inversion: %d embeddings loaded, %d skipped (not for text encoder widths %s): %s",
                         len(self.word_embeddings), len(self.skipped_embeddings), self.expected_widths,
                         ", ".join(f"{n} (shape {e.shape})" for n, e in self.skipped_embeddings.items()))
            return True


embedding_db = EmbeddingDatabase()
"""The process's database (A1111: `sd_hijack.model_hijack.embedding_db`)."""


def used_embeddings(conditioner: Any, texts: list[str], emphasis: str = "Original") -> dict[str, Embedding]:
    """Embeddings the conditioner triggers in `texts`, by name, in order of first use."""
    found: dict[str, Embedding] = {}
    if getattr(conditioner, "embedding_db", None) is None:
        return found
    for text in texts:
        chunks, _ = conditioner.tokenize_line(text, emphasis=emphasis)
        for chunk in chunks:
            for fix in chunk.fixes:
                found.setdefault(fix.embedding.name, fix.embedding)
    return found


def ti_hashes(embeddings: dict[str, Embedding]) -> str:
    """The `TI hashes` infotext value, `name: shorthash, …` (A1111 drops `:` and `,` from names)."""
    parts = []
    for name, embedding in embeddings.items():
        if embedding.shorthash:
            parts.append(f"{name.replace(':', '').replace(',', '')}: {embedding.shorthash}")
    return ", ".join(parts)
