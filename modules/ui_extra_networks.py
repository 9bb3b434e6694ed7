"""A1111's `modules.ui_extra_networks`, as far as extensions subclass and register pages.

Extensions (Lora-style networks, wildcards managers, …) subclass `ExtraNetworksPage`, implement
`list_items()` / `create_item()` and call `register_page(MyPage())` from an `on_before_ui`
callback. That works here: the page is kept in `extra_pages`, its preview folders are allowed,
and the helpers a subclass calls (`find_preview`, `find_description`, `read_user_metadata`,
`get_sort_keys`, `search_terms_from_path`, `link_preview`) behave as A1111's do.

The panel (issue 11): :func:`create_ui` draws it in a generation tab, toggled by 🎴, with one sub-tab
per page (Textual Inversion, Hypernetworks, Checkpoints, Lora, then extensions' pages): cards with
preview, search, sort and direction, refresh. Clicking a card adds its tag to the prompt, clicking
it again removes it (A1111); a checkpoint card switches the model; 🛠 edits the user metadata kept
in `<model>.json` beside the file. :func:`add_routes` serves previews and metadata
(`/sd_extra_networks/thumb`, `/sd_extra_networks/metadata`) from the model folders only.
"""
from __future__ import annotations

import functools
import html
import json
import logging
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from modules import util
from modules.ui_gate import PageOrApiAuthGate

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
    """Register the built-in pages (A1111's order): Textual Inversion, Hypernetworks, Checkpoints,
    then the built-in Lora extension's page. Nothing is added when they are registered already."""
    if any(getattr(p, "serena_builtin", False) for p in extra_pages):
        return
    from modules.ui_extra_networks_checkpoints import ExtraNetworksPageCheckpoints
    from modules.ui_extra_networks_hypernets import ExtraNetworksPageHypernetworks
    from modules.ui_extra_networks_textual_inversion import ExtraNetworksPageTextualInversion
    register_page(ExtraNetworksPageTextualInversion())
    register_page(ExtraNetworksPageHypernetworks())
    register_page(ExtraNetworksPageCheckpoints())
    register_page(_lora_page_module().ExtraNetworksPageLora())


def _lora_page_module() -> Any:
    """`extensions-builtin/Lora/ui_extra_networks_lora.py`, imported as A1111 names it."""
    import importlib.util
    import sys
    name = "ui_extra_networks_lora"
    if name not in sys.modules:
        from modules import paths
        path = os.path.join(paths.script_path, "extensions-builtin", "Lora", f"{name}.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def ensure_pages() -> list["ExtraNetworksPage"]:
    """The registered pages, registering the built-in ones first when none is."""
    if not any(getattr(p, "serena_builtin", False) for p in extra_pages):
        builtin = list(extra_pages)
        extra_pages.clear()
        register_default_pages()
        for page in builtin:
            register_page(page)
    return extra_pages


def find_page(name: str) -> "ExtraNetworksPage | None":
    """The registered page whose `name` (or tab name) is `name`."""
    return next((p for p in extra_pages if name in (p.name, p.extra_networks_tabname)), None)


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
    def file_item(self, name: str, filename: str, prompt_text: str, **extra: Any) -> dict:
        """The item dict of a model file (Serena's pages): preview, description, search terms, sort keys,
        user metadata, and `prompt` as a JavaScript string literal (A1111's form)."""
        path = os.path.splitext(filename)[0]
        item = {"name": name, "filename": filename, "shorthash": None, "preview": self.find_preview(path),
                "description": self.find_description(path),
                "search_terms": [t for t in (self.search_terms_from_path(filename),) if t],
                "prompt": quote_js(prompt_text), "local_preview": f"{path}.preview.png",
                "sort_keys": self.get_sort_keys(filename) if os.path.exists(filename) else {"name": name.lower()},
                **extra}
        self.read_user_metadata(item)
        return item

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

    def create_html(self, tabname: str, *, empty: bool = False, search: str = "", sort: str = "Name",
                    descending: bool = False, limit: int | None = None) -> str:
        """The page's items as A1111-style cards (re-read from `list_items()`), filtered and sorted."""
        if empty:
            return ""
        self.items = {item["name"]: item for item in self.list_items() if "name" in item}
        return cards_html(self, tabname, list(self.items.values()), search=search, sort=sort,
                          descending=descending, limit=limit)


# --- cards: tags, search, sort ---------------------------------------------------------------------------------
SORT_CHOICES = ["Name", "Date Created", "Date Modified", "Path"]
"""The panel's sort orders (label → `get_sort_keys` key in `_SORT_KEYS`)."""
_SORT_KEYS = {"Name": "name", "Date Created": "date_created", "Date Modified": "date_modified", "Path": "path"}
DEFAULT_CARDS_LIMIT = 500
"""At most this many cards are drawn per page (the rest are reached by searching)."""


def default_multiplier() -> str:
    """Option `extra_networks_default_multiplier` (default 1) as A1111's JavaScript writes it: "1", "0.8"."""
    from modules import shared
    try:
        value = float(getattr(shared.opts, "extra_networks_default_multiplier", 1.0))
    except (TypeError, ValueError):
        value = 1.0
    return f"{value:g}"


def unquote_js(text: str) -> str:
    """Undo :func:`quote_js` (text that is not such a literal is returned as is)."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            value = json.loads(text)
            return value if isinstance(value, str) else text
        except ValueError:
            return text[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return text


def item_prompt_text(item: dict) -> str:
    """The text a click on `item` adds to the prompt (its "prompt", a JavaScript string literal)."""
    return unquote_js(str(item.get("prompt") or ""))


def _tag_pattern(text: str) -> "re.Pattern":
    """A pattern finding `text` in a prompt; `<kind:name:…>` matches the same network at any weight."""
    m = re.fullmatch(r"<([^:<>]+):([^:<>]+)(?::[^<>]*)?>(.*)", text.strip(), flags=re.S)
    if m:
        rest = re.escape(m.group(3).strip())
        tail = rf"(?:\s*{rest})?" if rest else ""
        return re.compile(rf"<{re.escape(m.group(1))}:{re.escape(m.group(2))}(?::[^<>]*)?>{tail}")
    return re.compile(rf"(?<![\w]){re.escape(text.strip())}(?![\w])")


def toggle_in_prompt(prompt: str, text: str, separator: str | None = None) -> str:
    """`prompt` with `text` removed when present (any weight for a `<kind:name:w>` tag), else appended
    after the separator (option `extra_networks_add_text_separator`, default " ") — A1111's card click."""
    text = text.strip()
    if not text:
        return prompt
    prompt = prompt or ""
    found = _tag_pattern(text).search(prompt)
    if found:
        before, after = prompt[:found.start()], prompt[found.end():]
        before = re.sub(r"[\s,]*$", "", before) if not after.strip() or not before.strip() else before.rstrip()
        after = after.lstrip() if before.strip() else re.sub(r"^[\s,]*", "", after)
        joined = f"{before} {after}" if before and after and not after.startswith(",") else before + after
        return joined.strip()
    if separator is None:
        from modules import shared
        separator = str(getattr(shared.opts, "extra_networks_add_text_separator", " "))
    return text if not prompt.strip() else prompt + separator + text


def filter_items(items: list[dict], search: str) -> list[dict]:
    """The items whose name, search terms or description contain every word of `search` (case-insensitive)."""
    words = (search or "").lower().split()
    if not words:
        return list(items)

    def haystack(item: dict) -> str:
        terms = item.get("search_terms") or []
        return " ".join([str(item.get("name", "")), *map(str, terms), str(item.get("description") or "")]).lower()

    return [item for item in items if all(w in haystack(item) for w in words)]


def sort_items(items: list[dict], sort: str = "Name", descending: bool = False) -> list[dict]:
    """`items` ordered by `sort` (one of :data:`SORT_CHOICES`; name breaks ties)."""
    key = _SORT_KEYS.get(sort, "name")

    def sort_key(item: dict) -> tuple:
        keys = item.get("sort_keys") or {}
        value = keys.get(key, str(item.get("name", "")).lower() if key in ("name", "path") else 0)
        return value, str(item.get("name", "")).lower()

    return sorted(items, key=sort_key, reverse=descending)


def _attr(value: Any) -> str:
    return html.escape(str(value), quote=True)


def card_html(page: "ExtraNetworksPage", tabname: str, item: dict) -> str:
    """One card: preview (or the name on a plain background), name, description, 🛠 edit button."""
    name = str(item.get("name", ""))
    preview = item.get("preview")
    image = f"<img class='preview' loading='lazy' src='{_attr(preview)}' alt=''>" if preview else ""
    description = item.get("description") or (item.get("user_metadata") or {}).get("description") or ""
    desc = f"<span class='description'>{html.escape(str(description))}</span>" if description else ""
    classes = "card" + ("" if preview else " card-no-preview")
    return (f"<div class='{classes}' data-page='{_attr(page.extra_networks_tabname)}' data-name='{_attr(name)}' "
            f"data-prompt='{_attr(item_prompt_text(item))}' title='{_attr(name)}'>{image}"
            f"<div class='button-row'><div class='edit-button card-button' data-action='edit' "
            f"title='Edit metadata'>🛠</div></div>"
            f"<div class='actions'><span class='name'>{html.escape(name)}</span>{desc}</div></div>")


def cards_html(page: "ExtraNetworksPage", tabname: str, items: list[dict], *, search: str = "", sort: str = "Name",
               descending: bool = False, limit: int | None = None) -> str:
    """The cards of `items` matching `search`, sorted, at most `limit` (default :data:`DEFAULT_CARDS_LIMIT`)."""
    limit = DEFAULT_CARDS_LIMIT if limit is None else limit
    shown = sort_items(filter_items(items, search), sort, descending)
    cards = "".join(card_html(page, tabname, item) for item in shown[:limit])
    note = ""
    if not items:
        dirs = ", ".join(page.allowed_directories_for_previews()) or "its folder"
        note = f"<div class='nocards'>Nothing here. Add some content to {html.escape(dirs)}, then press 🔄.</div>"
    elif not shown:
        note = "<div class='nocards'>No card matches the search.</div>"
    elif len(shown) > limit:
        note = f"<div class='nocards'>Showing {limit} of {len(shown)}: refine the search to see the rest.</div>"
    return (f"<div class='extra-network-cards' id='{_attr(tabname)}_{_attr(page.extra_networks_tabname)}_cards'>"
            f"{cards}{note}</div>")


# --- user metadata ------------------------------------------------------------------------------------------------
USER_METADATA_FIELDS = ("description", "activation text", "preferred weight", "notes")


def user_metadata_path(item: dict) -> str:
    """`<model file without extension>.json`, where A1111 keeps an item's user metadata."""
    return os.path.splitext(str(item["filename"]))[0] + ".json"


def save_user_metadata(item: dict, values: dict) -> dict:
    """Merge `values` (keys of :data:`USER_METADATA_FIELDS`) into the item's JSON file, written
    atomically; other keys already in the file are kept. Returns the new metadata."""
    from modules import fileio
    path = user_metadata_path(item)
    current: dict = {}
    try:
        with open(path, encoding="utf8") as file:
            loaded = json.load(file)
        current = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    for key, value in values.items():
        if key == "preferred weight":
            try:
                value = float(value or 0)
            except (TypeError, ValueError):
                value = 0.0
        current[key] = value if value is not None else ""
    fileio.atomic_write_text(path, json.dumps(current, indent=4, ensure_ascii=False))
    item["user_metadata"] = current
    return current


# --- routes: previews and metadata ------------------------------------------------------------------------------
def _inside(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([path, folder]) == folder
    except ValueError:
        return False


def preview_file_allowed(filename: str) -> str | None:
    """The real path of `filename` when it is an image inside a page's folder, else None (no escape
    through `..` or links: both sides are resolved first)."""
    if not filename or "\x00" in filename:
        return None
    real = os.path.realpath(filename)
    ext = os.path.splitext(real)[1][1:].lower()
    if ext not in allowed_preview_extensions() or not os.path.isfile(real):
        return None
    ensure_pages()
    folders = {os.path.realpath(d) for p in extra_pages for d in p.allowed_directories_for_previews()}
    return real if any(_inside(real, folder) for folder in folders) else None


def add_routes(app: Any) -> None:
    """Add `/sd_extra_networks/thumb` and `/sd_extra_networks/metadata` (A1111's routes) to `app`,
    behind the API's credentials (or the UI's login) when those are set. Call before the Gradio mount."""
    from fastapi import HTTPException
    from fastapi.responses import FileResponse

    log = logging.getLogger("serena.ui")

    def thumb(filename: str = "") -> Any:
        real = preview_file_allowed(filename)
        if real is None:
            log.warning("extra networks: refused preview %r (not an image inside a model folder)", filename)
            raise HTTPException(status_code=404, detail="File not found")
        return FileResponse(real, headers={"Accept-Ranges": "bytes"})

    def metadata(page: str = "", item: str = "") -> dict:
        ensure_pages()
        found = find_page(page)
        if found is not None:
            try:
                found.create_item(item)  # read afresh: the file may have changed or gone
            except Exception as e:  # noqa: BLE001 - an extension's page must not break the route
                log.warning("extra networks: reading %s of page %s failed: %s", item, page, e)
        return get_metadata(found.name if found else page, item)

    before = {id(route) for route in app.router.routes}
    app.add_api_route("/sd_extra_networks/thumb", thumb, methods=["GET"])
    app.add_api_route("/sd_extra_networks/metadata", metadata, methods=["GET"])
    credentials = getattr(app.state, "serena_credentials", None)
    if credentials:
        for route in app.router.routes:
            if id(route) not in before:
                route.app = PageOrApiAuthGate(route.app, app, credentials)


# --- the panel ------------------------------------------------------------------------------------------------------
CARDS_JS = """
element.addEventListener('click', (event) => {
    const card = event.target.closest('.card');
    if (!card || !element.contains(card)) return;
    const button = event.target.closest('[data-action]');
    event.stopPropagation();
    const action = button ? button.dataset.action : 'add';
    trigger('click', {page: card.dataset.page, name: card.dataset.name, action: action});
});
"""
"""Card clicks become the HTML component's click event, carrying the page, the item and the action."""

CARDS_CSS = """
.extra-network-cards { display: flex; flex-wrap: wrap; gap: 0.6em; }
.card { position: relative; width: 12em; height: 16em; border-radius: 0.4em; overflow: hidden; cursor: pointer;
        background: var(--neutral-700, #444); box-shadow: 0 0 4px rgba(0,0,0,0.4); }
.card .preview { width: 100%; height: 100%; object-fit: cover; }
.card .actions { position: absolute; bottom: 0; left: 0; right: 0; padding: 0.5em;
                 background: rgba(0,0,0,0.55); }
.card .name { display: block; font-weight: bold; word-break: break-word; color: white !important; }
.card .description { display: block; font-size: 0.85em; max-height: 4em; overflow: hidden; color: #ddd !important; }
.card .button-row { position: absolute; top: 0.3em; right: 0.3em; display: none; }
.card:hover .button-row { display: block; }
.card .card-button { color: white; font-size: 1.3em; text-shadow: 0 0 3px black; }
.nocards { padding: 1em; opacity: 0.8; }
"""


@dataclass
class PanelUi:
    """What :func:`create_ui` built for one generation tab (A1111's ExtraNetworksUi, in short)."""

    tabname: str
    button: Any = None
    panel: Any = None
    pages: list = field(default_factory=list)
    cards: dict = field(default_factory=dict)
    """Page tab name → its cards gr.HTML."""
    controls: dict = field(default_factory=dict)
    """Page tab name → (search, sort, direction) components."""
    editor: Any = None


def render_page(page_name: str, tabname: str, search: str = "", sort: str = "Name", direction: str = "Ascending",
                refresh: bool = False) -> str:
    """The cards of one page, read again (after `page.refresh()` when `refresh`)."""
    page = find_page(page_name)
    if page is None:
        return ""
    if refresh:
        try:
            page.refresh()
        except Exception as e:  # noqa: BLE001 - an extension's page must not break the panel
            logging.getLogger("serena.ui").warning("extra networks: refreshing %s failed: %s", page.title, e)
    # controls in a sub-tab the page has not shown yet arrive as None
    return page.create_html(tabname, search=search or "", sort=sort or "Name", descending=direction == "Descending")


def item_of(page_name: str, name: str) -> tuple["ExtraNetworksPage | None", dict | None]:
    """The page and the item named `name` on it (listed again when not known yet)."""
    page = find_page(page_name)
    if page is None:
        return None, None
    if name not in page.items:
        page.items = {i["name"]: i for i in page.list_items() if "name" in i}
    return page, page.items.get(name)


def card_clicked(page_name: str, name: str, prompt: str) -> str:
    """The prompt after a click on a card (its tag toggled); a checkpoint card loads the model instead.

    Raises:
        LookupError: the card's item is gone (the file was removed).
    """
    page, item = item_of(page_name, name)
    if page is None or item is None:
        raise LookupError(f"{name!r} is no longer listed; press 🔄 to refresh")
    if getattr(page, "selects_checkpoint", False):
        from modules import ui_handlers
        ui_handlers.change_checkpoint(item.get("title") or name)
        return prompt
    return toggle_in_prompt(prompt, item_prompt_text(item))


def editor_values(page_name: str, name: str) -> tuple[str, str, float, str]:
    """The item's user metadata as the editor shows it: description, activation text, weight, notes."""
    page, item = item_of(page_name, name)
    if item is None:
        raise LookupError(f"{name!r} is no longer listed; press 🔄 to refresh")
    page.read_user_metadata(item, use_cache=False)
    meta = item.get("user_metadata") or {}
    try:
        weight = float(meta.get("preferred weight") or 0)
    except (TypeError, ValueError):
        weight = 0.0
    return (str(meta.get("description") or ""), str(meta.get("activation text") or ""), weight,
            str(meta.get("notes") or ""))


def save_editor(target: dict | None, description: str, activation: str, weight: float, notes: str) -> str:
    """Write the editor's fields to the target item's JSON; the status line shown.

    Raises:
        LookupError: no item is being edited, or it is gone.
    """
    if not target:
        raise LookupError("choose a card's 🛠 first")
    page, item = item_of(target.get("page", ""), target.get("name", ""))
    if item is None:
        raise LookupError(f"{target.get('name')!r} is no longer listed; press 🔄 to refresh")
    save_user_metadata(item, {"description": description, "activation text": activation,
                              "preferred weight": weight, "notes": notes})
    return f"Saved {os.path.basename(user_metadata_path(item))}"


def create_ui(tab: Any) -> PanelUi:
    """The 🎴 button and the (hidden until clicked) extra-networks panel of a generation tab.

    Args:
        tab: `modules.ui.GenerationTab` (reads `kind`, `fields["prompt"]`, `fields["negative_prompt"]`).
    """
    import gradio as gr

    from modules.ui_components import ToolButton
    tabname = tab.kind
    prompt = tab.fields["prompt"]
    ui = PanelUi(tabname=tabname, pages=list(ensure_pages()))
    log = logging.getLogger("serena.ui")
    ui.button = ToolButton("🎴", elem_id=f"{tabname}_extra_networks", tooltip="Show/hide extra networks")
    visible = gr.State(False)
    # "hidden", not False: the sub-tabs must be mounted while hidden, or Gradio draws a tab twice
    with gr.Column(visible="hidden", elem_id=f"{tabname}_extra_networks_panel") as ui.panel:
        with gr.Tabs(elem_id=f"{tabname}_extra_tabs"):
            for page in ui.pages:
                tid = page.extra_networks_tabname
                with gr.Tab(page.title, id=tid, elem_id=f"{tabname}_{tid}"):
                    with gr.Row():
                        search = gr.Textbox(placeholder="Search", show_label=False, scale=4, container=False,
                                            elem_id=f"{tabname}_{tid}_extra_search")
                        sort = gr.Dropdown(SORT_CHOICES, value="Name", show_label=False, scale=1, container=False,
                                           elem_id=f"{tabname}_{tid}_extra_sort")
                        direction = gr.Radio(["Ascending", "Descending"], value="Ascending", show_label=False,
                                             container=False, scale=1, elem_id=f"{tabname}_{tid}_extra_sort_dir")
                        refresh = ToolButton("🔄", elem_id=f"{tabname}_{tid}_extra_refresh")
                    cards = gr.HTML("", js_on_load=CARDS_JS, css_template=CARDS_CSS,
                                    elem_id=f"{tabname}_{tid}_cards_html")
                ui.cards[tid], ui.controls[tid] = cards, (search, sort, direction)
                listing = [search, sort, direction]
                for event in (search.change, sort.change, direction.change):
                    event(functools.partial(render_page, tid, tabname), inputs=listing, outputs=cards,
                          show_progress="hidden")
                refresh.click(functools.partial(render_page, tid, tabname, refresh=True), inputs=listing,
                              outputs=cards)
        with gr.Column(visible=False, elem_id=f"{tabname}_extra_networks_editor") as editor:
            target = gr.State(None)
            title = gr.Markdown("")
            description = gr.Textbox(label="Description", lines=2, elem_id=f"{tabname}_edit_user_metadata_description")
            activation = gr.Textbox(label="Activation text", elem_id=f"{tabname}_edit_user_metadata_activation_text")
            weight = gr.Slider(0.0, 2.0, value=0.0, step=0.01, label="Preferred weight",
                               elem_id=f"{tabname}_edit_user_metadata_preferred_weight")
            notes = gr.Textbox(label="Notes", lines=3, elem_id=f"{tabname}_edit_user_metadata_notes")
            with gr.Row():
                save = gr.Button("Save", variant="primary", elem_id=f"{tabname}_edit_user_metadata_save")
                close = gr.Button("Cancel", elem_id=f"{tabname}_edit_user_metadata_cancel")
            status = gr.HTML("")
        ui.editor = editor

    def toggle(shown: bool, *controls: Any) -> list:
        shown = not shown
        rendered = [gr.update()] * len(ui.pages)
        if shown:
            rendered = [render_page(p.extra_networks_tabname, tabname, *controls[3 * i:3 * i + 3], refresh=True)
                        for i, p in enumerate(ui.pages)]
        return [shown, gr.update(visible=True if shown else "hidden"), *rendered]

    all_controls = [c for p in ui.pages for c in ui.controls[p.extra_networks_tabname]]
    ui.button.click(toggle, inputs=[visible, *all_controls],
                    outputs=[visible, ui.panel, *(ui.cards[p.extra_networks_tabname] for p in ui.pages)])

    def clicked(prompt_text: str, evt: gr.EventData) -> list:
        data = getattr(evt, "_data", None) or {}
        page_name, name, action = str(data.get("page", "")), str(data.get("name", "")), data.get("action", "add")
        keep = [gr.update()] * 7
        try:
            if action == "edit":
                values = editor_values(page_name, name)
                return [prompt_text, {"page": page_name, "name": name}, f"**{name}**", *values,
                        gr.update(visible=True)]
            return [card_clicked(page_name, name, prompt_text), *keep]
        except LookupError as e:
            log.warning("extra networks: %s", e)
            gr.Warning(str(e))
            return [prompt_text, *keep]

    clicked.__annotations__["evt"] = gr.EventData  # resolved here: annotations are strings in this module
    for cards in ui.cards.values():
        cards.click(clicked, inputs=prompt, outputs=[prompt, target, title, description, activation, weight, notes,
                                                     editor], show_progress="hidden")

    def saved(target_value: Any, *values: Any) -> str:
        try:
            return html.escape(save_editor(target_value, *values))
        except (LookupError, OSError) as e:
            log.warning("extra networks: metadata not saved: %s", e)
            gr.Warning(f"Metadata not saved: {e}")
            return ""

    save.click(saved, inputs=[target, description, activation, weight, notes], outputs=status)
    close.click(lambda: gr.update(visible=False), outputs=editor)
    return ui
