"""Atomic writes: complete or absent, never partial; the usual file mode."""
from __future__ import annotations

import os

import pytest

from modules import fileio


def test_written_file_has_the_mode_a_plain_open_would_give(tmp_path):
    fileio.atomic_write_text(str(tmp_path / "a.txt"), "hello")
    with open(tmp_path / "b.txt", "w") as f:
        f.write("hello")
    assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == os.stat(tmp_path / "b.txt").st_mode & 0o777
    assert (tmp_path / "a.txt").read_text() == "hello"


def test_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    target = tmp_path / "sub" / "x.bin"

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        fileio.atomic_write(str(target), boom)
    assert os.listdir(tmp_path / "sub") == []


def test_replaces_an_existing_file_whole(tmp_path):
    target = tmp_path / "x.bin"
    fileio.atomic_write_bytes(str(target), b"old")
    fileio.atomic_write_bytes(str(target), b"new content")
    assert target.read_bytes() == b"new content"


def test_atomic_save_publishes_whole_files_and_never_replaces_unless_asked(tmp_path):
    target = tmp_path / "sub" / "model.safetensors"
    fileio.atomic_save(str(target), lambda tmp: open(tmp, "wb").write(b"first"), overwrite=False)
    assert target.read_bytes() == b"first"
    with pytest.raises(FileExistsError):
        fileio.atomic_save(str(target), lambda tmp: open(tmp, "wb").write(b"second"), overwrite=False)
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError):
        fileio.atomic_save(str(target), lambda tmp: (_ for _ in ()).throw(RuntimeError("disk full")))
    assert target.read_bytes() == b"first"
    fileio.atomic_save(str(target), lambda tmp: open(tmp, "wb").write(b"second"))
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.safetensors"]  # no temporary left


def test_file_model_cache_reloads_a_changed_file_and_keeps_the_most_recent(tmp_path):
    import os
    from modules.fileio import FileModelCache
    loads = []
    cache = FileModelCache(size=1)
    a, b = tmp_path / "a.pth", tmp_path / "b.pth"
    a.write_bytes(b"1")
    b.write_bytes(b"2")

    def get(path):
        return cache.get(str(path), lambda: loads.append(path.name) or path.read_bytes(),
                         missing=lambda e: LookupError(str(path)))

    assert get(a) == b"1" and get(a) == b"1" and loads == ["a.pth"]
    a.write_bytes(b"11")  # another size: loaded again
    assert get(a) == b"11" and loads == ["a.pth", "a.pth"]
    get(b)
    get(a)  # b pushed a out (size 1)
    assert loads == ["a.pth", "a.pth", "b.pth", "a.pth"]
    os.remove(b)
    import pytest
    with pytest.raises(LookupError):
        get(b)
