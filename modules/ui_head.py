"""What the page loads in its <head>, and the one route that serves those files.

A1111 puts its own `javascript/*.js`, each active extension's `javascript/*.js` / `*.mjs` and
`style.css`, the root `style.css` / `user.css` and the chosen localization into the page. Serena does
the same: :func:`head_files` lists the files (in that order), :func:`head_html` turns them into tags
whose URLs are `/serena-asset/<n>/<name>?<mtime>`, and :func:`add_routes` serves exactly the listed
files (anything else, `../` included, is a 404) behind the API's credentials or a Gradio login.
"""
from __future__ import annotations

import glob
import html
import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable

from modules import paths
from modules.ui_gate import PageOrApiAuthGate

log = logging.getLogger("serena.ui")

ASSET_ROUTE = "/serena-asset"
FIRST_SCRIPT = "ui.js"
"""Serena's `javascript/ui.js` (gradioApp, onUiLoaded, opts …) loads before every other script."""
MEDIA_TYPES = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".json": "application/json",
               ".mp3": "audio/mpeg"}
NOTIFICATION = "notification.mp3"


@dataclass(frozen=True)
class HeadFile:
    """One file the page loads: its path on disk and the kind of tag that loads it."""

    path: str
    kind: str  # "script", "module", "style" or "audio" (the notification sound)


def _sorted_files(folder: str, *patterns: str) -> list[str]:
    found: list[str] = []
    for pattern in patterns:
        found += glob.glob(os.path.join(folder, pattern))
    return sorted(found, key=lambda p: os.path.basename(p).lower())


def _script_kind(path: str) -> str:
    return "module" if path.endswith(".mjs") else "script"


def active_extension_dirs() -> list[str]:
    """Folders of the active extensions (none if the extension list cannot be read)."""
    try:
        from modules import extensions
        return [ext.path for ext in extensions.active()]
    except Exception:  # noqa: BLE001 - the page still loads without extensions' files
        log.exception("listing extensions for the page's <head> failed")
        return []


def head_files(root: str | None = None, extension_dirs: Iterable[str] | None = None,
               data_path: str | None = None) -> list[HeadFile]:
    """The files the page loads, in A1111's order: Serena's `javascript/`, each extension's
    `javascript/*.js|*.mjs`, each extension's `style.css`, then the root `style.css` and `user.css`
    (the data folder's `user.css` wins over the install's)."""
    root = root or paths.script_path
    extension_dirs = active_extension_dirs() if extension_dirs is None else list(extension_dirs)
    own = _sorted_files(os.path.join(root, "javascript"), "*.js", "*.mjs")
    own.sort(key=lambda p: os.path.basename(p) != FIRST_SCRIPT)  # the helpers every other script uses
    files = [HeadFile(p, _script_kind(p)) for p in own]
    for folder in extension_dirs:
        scripts = _sorted_files(os.path.join(folder, "javascript"), "*.js", "*.mjs")
        files += [HeadFile(p, _script_kind(p)) for p in scripts]
    for folder in extension_dirs:
        css = os.path.join(folder, "style.css")
        if os.path.isfile(css):
            files.append(HeadFile(css, "style"))
    if os.path.isfile(os.path.join(root, "style.css")):
        files.append(HeadFile(os.path.join(root, "style.css"), "style"))
    data_path = data_path or _data_path()
    for folder in dict.fromkeys([data_path, root]):
        user_css = os.path.join(folder, "user.css") if folder else ""
        if user_css and os.path.isfile(user_css):
            files.append(HeadFile(user_css, "style"))
            break
    sound = notification_file(root, data_path)
    if sound:
        files.append(HeadFile(sound, "audio"))
    return files


def notification_file(root: str, data_path: str | None) -> str | None:
    """`notification.mp3` of the data folder (else of the install) while the option
    `notification_audio` is on: the page plays it when a job's images arrive (A1111)."""
    if not _opt("notification_audio", True):
        return None
    for folder in dict.fromkeys([data_path, root]):
        path = os.path.join(folder, NOTIFICATION) if folder else ""
        if path and os.path.isfile(path):
            return path
    return None


def _data_path() -> str | None:
    from modules import shared
    return getattr(shared.data_paths, "data_path", None)


def _opt(name: str, default: Any) -> Any:
    from modules import shared
    try:
        return getattr(shared.opts, name)
    except (AttributeError, KeyError):
        return default


# --- localization ---------------------------------------------------------------------------------
def localization_files(extension_dirs: Iterable[str] | None = None, data_path: str | None = None) -> dict[str, str]:
    """Localization name → JSON file: `<data>/localizations/*.json`, then each active extension's
    `localizations/*.json` (a later file of the same name wins, as in A1111)."""
    extension_dirs = active_extension_dirs() if extension_dirs is None else list(extension_dirs)
    folders = [os.path.join(data_path or _data_path() or paths.script_path, "localizations")]
    folders += [os.path.join(d, "localizations") for d in extension_dirs]
    found: dict[str, str] = {}
    for folder in folders:
        for path in _sorted_files(folder, "*.json"):
            found[os.path.splitext(os.path.basename(path))[0]] = path
    return found


def localization_dict(name: str | None, files: dict[str, str]) -> dict[str, str]:
    """The translations of localization `name` ({} for "None", an unknown name, or a bad file)."""
    path = files.get(name or "")
    if not path:
        return {}
    try:
        with open(path, encoding="utf8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        log.warning("localization %r not loaded: %s", name, e)
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _script_json(data: Any) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


# --- tags --------------------------------------------------------------------------------------------
def asset_url(index: int, file: HeadFile) -> str:
    try:
        stamp = int(os.path.getmtime(file.path))
    except OSError:
        stamp = 0
    return f"{ASSET_ROUTE}/{index}/{os.path.basename(file.path)}?{stamp}"


def inline_tag(file: HeadFile) -> str:
    """The file's content inside its tag (used while no app serves the asset route; the sound
    needs the route)."""
    if file.kind == "audio":
        return ""
    try:
        with open(file.path, encoding="utf8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        log.warning("page asset %s not loaded: %s", file.path, e)
        return ""
    if file.kind == "style":
        return "<style>" + text.replace("</style", "<\\/style") + "</style>"
    kind = "module" if file.kind == "module" else "text/javascript"
    return f'<script type="{kind}">' + text.replace("</script", "<\\/script") + "</script>"


def tag_for(index: int, file: HeadFile) -> str:
    if file.kind == "audio":  # javascript/notification.js plays it
        return f"<script type=\"text/javascript\">window.serena_notification_url = {_script_json(asset_url(index, file))};</script>"
    url = html.escape(asset_url(index, file), quote=True)
    if file.kind == "style":
        return f'<link rel="stylesheet" property="stylesheet" href="{url}">'
    if file.kind == "module":
        return f'<script type="module" src="{url}"></script>'
    return f'<script type="text/javascript" src="{url}"></script>'


_routes_added = False
"""Whether :func:`add_routes` ran; until then :func:`head_html` inlines the files' contents."""
_served: list[HeadFile] = []
"""What the last :func:`head_html` listed; the asset route serves these and nothing else."""


def head_html(files: list[HeadFile] | None = None, translations: dict[str, str] | None = None,
              options: dict[str, Any] | None = None) -> str:
    """Script and style tags for the page, after two inline scripts: `window.localization` (the
    option `localization`'s translations) and `window.serena_opts` (the options' current values,
    which `javascript/ui.js` exposes as `opts`)."""
    global _served
    files = head_files() if files is None else files
    if translations is None:
        translations = localization_dict(_opt("localization", "None"), localization_files())
    options = _options_data() if options is None else options
    _served = list(files)
    tags = [f"<script type=\"text/javascript\">window.localization = {_script_json(translations)};"
            f" window.serena_opts = {_script_json(options)};</script>"]
    tags += [tag_for(i, f) if _routes_added else inline_tag(f) for i, f in enumerate(files)]
    return "\n".join(tags)


def _options_data() -> dict[str, Any]:
    """The options' current values that JSON can carry."""
    from modules import shared
    data = {}
    source = getattr(shared.opts, "data", None)
    if isinstance(source, dict):
        for key, value in source.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError):
                continue
            data[key] = value
    return data


# --- route ------------------------------------------------------------------------------------------
def served_file(index: str, name: str) -> HeadFile | None:
    """The listed file at position `index` if its name is `name`, else None (no path is built from
    the request, so nothing outside the list can be reached)."""
    if not index.isdigit() or int(index) >= len(_served):
        return None
    file = _served[int(index)]
    return file if os.path.basename(file.path) == name and os.path.isfile(file.path) else None


def add_routes(app: Any) -> None:
    """Add `GET /serena-asset/{index}/{name}` to `app` (call before the Gradio mount).

    With credentials set (`app.state.serena_credentials`), a request needs the API's HTTP Basic
    credentials or a Gradio login cookie of the UI mounted on `app`."""
    global _routes_added
    from fastapi.responses import FileResponse, JSONResponse

    async def asset(index: str, name: str) -> Any:
        file = served_file(index, name)
        if file is None:
            return JSONResponse({"error": "Not Found", "detail": "no such page asset"}, status_code=404)
        media = MEDIA_TYPES.get(os.path.splitext(file.path)[1], "application/octet-stream")
        return FileResponse(file.path, media_type=media, headers={"Cache-Control": "no-cache"})

    app.add_api_route(ASSET_ROUTE + "/{index}/{name}", asset, methods=["GET"], include_in_schema=False)
    route = app.router.routes[-1]
    if getattr(app.state, "serena_credentials", None):
        route.app = PageOrApiAuthGate(route.app, app, app.state.serena_credentials)
    _routes_added = True
