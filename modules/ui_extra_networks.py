"""A1111's `modules.ui_extra_networks`, as far as extensions subclass and register pages.

Extensions (Lora-style networks, wildcards managers, …) subclass `ExtraNetworksPage`, implement
`list_items()` / `create_item()` and call `register_page(MyPage())` from an `on_before_ui`
callback. That works here: the page is kept in `extra_pages`, its preview folders are allowed,
and the helpers a subclass calls (`find_preview`, `find_description`, `read_user_metadata`,
`get_sort_keys`, `search_terms_from_path`, `link_preview`) behave as A1111's do. Serena does not
draw the extra-networks cards panel yet (issue 11): `create_html` gives a plain list of the
page's items, and `link_preview` gives A1111's thumbnail URL, which that work will serve.
"""
from __future__ import annotations

import html
import json
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from modules import util

extra_pages: list["ExtraNetworksPage"] = []
"""Every registered page, in registration order."""

allowed_dirs: set[str] = set()
"""Folders preview images may be served from: every registered page's `allowed_directories_for_previews()`."""

default_allowed_preview_extensions = ["png", "jpg", "jpeg", "webp", "gif"]


@dataclass
class ExtraNetworksItem:
    """Wraps one item's dict (A1111 name)."""

    item: dict = field(default_factory=dict)


def allowed_preview_extensions_with_extra(extra_extensions: list[str] | None = None) -> list[str]:
    """The preview image extensions, plus `extra_extensions`."""
    return [*default_allowed_preview_extensions, *(extra_extensions or [])]


def allowed_preview_extensions() -> list[str]:
    """The preview image extensions, with the option `samples_format` when it is another one."""
    from modules import shared
    fmt = str(getattr(shared.opts, "samples_format", "png") or "png").lower()
    return allowed_preview_extensions_with_extra([] if fmt in default_allowed_preview_extensions else [fmt])


def quote_js(s: str) -> str:
    """`s` as a double-quoted JavaScript string literal (backslashes and quotes escaped)."""
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def register_page(page: "ExtraNetworksPage") -> None:
    """Add `page` to `extra_pages` and allow its preview folders (A1111 name)."""
    extra_pages.append(page)
    allowed_dirs.clear()
    for p in extra_pages:
        allowed_dirs.update(os.path.abspath(d) for d in p.allowed_directories_for_previews())


def initialize() -> None:
    """Forget every registered page (A1111 does this before the UI is built again)."""
    extra_pages.clear()
    allowed_dirs.clear()


def register_default_pages() -> None:
    """A1111 registers its textual inversion, hypernetwork and checkpoint pages here; Serena's
    built-in pages come with the extra-networks panel (issue 11), so none is registered yet."""


def get_metadata(page: str = "", item: str = "") -> dict:
    """`{"metadata": <JSON text>}` of item `item` of the page named `page` (A1111's route body)."""
    found = next((p for p in extra_pages if p.name == page), None)
    if found is None:
        return {"metadata": None}
    metadata = found.metadata.get(item)
    return {"metadata": None if metadata is None else json.dumps(metadata, indent=4, ensure_ascii=False)}


class ExtraNetworksPage:
    """Base class of an extra-networks tab (A1111's attributes and helpers; see the module doc).

    Subclasses implement `refresh()`, `list_items()` (yielding item dicts with at least "name",
    "filename", "prompt"), `create_item(name, index)` and `allowed_directories_for_previews()`.
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self.name = title.lower()
        self.extra_networks_tabname = self.name.replace(" ", "_")
        self.id_page = self.extra_networks_tabname
        self.allow_prompt = True
        self.allow_negative_prompt = False
        self.metadata: dict[str, Any] = {}
        self.items: dict[str, dict] = {}
        self.lister = util.MassFileLister()

    # --- what a subclass provides ---------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the page's files again (nothing by default)."""

    def list_items(self) -> Iterator[dict]:
        """The page's items (none by default)."""
        return iter(())

    def create_item(self, name: str, index: int | None = None) -> dict | None:
        """One item by name (None by default)."""
        return None

    def allowed_directories_for_previews(self) -> list[str]:
        """Folders holding this page's files and their previews (none by default)."""
        return []

    # --- helpers a subclass calls -----------------------------------------------------------------------
    def link_preview(self, filename: str) -> str:
        """A1111's thumbnail URL for a preview file (with its mtime, so a changed file is fetched again)."""
        quoted = urllib.parse.quote(filename.replace("\\", "/"))
        mtime, _ = self.lister.mctime(filename)
        return f"./sd_extra_networks/thumb?filename={quoted}&mtime={mtime}"

    def search_terms_from_path(self, filename: str, possible_directories: list[str] | None = None) -> str:
        """`filename` relative to the parent of the page folder that holds it ("" when none does)."""
        abspath = os.path.abspath(filename)
        for folder in possible_directories if possible_directories is not None else \
                self.allowed_directories_for_previews():
            parent = os.path.dirname(os.path.abspath(folder))
            if abspath.startswith(parent):
                return os.path.relpath(abspath, parent)
        return ""

    def find_preview(self, path: str) -> str | None:
        """The preview of the file whose path without extension is `path`: `<path>.<ext>` or
        `<path>.preview.<ext>` for each allowed image extension, as a `link_preview` URL."""
        for ext in allowed_preview_extensions():
            for candidate in (f"{path}.{ext}", f"{path}.preview.{ext}"):
                if self.lister.exists(candidate):
                    return self.link_preview(candidate)
        return None

    def find_embedded_preview(self, path: str, name: str, metadata: dict) -> str | None:
        """A preview stored inside the model file; Serena reads none (None)."""
        return None

    def find_description(self, path: str) -> str | None:
        """The text of `<path>.txt` or `<path>.description.txt`, if one exists."""
        for candidate in (f"{path}.txt", f"{path}.description.txt"):
            if self.lister.exists(candidate):
                try:
                    with open(candidate, encoding="utf-8", errors="replace") as file:
                        return file.read()
                except OSError:
                    pass
        return None

    def get_sort_keys(self, path: str) -> dict[str, Any]:
        """The keys the cards panel sorts by: creation and modification time, name, folder."""
        mtime, ctime = self.lister.mctime(path)
        p = Path(path)
        return {"date_created": int(ctime), "date_modified": int(mtime), "name": p.name.lower(),
                "path": str(p.parent).lower()}

    def read_user_metadata(self, item: dict, use_cache: bool = True) -> None:
        """Put the JSON beside the item's file (`<stem>.json`), if any, in `item["user_metadata"]`."""
        filename = item.get("filename")
        if not filename:
            return
        path = os.path.splitext(filename)[0] + ".json"
        metadata: dict = {}
        try:
            with open(path, encoding="utf8") as file:
                metadata = json.load(file)
        except (OSError, ValueError):
            pass
        item["user_metadata"] = metadata if isinstance(metadata, dict) else {}

    def create_html(self, tabname: str, *, empty: bool = False) -> str:
        """The page's items as a plain HTML list (Serena's stand-in for A1111's cards panel)."""
        if empty:
            return ""
        self.items = {item["name"]: item for item in self.list_items() if "name" in item}
        rows = "".join(f"<li data-prompt={html.escape(quote_js(str(item.get('prompt', ''))))}>"
                       f"{html.escape(str(name))}</li>" for name, item in self.items.items())
        return f"<ul class='extra-network-list' id='{tabname}_{self.extra_networks_tabname}_list'>{rows}</ul>"
