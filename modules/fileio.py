"""Atomic file writes: a file is either absent or complete, never partial."""
from __future__ import annotations

import os
import tempfile
from typing import IO, Any, Callable


def atomic_write(path: str, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write` on a temporary file beside `path`, then rename it over `path`.

    On any error the temporary file is removed and `path` is left as it was.
    """
    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:
            write(f)

    atomic_save(path, save)


def _umask() -> int:
    """The process umask (reading it means setting it; it is put straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf8")))


def atomic_save(path: str, save: Callable[[str], None], *, overwrite: bool = True) -> None:
    """Call `save(temporary_path)` beside `path` (for writers that take a path, such as
    safetensors' `save_file`), then publish the file as `path` in one step.

    Without `overwrite` the publishing is a hard link, which fails if `path` exists, even if it
    appeared while saving (where the file system has no hard links: a check, then a rename).
    On any error or interrupt the temporary file is removed and nothing is left at `path`.

    Raises:
        FileExistsError: `path` exists and `overwrite` is False.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        save(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a saved file gets the usual mode
        if overwrite:
            os.replace(tmp, path)
            return
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:
            if os.path.exists(path):
                raise FileExistsError(path) from None
            os.replace(tmp, path)
            return
        os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class FileModelCache:
    """Models loaded from files, kept while the file is unchanged (same path, mtime and size); at
    most `size` of them, the least recently used dropped first. Thread-safe; a load runs outside
    the lock, so two threads may load the same file once each (the later one is kept)."""

    def __init__(self, size: int = 1):
        import collections
        import threading
        self.size = size
        self._items: "collections.OrderedDict[Any, tuple[tuple[int, int], Any]]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, load: Callable[[], Any], *, missing: Callable[[OSError], Exception],
            extra_key: Any = None) -> Any:
        """The cached model of `path`, else `load()`'s result, cached.

        Raises:
            The exception `missing(error)` returns when `path` cannot be stat'ed.
        """
        try:
            st = os.stat(path)
        except OSError as e:
            raise missing(e) from e
        key, stamp = (os.path.abspath(path), extra_key), (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] == stamp:
                self._items.move_to_end(key)
                return hit[1]
        model = load()
        with self._lock:
            self._items[key] = (stamp, model)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return model

    def clear(self) -> None:
        """Drop every cached model."""
        with self._lock:
            self._items.clear()
