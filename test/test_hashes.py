"""Model hashes and A1111's cache.json layout."""
from __future__ import annotations

import hashlib
import json
import os

import pytest

from modules import errors, hashes


@pytest.fixture()
def model_file(tmp_path):
    path = tmp_path / "m.safetensors"
    path.write_bytes(os.urandom(0x100000 + 0x20000))
    return str(path)


def test_sha256_and_old_hash(model_file):
    data = open(model_file, "rb").read()
    assert hashes.calculate_sha256(model_file) == hashlib.sha256(data).hexdigest()
    assert hashes.model_hash(model_file) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert hashes.model_hash(model_file + ".missing") == "NOFILE"


def test_cache_is_written_in_a1111_layout_and_reused(model_file, tmp_path):
    cache = str(tmp_path / "cache.json")
    with open(cache, "w") as f:
        json.dump({"other-section": {"k": 1}}, f)
    value = hashes.sha256(model_file, "checkpoint/m.safetensors", cache_path=cache, no_hashing=False)
    data = json.load(open(cache))
    assert data["other-section"] == {"k": 1}
    entry = data["hashes"]["checkpoint/m.safetensors"]
    assert entry == {"mtime": os.path.getmtime(model_file), "sha256": value}
    # a cached value is used even with hashing off
    assert hashes.sha256(model_file, "checkpoint/m.safetensors", cache_path=cache, no_hashing=True) == value
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_stale_entry_is_recomputed(model_file, tmp_path):
    cache = str(tmp_path / "cache.json")
    first = hashes.sha256(model_file, "t", cache_path=cache, no_hashing=False)
    with open(model_file, "ab") as f:
        f.write(b"more")
    os.utime(model_file, (1, 1))
    assert hashes.sha256_from_cache(model_file, "t", cache_path=cache) is None
    second = hashes.sha256(model_file, "t", cache_path=cache, no_hashing=False)
    assert second != first and second == hashes.calculate_sha256(model_file)


def test_no_hashing_returns_none_and_writes_nothing(model_file, tmp_path):
    cache = str(tmp_path / "cache.json")
    assert hashes.sha256(model_file, "t", cache_path=cache, no_hashing=True) is None
    assert not os.path.exists(cache)


def test_corrupt_cache_is_ignored(model_file, tmp_path):
    cache = tmp_path / "cache.json"
    cache.write_text("{not json")
    assert hashes.sha256(model_file, "t", cache_path=str(cache), no_hashing=False)
    assert "hashes" in json.loads(cache.read_text())


def test_missing_file(tmp_path):
    with pytest.raises(errors.CheckpointNotFound, match="gone"):
        hashes.sha256(str(tmp_path / "gone.safetensors"), "t", cache_path=str(tmp_path / "c.json"), no_hashing=False)


def test_addnet_hash_skips_header(tmp_path):
    import safetensors.torch
    import torch
    a, b = str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")
    safetensors.torch.save_file({"w": torch.ones(3)}, a, metadata={"x": "1"})
    safetensors.torch.save_file({"w": torch.ones(3)}, b, metadata={"x": "2"})
    assert hashes.calculate_sha256(a) != hashes.calculate_sha256(b)
    assert hashes.addnet_hash_safetensors(a) == hashes.addnet_hash_safetensors(b)
