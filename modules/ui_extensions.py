"""The Extensions tab (A1111's layout and elem_ids): Installed, Available, Install from URL.

Handlers are plain functions of the tab's values returning HTML, so they are tested without a
browser; the git and index work lives in `modules.extensions`. Every refusal or failure (non-local
server, bad URL, existing folder, unreachable index) is one short HTML line in the tab and one log
line, never a traceback.

"Apply and restart UI" saves `disabled_extensions` / `disable_all_extensions`, then the serving loop
(`webui.UiServer`, see `modules.ui_restart`) rebuilds the app with extensions re-discovered and
scripts reloaded, so a newly installed extension's controls are in the new page; the page reloads
when the new app answers. Without a serving loop, extensions and scripts are reloaded in place.
"""
from __future__ import annotations

import html
import json
import logging
import time
from typing import Any, Callable

import gradio as gr

from modules import extensions, shared, ui_restart

log = logging.getLogger("serena.ui.extensions")

DEFAULT_INDEX_URL = ("https://raw.githubusercontent.com/AUTOMATIC1111/stable-diffusion-webui-extensions/"
                     "master/index.json")
DISABLE_ALL_CHOICES = ["none", "extra", "all"]
RESTART_NOTE = ("Apply and restart UI saves the choices and rebuilds the UI: extensions and scripts are reloaded "
                "(a running job is interrupted) and this page reloads when the server answers again.")

available_index: dict = {"extensions": []}
"""The index last loaded in the Available tab (A1111 keeps it module-wide too)."""


# --- messages -----------------------------------------------------------------------------------------------
def message_html(text: str, *, error: bool = False) -> str:
    """One line of text for the tab's result area; errors are also logged once."""
    if error:
        log.warning("Extensions: %s", text)
    css = "serena-error" if error else "serena-info"
    return f'<p class="{css}">{html.escape(text)}</p>'


def _parse_list(text: str | None, what: str) -> list[str]:
    """The JSON list of names the page's script sends (empty text = empty list)."""
    if not text:
        return []
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        value = None
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise extensions.ExtensionError(f"wrong {what} data: {text!r}")
    return value


# --- Installed ----------------------------------------------------------------------------------------------
def _date_text(commit_date: int | None) -> str:
    return time.asctime(time.gmtime(commit_date)) if commit_date else ""


def _remote_cell(ext: extensions.Extension) -> str:
    if ext.is_builtin:
        return "built-in"
    if not ext.remote:
        return ""
    remote = html.escape(ext.remote)
    if ext.remote.startswith(("https://", "http://")):
        return f'<a href="{remote}" target="_blank">{remote}</a>'
    return remote


def _update_cell(ext: extensions.Extension) -> str:
    status = html.escape(ext.status or "")
    if ext.can_update:
        name = html.escape(ext.name, quote=True)
        return f'<label><input type="checkbox" name="update_{name}" checked="checked">{status}</label>'
    return status


def extension_table() -> str:
    """The Installed table (`#extensions`): enable checkbox (`enable_<name>`), URL, branch, version,
    date and update status (`update_<name>` checkbox when behind), built-ins first."""
    mode = shared.opts.disable_all_extensions
    rows = []
    for ext in extensions.extensions:
        ext.read_info_from_repo()
        name = html.escape(ext.name, quote=True)
        checked = ' checked="checked"' if ext.enabled else ""
        dimmed = mode == "all" or (mode == "extra" and not ext.is_builtin)
        style = ' style="color: var(--primary-400)"' if dimmed else ""
        status_class = ' class="extension_status"' if ext.remote is not None else ""
        rows.append(
            f'<tr><td><label{style}><input type="checkbox" name="enable_{name}"{checked}>{html.escape(ext.name)}'
            f'</label></td><td>{_remote_cell(ext)}</td><td>{html.escape(ext.branch or "")}</td>'
            f'<td>{html.escape(ext.version or "")}</td><td>{_date_text(ext.commit_date)}</td>'
            f'<td{status_class}>{_update_cell(ext)}</td></tr>')
    body = "".join(rows) or '<tr><td colspan="6">No extensions installed.</td></tr>'
    return (f'<!-- {time.time()} --><table id="extensions"><thead><tr><th>Extension</th><th>URL</th>'
            f'<th>Branch</th><th>Version</th><th>Date</th><th>Update</th></tr></thead><tbody>{body}</tbody></table>')


def disable_all_note(mode: str | None = None) -> str:
    """A1111's reminder shown while "Disable all extensions" is not "none"."""
    mode = mode if mode is not None else shared.opts.disable_all_extensions
    if mode in (None, "", "none"):
        return ""
    return ('<span style="color: var(--primary-400);">"Disable all extensions" was set, change it to '
            '"none" to load all extensions again</span>')


def _reload_extensions() -> None:
    """`webui.load_extensions()` under the generation queue lock (no job sees half-loaded scripts),
    in a plain thread: inside a Gradio event, components that scripts' `ui()` build would be taken
    for the event's own render, and the runners' throwaway Blocks could not be built."""
    import threading

    import webui
    from modules import call_queue
    failure: list[BaseException] = []

    def reload() -> None:
        try:
            call_queue.wrap_queued_call(webui.load_extensions)()
        except BaseException as e:  # reported to the caller's thread below
            failure.append(e)

    worker = threading.Thread(target=reload, name="serena-reload-extensions")
    worker.start()
    worker.join()
    if failure:
        raise failure[0]


def _restart_ui() -> None:
    """Rebuild the UI in the serving loop (which reloads extensions and scripts), else reload
    extensions and scripts in place."""
    ui_restart.request_restart(reload_in_place=_reload_extensions)


def apply_and_restart(disabled_json: str, update_json: str, disable_all: str,
                      reload: Callable[[], None] | None = None) -> str:
    """Update the extensions marked for update, save `disabled_extensions` and
    `disable_all_extensions` to config.json, then re-discover extensions and reload scripts. A
    refusal raises `gr.Error` (the page then stays as it is instead of reloading)."""
    try:
        extensions.check_access()
        disabled = _parse_list(disabled_json, "disabled list")
        update = set(_parse_list(update_json, "update list"))
        if disable_all not in DISABLE_ALL_CHOICES:
            raise extensions.ExtensionError(f"Unknown \"Disable all extensions\" value: {disable_all!r}")
    except extensions.ExtensionError as e:
        message_html(str(e), error=True)
        raise gr.Error(str(e)) from None
    failed = []
    for ext in extensions.extensions:
        if ext.name in update:
            try:
                extensions.fetch_and_reset_hard(ext)
            except Exception as e:
                failed.append(str(e))
                message_html(str(e), error=True)
    shared.opts.disabled_extensions = disabled
    shared.opts.disable_all_extensions = disable_all
    shared.opts.save(shared.config_filename)
    (reload or _restart_ui)()
    log.info("Extensions: applied (disabled: %s, disable all: %s); extensions and scripts reloaded",
             disabled, disable_all)
    return message_html("; ".join(failed), error=False) if failed else ""


def check_for_updates(disabled_json: str) -> tuple[str, str]:
    """`git fetch` each enabled extension with a remote and mark those behind; (table, message)."""
    try:
        extensions.check_access()
        disabled = set(_parse_list(disabled_json, "disabled list"))
    except extensions.ExtensionError as e:
        return extension_table(), message_html(str(e), error=True)
    checked = 0
    for ext in extensions.extensions:
        ext.read_info_from_repo()
        if ext.remote is None or ext.name in disabled:
            continue
        extensions.check_updates_for(ext)
        checked += 1
    behind = [ext.name for ext in extensions.extensions if ext.can_update]
    text = f"Checked {checked} extension(s); " + (f"updates for: {', '.join(behind)}." if behind else "all up to date.")
    return extension_table(), message_html(text)


# --- Install from URL ---------------------------------------------------------------------------------------
def install_from_url(dirname: str, url: str, branch: str) -> tuple[str, str, str]:
    """Install from the URL fields; (URL field value, Installed table, message). On success the URL
    field is cleared; on a refusal it keeps what was typed."""
    try:
        ext = extensions.install_from_url(url, branch or None, dirname or None)
    except extensions.ExtensionError as e:
        return url, extension_table(), message_html(str(e), error=True)
    failed = extensions.failed_installs.get(ext.path)
    text = f"Installed into {ext.path}. Use the Installed tab to apply and restart."
    if failed:
        text += " Its install.py failed (see the server log); the extension is inactive until that is fixed."
    return "", extension_table(), message_html(text)


# --- Available ----------------------------------------------------------------------------------------------
def _installed_urls() -> dict[str, str]:
    urls = {}
    for ext in extensions.extensions:
        ext.read_info_from_repo()
        if ext.remote:
            urls[extensions.normalize_git_url(ext.remote)] = ext.name
    return urls


def available_table(index: dict, installed: dict[str, str]) -> str:
    """The Available table (`#available_extensions`): name with tags, description with its added
    date, and an Install button (disabled "Installed" for one already there)."""
    tag_titles = index.get("tags") if isinstance(index.get("tags"), dict) else {}
    rows = []
    for entry in index.get("extensions", []):
        if not isinstance(entry, dict) or not entry.get("url"):
            continue
        url, name = str(entry["url"]), str(entry.get("name") or entry["url"])
        existing = installed.get(extensions.normalize_git_url(url))
        tags = [str(t) for t in entry.get("tags") or []] + (["installed"] if existing else [])
        tags_html = ", ".join(f'<span class="extension-tag" title="{html.escape(str(tag_titles.get(t, "")))}">'
                              f'{html.escape(t)}</span>' for t in tags)
        button = (f'<button class="lg secondary gradio-button custom-button" data-ext-url="{html.escape(url)}"'
                  f'{" disabled" if existing else ""}>{"Installed" if existing else "Install"}</button>')
        link = (f'<a href="{html.escape(url)}" target="_blank">{html.escape(name)}</a>'
                if url.startswith(("https://", "http://")) else html.escape(name))
        rows.append(f'<tr><td>{link}<br>{tags_html}</td><td>{html.escape(str(entry.get("description", "")))}'
                    f'<p class="info"><span class="date_added">Added: {html.escape(str(entry.get("added", "unknown")))}'
                    f'</span></p></td><td>{button}</td></tr>')
    body = "".join(rows) or '<tr><td colspan="3">The index lists no extensions.</td></tr>'
    return (f'<!-- {time.time()} --><table id="available_extensions"><thead><tr><th>Extension</th>'
            f'<th>Description</th><th>Action</th></tr></thead><tbody>{body}</tbody></table>')


def load_available(index_url: str) -> tuple[str, str]:
    """"Load from:" — read the index at `index_url`; (Available table, message)."""
    global available_index
    try:
        extensions.check_access()
        available_index = extensions.read_index(index_url)
    except extensions.ExtensionError as e:
        return "", message_html(str(e), error=True)
    count = len(available_index["extensions"])
    return available_table(available_index, _installed_urls()), message_html(f"Loaded {count} extension(s) from {index_url}.")


def install_from_index(url: str) -> tuple[str, str, str]:
    """An Available entry's Install button; (Available table, Installed table, message)."""
    _, table, message = install_from_url("", url, "")
    return available_table(available_index, _installed_urls()), table, message


# --- page ---------------------------------------------------------------------------------------------------
_COLLECT_JS = """(disabled, update, disableAll) => {
  const off = [], upd = [];
  document.querySelectorAll('#extensions input[type="checkbox"]').forEach((box) => {
    if (box.name.startsWith('enable_') && !box.checked) off.push(box.name.slice(7));
    if (box.name.startsWith('update_') && box.checked) upd.push(box.name.slice(7));
  });
  return [JSON.stringify(off), JSON.stringify(upd), disableAll];
}"""

_CHECK_JS = """(disabled) => {
  const off = [];
  document.querySelectorAll('#extensions input[type="checkbox"]').forEach((box) => {
    if (box.name.startsWith('enable_') && !box.checked) off.push(box.name.slice(7));
  });
  return [JSON.stringify(off)];
}"""

_AVAILABLE_ON_LOAD = """element.addEventListener('click', (event) => {
  const button = event.target.closest('button[data-ext-url]');
  if (!button || button.disabled) return;
  window.serenaExtensionToInstall = button.dataset.extUrl;
  button.disabled = true;
  button.textContent = 'Installing…';
  document.querySelector('#install_extension_button').click();
});"""


def create_extensions_tab() -> None:
    """Installed / Available / Install from URL, with A1111's elem_ids."""
    refused = extensions.access_refused()
    with gr.Tabs(elem_id="tabs_extensions"):
        with gr.Tab("Installed", id="installed"):
            with gr.Row(elem_id="extensions_installed_top"):
                apply = gr.Button("Apply and restart UI", variant="primary", elem_id="extensions_apply")
                check = gr.Button("Check for updates", elem_id="extensions_check")
                disable_all = gr.Radio(DISABLE_ALL_CHOICES, value=lambda: shared.opts.disable_all_extensions,
                                       label="Disable all extensions", elem_id="extensions_disable_all")
                disabled_list = gr.Textbox(elem_id="extensions_disabled_list", visible="hidden", container=False)
                update_list = gr.Textbox(elem_id="extensions_update_list", visible="hidden", container=False)
            gr.HTML(f'<p class="serena-note">{html.escape(RESTART_NOTE)}</p>'
                    + (message_html(refused) if refused else ""))
            info = gr.HTML(disable_all_note, elem_id="extensions_info")  # callables: re-read at each page load
            table = gr.HTML(extension_table, elem_id="extensions_installed_table")
        with gr.Tab("Available", id="available"):
            with gr.Row():
                load = gr.Button("Load from:", variant="primary", scale=0, elem_id="extensions_load_available")
                index_url = gr.Textbox(DEFAULT_INDEX_URL, label="Extension index URL", container=False,
                                       elem_id="extensions_index_url")
                to_install = gr.Textbox(elem_id="extension_to_install", visible="hidden", container=False)
                install_one = gr.Button("Install", elem_id="install_extension_button", visible="hidden")
            available_result = gr.HTML(elem_id="extensions_available_result")
            available = gr.HTML(elem_id="extensions_available_table", js_on_load=_AVAILABLE_ON_LOAD)
        with gr.Tab("Install from URL", id="install_from_url"):
            url = gr.Textbox(label="URL for extension's git repository", elem_id="extensions_install_url")
            branch = gr.Textbox(label="Specific branch name", placeholder="Leave empty for default main branch",
                                elem_id="extensions_install_branch")
            dirname = gr.Textbox(label="Local directory name", placeholder="Leave empty for auto",
                                 elem_id="extensions_install_dirname")
            install = gr.Button("Install", variant="primary", elem_id="extensions_install_button")
            install_result = gr.HTML(elem_id="extension_install_result")

    _wire(locals())


def _wire(c: dict[str, Any]) -> None:
    """Events of the tab's components (`c`: the builder's locals)."""
    c["apply"].click(apply_and_restart, inputs=[c["disabled_list"], c["update_list"], c["disable_all"]],
                     outputs=c["info"], js=_COLLECT_JS, show_progress="full").success(
        None, js=ui_restart.page_reload_js())
    c["check"].click(check_for_updates, inputs=c["disabled_list"], outputs=[c["table"], c["info"]],
                     js=_CHECK_JS, show_progress="full")
    c["install"].click(install_from_url, inputs=[c["dirname"], c["url"], c["branch"]],
                       outputs=[c["url"], c["table"], c["install_result"]], show_progress="full")
    c["load"].click(load_available, inputs=c["index_url"], outputs=[c["available"], c["available_result"]],
                    show_progress="full")
    c["install_one"].click(install_from_index, inputs=c["to_install"],
                           outputs=[c["available"], c["table"], c["available_result"]],
                           js="(url) => [window.serenaExtensionToInstall || url]", show_progress="full")
