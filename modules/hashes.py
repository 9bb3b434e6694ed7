"""File hashes of models, with A1111's persistent cache.

A checkpoint's sha256 is costly (seconds per GB), so it is remembered in `cache.json` under the
data folder, in A1111's layout::

    {"hashes": {"checkpoint/sub/name.safetensors": {"mtime": 1700000000.0, "sha256": "ab…"}}}

An entry is trusted only while the file's modification time is the one recorded. Other sections
of the file (written by other code) are kept as they are. The file is rewritten atomically.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Any

from modules import errors
from modules.fileio import atomic_write_text

CHUNK = 1024 * 1024
_lock = threading.Lock()


def calculate_sha256(filename: str) -> str:
    """Full sha256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(filename, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_hash(filename: str) -> str:
    """A1111's old 8-hex model hash: sha256 of the 64 KiB at offset 1 MiB; "NOFILE" if missing."""
    try:
        with open(filename, "rb") as f:
            f.seek(0x100000)
            return hashlib.sha256(f.read(0x10000)).hexdigest()[0:8]
    except FileNotFoundError:
        return "NOFILE"


def addnet_hash_safetensors(filename: str) -> str:
    """sha256 of a .safetensors file's tensor data, skipping its JSON header (A1111's Lora hash)."""
    digest = hashlib.sha256()
    with open(filename, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        f.seek(8 + header_len)
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_file() -> str:
    from modules import shared
    return os.environ.get("SD_WEBUI_CACHE_FILE") or shared.data_paths.hash_cache_file


def _read_cache(path: str) -> dict[str, Any]:
    """The whole cache file; missing → empty; unreadable → empty (it is only a cache)."""
    try:
        with open(path, encoding="utf8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cache(subsection: str, path: str | None = None) -> dict[str, Any]:
    """A copy of one section of the cache file (A1111 name), e.g. `cache("hashes")`."""
    section = _read_cache(path or _cache_file()).get(subsection)
    return dict(section) if isinstance(section, dict) else {}


def _store(subsection: str, title: str, entry: dict[str, Any], path: str) -> None:
    with _lock:
        data = _read_cache(path)
        section = data.get(subsection)
        if not isinstance(section, dict):
            section = {}
        section[title] = entry
        data[subsection] = section
        atomic_write_text(path, json.dumps(data, indent=4))


def sha256_from_cache(filename: str, title: str, use_addnet_hash: bool = False,
                      cache_path: str | None = None) -> str | None:
    """The cached sha256 of `filename` under `title`, or None when absent or stale (mtime changed)."""
    entry = cache("hashes-addnet" if use_addnet_hash else "hashes", cache_path).get(title)
    if not isinstance(entry, dict) or not entry.get("sha256"):
        return None
    try:
        mtime = os.path.getmtime(filename)
    except OSError:
        return None
    if float(entry.get("mtime", 0)) != mtime:
        return None
    return str(entry["sha256"])


def sha256(filename: str, title: str, use_addnet_hash: bool = False,
           cache_path: str | None = None, no_hashing: bool | None = None) -> str | None:
    """sha256 of `filename`, from the cache when fresh, else computed and cached.

    Returns None when hashing is disabled (`--no-hashing`) and nothing is cached.

    Raises:
        errors.CheckpointNotFound: the file does not exist.
    """
    path = cache_path or _cache_file()
    cached = sha256_from_cache(filename, title, use_addnet_hash, path)
    if cached is not None:
        return cached
    if no_hashing is None:
        from modules import shared
        no_hashing = bool(getattr(shared.cmd_opts, "no_hashing", False))
    if no_hashing:
        return None
    if not os.path.isfile(filename):
        raise errors.CheckpointNotFound(f"cannot hash {filename!r}: no such file")
    mtime = os.path.getmtime(filename)
    value = addnet_hash_safetensors(filename) if use_addnet_hash else calculate_sha256(filename)
    _store("hashes-addnet" if use_addnet_hash else "hashes", title, {"mtime": mtime, "sha256": value}, path)
    return value
