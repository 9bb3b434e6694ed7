"""A1111's `modules.util`: small file and text helpers extensions import.

This is their home; `modules.shared` keeps the older names (`natural_sort_key`, `listfiles`,
`walk_files`) for extensions that import them from there. Nothing here reads options at import.
"""
from __future__ import annotations

import hashlib
import os
import re
from typing import Iterator

from modules.paths import script_path

cwd = os.getcwd()


def natural_sort_key(s: str, regex: re.Pattern = re.compile(r"([0-9]+)")) -> list:
    """Sort key that orders "img2" before "img10" (case-insensitive)."""
    return [int(text) if text.isdigit() else text.lower() for text in regex.split(s)]


def listfiles(dirname: str) -> list[str]:
    """Paths of the files (not folders, not hidden) directly in `dirname`, naturally sorted."""
    names = [n for n in sorted(os.listdir(dirname), key=natural_sort_key) if not n.startswith(".")]
    return [os.path.join(dirname, n) for n in names if os.path.isfile(os.path.join(dirname, n))]


def plaintext_to_html(text: str, classname: str | None = None) -> str:
    """`text` as one HTML paragraph: escaped, each newline a `<br>` (A1111's helper; also exported
    by `modules.ui_common`)."""
    import html as html_lib
    content = "<br>\n".join(html_lib.escape(line) for line in str(text).split("\n"))
    return f"<p class='{classname}'>{content}</p>" if classname else f"<p>{content}</p>"


def html_path(filename: str) -> str:
    """`<install>/html/<filename>` (where A1111 keeps its HTML snippets)."""
    return os.path.join(script_path, "html", filename)


def html(filename: str) -> str:
    """The text of `html_path(filename)`, or "" when it cannot be read."""
    try:
        with open(html_path(filename), encoding="utf8") as file:
            return file.read()
    except OSError:
        return ""


def _list_hidden_files() -> bool:
    from modules import shared
    return bool(getattr(shared.opts, "list_hidden_files", True))


def _is_hidden_folder(root: str) -> bool:
    return "/." in root or "\\." in root


def walk_files(path: str, allowed_extensions: list[str] | None = None) -> Iterator[str]:
    """Every file under `path` (recursively, folders and files in natural order), only those with
    one of `allowed_extensions` (".png" style) when given. Files inside hidden folders are left out
    unless the option `list_hidden_files` is on (its default)."""
    if not os.path.exists(path):
        return
    allowed = {e.lower() for e in allowed_extensions} if allowed_extensions is not None else None
    keep_hidden = _list_hidden_files()
    for root, _, files in sorted(os.walk(path, followlinks=True), key=lambda item: natural_sort_key(item[0])):
        if not keep_hidden and _is_hidden_folder(root):
            continue
        for filename in sorted(files, key=natural_sort_key):
            if allowed is not None and os.path.splitext(filename)[1].lower() not in allowed:
                continue
            yield os.path.join(root, filename)


def ldm_print(*args, **kwargs) -> None:
    """`print`, unless the option `hide_ldm_prints` (default on) silences it."""
    from modules import shared
    if getattr(shared.opts, "hide_ldm_prints", True):
        return
    print(*args, **kwargs)


def truncate_path(target_path: str, base_path: str = cwd) -> str:
    """`target_path` relative to `base_path` when it lies inside it, else absolute."""
    target, base = os.path.abspath(target_path), os.path.abspath(base_path)
    try:
        if os.path.commonpath([target, base]) == base:
            return os.path.relpath(target, base)
    except ValueError:  # different drives
        pass
    return target


def topological_sort(dependencies: dict[str, list[str]]) -> list[str]:
    """Names in `dependencies` order, each after the names it depends on (A1111 name; the
    implementation is the extension loader's, `modules.scripts.topological_sort`)."""
    from modules import scripts
    return scripts.topological_sort(dependencies)


class MassFileListerCachedDir:
    """One folder's entries, read with a single `scandir`: lower-cased and exact names → (name, mtime, ctime)."""

    def __init__(self, dirname: str) -> None:
        self.dirname = dirname
        entries = []
        if os.path.isdir(dirname):
            for entry in os.scandir(dirname):
                stat = entry.stat(follow_symlinks=False)
                entries.append((entry.name, stat.st_mtime, stat.st_ctime))
        self.files = {e[0].lower(): e for e in entries}
        self.files_cased = {e[0]: e for e in entries}

    def update_entry(self, filename: str) -> None:
        """Read one file's times again (after it was written)."""
        try:
            stat = os.stat(os.path.join(self.dirname, filename))
        except FileNotFoundError:
            return
        entry = (filename, stat.st_mtime, stat.st_ctime)
        self.files[filename.lower()] = entry
        self.files_cased[filename] = entry


class MassFileLister:
    """Answers "does this file exist, and when was it changed" with one directory listing per folder
    instead of one `stat` per file (extra-networks pages ask for thousands of preview files)."""

    def __init__(self) -> None:
        self.cached_dirs: dict[str, MassFileListerCachedDir] = {}

    def find(self, path: str) -> tuple[str, float, float] | None:
        """`(name, mtime, ctime)` of the file at `path`, or None when there is none (the name
        matches exactly first, then case-insensitively)."""
        dirname, filename = os.path.split(path)
        cached = self.cached_dirs.get(dirname)
        if cached is None:
            cached = self.cached_dirs[dirname] = MassFileListerCachedDir(dirname)
        found = cached.files_cased.get(filename)
        if found is not None:
            return found
        if filename.lower() not in cached.files:
            return None
        try:
            stat = os.stat(path, follow_symlinks=False)
        except OSError:
            return None
        return filename, stat.st_mtime, stat.st_ctime

    def exists(self, path: str) -> bool:
        return self.find(path) is not None

    def mctime(self, path: str) -> tuple[float, float]:
        """`(mtime, ctime)` of the file, or `(0, 0)` when it does not exist."""
        found = self.find(path)
        return (0, 0) if found is None else (found[1], found[2])

    def reset(self) -> None:
        self.cached_dirs.clear()

    def update_file_entry(self, path: str) -> None:
        dirname, filename = os.path.split(path)
        cached = self.cached_dirs.get(dirname)
        if cached is not None:
            cached.update_entry(filename)


def open_folder(path: str) -> None:
    """Open `path` in the desktop's file manager (A1111 name). Serena runs as a server, so this only
    logs the folder: opening windows on the server machine helps no browser user."""
    import logging
    logging.getLogger(__name__).info("Folder: %s", os.path.normpath(path))


def compare_sha256(file_path: str, hash_prefix: str) -> bool:
    """Whether the file's sha256 starts with `hash_prefix` (case and spaces ignored)."""
    digest = hashlib.sha256()
    with open(file_path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest().startswith(hash_prefix.strip().lower())


def load_file_from_url(url: str, *, model_dir: str, progress: bool = True, file_name: str | None = None,
                       hash_prefix: str | None = None, re_download: bool = False) -> str:
    """The path of `model_dir/<file_name>` (default: the URL's last path part), downloading it first
    when it is missing or `re_download` (A1111 name).

    The download goes to `<name>.tmp` and is renamed only when complete and, with `hash_prefix`,
    when its sha256 matches. With `HF_HUB_OFFLINE=1` nothing is downloaded: a missing file is an
    error naming where to put it.

    Raises:
        FileNotFoundError: offline and the file is missing.
        ValueError: the downloaded file's hash does not match `hash_prefix`.
    """
    import shutil
    import urllib.parse
    import urllib.request
    name = file_name or os.path.basename(urllib.parse.urlparse(url).path)
    cached = os.path.abspath(os.path.join(model_dir, name))
    if os.path.exists(cached) and not re_download:
        return cached
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(f"{cached} is missing and downloads are off (HF_HUB_OFFLINE=1); "
                                f"download {url} and put it there")
    os.makedirs(model_dir, exist_ok=True)
    temp = cached + ".tmp"
    with urllib.request.urlopen(url) as response, open(temp, "wb") as out:  # noqa: S310 (extension-given URL)
        shutil.copyfileobj(response, out)
    if hash_prefix and not compare_sha256(temp, hash_prefix):
        os.remove(temp)
        raise ValueError(f"{url}: the file's sha256 does not start with {hash_prefix}")
    os.replace(temp, cached)
    return cached
