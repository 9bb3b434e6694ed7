"""The Settings tab and the quicksettings row (A1111's `ui_settings`).

Every option of `shared.opts.data_labels` gets one component with elem_id `setting_<key>`, in its
section's page. "Apply settings" (`settings_submit`) validates each changed value with the API's
checks, sets it (hooks run; a checkpoint/VAE switch waits for the queue), saves config.json and
reports "N settings changed: …" in `settings_result`. "Reload UI" has the server rebuild the app
(`modules.ui_restart`; options marked "requires Reload UI" then take effect) and reloads the page.
"""
from __future__ import annotations

import contextlib
import html
import logging
import re
from typing import Any, Callable

import gradio as gr

from modules import errors, options, shared, ui_restart

log = logging.getLogger(__name__)

# A1111's section ids and titles (settings pages), in A1111's page order.
SECTION_TITLES: dict[str, str] = {
    "saving-images": "Saving images/grids",
    "saving-paths": "Paths for saving",
    "saving-to-dirs": "Saving to a directory",
    "upscaling": "Upscaling",
    "face-restoration": "Face restoration",
    "system": "System",
    "api": "API",
    "training": "Training",
    "sd": "Stable Diffusion",
    "sdxl": "Stable Diffusion XL",
    "vae": "VAE",
    "img2img": "img2img",
    "optimizations": "Optimizations",
    "compatibility": "Compatibility",
    "interrogate": "Interrogate",
    "extra_networks": "Extra Networks",
    "ui": "User interface",
    "infotext": "Infotext",
    "sampler-params": "Sampler parameters",
    "postprocessing": "Postprocessing",
    "callbacks": "Callbacks",
}
# A1111 keeps these among its "Hidden options" (no page): the Extensions tab manages them.
HIDDEN_SECTIONS = frozenset({"extensions", "None"})  # "None": an extension's (None, title) section
# Options the checkpoint row above the tabs already shows (elem_id `setting_sd_model_checkpoint`).
ROW_OPTIONS = frozenset({"sd_model_checkpoint"})
# Options whose change loads a model: set between jobs, as the API does.
RELOADING_OPTIONS = frozenset({"sd_model_checkpoint", "sd_vae"})
ALL_PAGES = "Show all pages"
DEFAULTS_PAGE = "Defaults"


# --- option metadata ------------------------------------------------------------------------------------
def plain(text: str) -> str:
    """`text` without HTML tags and entities, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]*>", " ", text or "")).split())


def info_text(info: options.OptionInfo) -> str:
    """The explanation shown under an option's label: its comments, as plain text."""
    return " ".join(x for x in (plain(info.comment_before), plain(info.comment_after)) if x)


def needs_restart(info: options.OptionInfo) -> str | None:
    """"restart" or "Reload UI" when the option's change only takes effect after one, else None."""
    text = (info.comment_after or "").lower()
    if "requires restart" in text:
        return "restart"
    if "requires reload ui" in text:
        return "Reload UI"
    return None


def section_id(key: str) -> str:
    return shared.opts.section_of(key)


def section_title(sid: str, info: options.OptionInfo | None = None) -> str:
    """A section's page title: A1111's, else the title an extension gave in its section tuple."""
    if sid in SECTION_TITLES:
        return SECTION_TITLES[sid]
    section = getattr(info, "section", None)
    if isinstance(section, (tuple, list)) and len(section) > 1 and section[1]:
        return str(section[1])
    return sid.replace("-", " ").replace("_", " ").capitalize()


def shown_options() -> dict[str, list[str]]:
    """Section id → option keys shown in the Settings tab, in page order (A1111's first, then
    extensions' sections in the order they were added). Quicksettings and hidden options are left out."""
    quick = set(quicksettings_keys()) | ROW_OPTIONS
    pages: dict[str, list[str]] = {sid: [] for sid in SECTION_TITLES}
    for key, info in shared.opts.data_labels.items():
        sid = section_id(key)
        if key in quick or sid in HIDDEN_SECTIONS or sid is None or (not info.label and not info.do_not_save):
            continue
        pages.setdefault(sid, []).append(key)
    return {sid: keys for sid, keys in pages.items() if keys}


def read_only_reason(key: str) -> str | None:
    """Why option `key` cannot be changed from the page, or None."""
    if shared.opts.frozen:
        return "settings are frozen (--freeze-settings)"
    if key in options.RESTRICTED_OPTS and getattr(shared.cmd_opts, "hide_ui_dir_config", False):
        return "read-only (--hide-ui-dir-config)"
    return None


def _component_args(info: options.OptionInfo) -> dict[str, Any]:
    args = info.component_args
    if callable(args):
        args = args()
    return dict(args or {})


def component_value(key: str) -> Any:
    """Option `key`'s current value as its component shows it (None text as "")."""
    value = getattr(shared.opts, key)
    return "" if value is None and not isinstance(shared.opts.data_labels[key].default, (list, tuple)) else value


def _default_component(info: options.OptionInfo, args: dict[str, Any], value: Any) -> tuple[Callable, dict]:
    """A1111's choice by type when an option names no component: (constructor, extra kwargs)."""
    default = info.default
    if info.choices:
        choices = list(info.choices)
        if len(choices) <= 4 and all(len(str(c)) < 16 for c in choices):
            return gr.Radio, {"choices": choices, **args}
        return gr.Dropdown, {"choices": choices, **args}
    if isinstance(default, bool):
        return gr.Checkbox, args
    if isinstance(default, (int, float)):
        if info.minimum is not None and info.maximum is not None:
            step = 1 if isinstance(default, int) else 0.01
            return gr.Slider, {"minimum": info.minimum, "maximum": info.maximum, "step": step, **args}
        return gr.Number, {"precision": 0 if isinstance(default, int) else None, **args}
    if isinstance(default, (list, tuple)):
        choices = args.pop("choices", None)
        if callable(choices):
            choices = choices()
        choices = list(dict.fromkeys([*(choices or []), *(value or [])]))
        return gr.Dropdown, {"choices": choices, "multiselect": True, "allow_custom_value": True, **args}
    return gr.Textbox, {"lines": 1, "max_lines": 1, **args}


def create_setting_component(key: str, interactive: bool = True) -> gr.components.Component:
    """The component of option `key` (elem_id `setting_<key>`), its value the option's current one."""
    info = shared.opts.data_labels[key]
    value = component_value(key)
    reason = read_only_reason(key)
    note = info_text(info)
    if reason:
        note = f"{note} ({reason})".strip()
    common = {"label": info.label or key, "value": value, "elem_id": f"setting_{key}",
              "interactive": interactive and reason is None}
    args = _component_args(info)
    if info.component is not None:
        try:
            kwargs = {**args, **common}
            if note:
                kwargs.setdefault("info", note)
            if not isinstance(value, (list, tuple)) and "choices" in kwargs and "allow_custom_value" not in kwargs \
                    and isinstance(info.component, type) and issubclass(info.component, gr.Dropdown):
                kwargs["allow_custom_value"] = True
            return info.component(**kwargs)
        except Exception as e:  # an extension's component that Gradio 6 refuses: fall back by type
            errors.report(f"setting {key!r}: its component {info.component!r} failed ({e}); shown by type")
            args = {}
    make, kwargs = _default_component(info, args, value)
    kwargs = {**kwargs, **common}
    if make is gr.Dropdown and not kwargs.get("multiselect"):
        kwargs.setdefault("allow_custom_value", True)
    if note:
        kwargs["info"] = note
    try:
        return make(**kwargs)
    except Exception as e:
        errors.report(f"setting {key!r}: {e}; shown as text")
        return gr.Textbox(**{**common, "value": str(value)})


# --- applying ---------------------------------------------------------------------------------------------
def normalise(key: str, value: Any) -> Any:
    """A component's value as option `key` holds it: numbers to the option's type, "" to None for
    options whose default is None, tuples to lists."""
    info = shared.opts.data_labels[key]
    default = info.default
    if default is None and value == "":
        return None
    if isinstance(default, (int, float)) and not isinstance(default, bool) and isinstance(value, (int, float)) \
            and not isinstance(value, bool):
        if isinstance(default, int) and float(value).is_integer():
            return int(value)
        if isinstance(default, float):
            return float(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def apply_settings(values: dict[str, Any], *, config_file: str | None = None) -> tuple[list[str], list[str], list[str]]:
    """Set every option of `values` whose value differs from the current one.

    Each changed value is checked as the API checks it; a bad one is left out with a message.
    Checkpoint/VAE changes wait for the running job (the queue lock). config.json is saved when
    anything changed.

    Returns:
        (changed keys, error messages, restart/reload notes).
    """
    from modules import call_queue
    from modules.runtime.jobs import check_option_value
    opts = shared.opts
    changed: list[str] = []
    problems: list[str] = []
    notes: list[str] = []
    for key, raw in values.items():
        if key not in opts.data_labels or opts.data_labels[key].do_not_save:
            continue
        value = normalise(key, raw)
        if value == getattr(opts, key):
            continue
        info = opts.data_labels[key]
        try:
            reason = read_only_reason(key)
            if reason:
                raise errors.FrozenSettings(key) if opts.frozen else errors.ReadOnlyOption(
                    f"option {key!r} is {reason}", field=key)
            if not (value is None and info.default is None):
                check_option_value(key, value)
            with call_queue.queue_lock if key in RELOADING_OPTIONS else contextlib.nullcontext():
                if not opts.set(key, value):
                    continue
        except errors.SerenaError as e:
            problems.append(f"{info.label or key}: {e.message}")
            log.warning("setting %s not changed: %s", key, e.message)
            continue
        except Exception as e:  # an onchange hook that failed: the option keeps its old value
            problems.append(f"{info.label or key}: {e}")
            log.warning("setting %s not changed: %s", key, e)
            continue
        changed.append(key)
        when = needs_restart(info)
        if when:
            notes.append(f"{info.label or key} needs {when}")
    if changed:
        opts.save(config_file or shared.config_filename)
    return changed, problems, notes


def result_html(changed: list[str], problems: list[str], notes: list[str]) -> str:
    """`settings_result`: A1111's "N settings changed: a, b." line, then problems and notes."""
    lines = [f"{len(changed)} settings changed{': ' if changed else ''}{', '.join(changed)}."]
    lines += [f"<span class='serena-settings-error'>Not changed — {html.escape(p)}</span>" for p in problems]
    if notes:
        lines.append("Takes effect after: " + html.escape("; ".join(notes)) + ".")
    return "<br>".join(lines if problems or notes else [html.escape(lines[0])])


def run_settings(keys: list[str], *values: Any) -> list[Any]:
    """The Apply button: apply, then report and show every component's value as it now is."""
    if shared.opts.frozen:
        log.warning("settings not applied: settings are frozen (--freeze-settings)")
        result = "0 settings changed. Settings are frozen (--freeze-settings): nothing can be changed here."
        return [result, *(gr.update(value=component_value(k)) for k in keys)]
    changed, problems, notes = apply_settings(dict(zip(keys, values)))
    for p in problems:
        gr.Warning(p)
    return [result_html(changed, problems, notes), *(gr.update(value=component_value(k)) for k in keys)]


def apply_quicksetting(key: str, value: Any) -> Any:
    """A quicksettings control changed: apply and save now; on a problem, a toast and the old value."""
    changed, problems, notes = apply_settings({key: value})
    for p in problems:
        gr.Warning(p)
    for n in notes:
        gr.Info(n)
    return gr.update(value=component_value(key))


# --- search and pages ---------------------------------------------------------------------------------------
def matches(key: str, query: str) -> bool:
    """Does option `key` match the search text (its key, label, comments or section title)?"""
    query = query.strip().lower()
    if not query:
        return True
    info = shared.opts.data_labels[key]
    hay = " ".join([key, info.label or "", info_text(info), section_title(section_id(key), info)]).lower()
    return all(word in hay for word in query.split())


def page_visibility(page: str, query: str, pages: dict[str, list[str]], keys: list[str]) -> list[Any]:
    """Updates for [each section column…, defaults column, each setting…] for the selected page
    and search text: a search shows every page with a match and only the matching settings."""
    titles = {sid: section_title(sid, shared.opts.data_labels[k[0]]) for sid, k in pages.items()}
    query = (query or "").strip()
    if query:
        hits = {k for k in keys if matches(k, query)}
        sections = [gr.update(visible=any(k in hits for k in pages[sid])) for sid in pages]
        return [*sections, gr.update(visible=False), *(gr.update(visible=k in hits) for k in keys)]
    sections = [gr.update(visible=page == ALL_PAGES or page == titles[sid]) for sid in pages]
    return [*sections, gr.update(visible=page in (ALL_PAGES, DEFAULTS_PAGE)),
            *(gr.update(visible=True) for _ in keys)]


def changed_from_defaults_html() -> str:
    """The Defaults page: every option whose value differs from its default."""
    rows = []
    for key, info in shared.opts.data_labels.items():
        if info.do_not_save or key not in shared.opts.data:
            continue
        value = shared.opts.data[key]
        if value == info.default:
            continue
        rows.append(f"<tr><td>{html.escape(info.label or key)}</td><td><code>{html.escape(key)}</code></td>"
                    f"<td>{html.escape(repr(value))}</td><td>{html.escape(repr(info.default))}</td></tr>")
    if not rows:
        return "<p>Every setting has its default value.</p>"
    return ("<table><thead><tr><th>Setting</th><th>Key</th><th>Value</th><th>Default</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")


# --- building -------------------------------------------------------------------------------------------
def quicksettings_keys() -> list[str]:
    """`quicksettings_list` as option keys (unknown names are left out)."""
    value = shared.opts.quicksettings_list or []
    if isinstance(value, str):
        value = [x.strip() for x in value.split(",")]
    return [k for k in value if k in shared.opts.data_labels]


def create_quicksettings() -> None:
    """The options of `quicksettings_list` as controls above the tabs (row elem_id `quicksettings`);
    a change applies at once and is saved. The checkpoint has its own row already."""
    with gr.Row(elem_id="quicksettings", elem_classes="serena-quicksettings"):
        for key in quicksettings_keys():
            if key in ROW_OPTIONS:
                continue
            component = create_setting_component(key)
            event = getattr(component, "input", None) or component.change
            event(lambda v, _k=key: apply_quicksetting(_k, v), inputs=component, outputs=component,
                  show_progress="hidden")


def create_settings_tab() -> None:
    """Every option in its A1111 section, with search, page choice, Apply, Defaults and Reload UI."""
    pages = shown_options()
    labels = shared.opts.data_labels
    titles = [section_title(sid, labels[keys[0]]) for sid, keys in pages.items()]
    with gr.Row(elem_id="settings_top_row"):
        search = gr.Textbox(value="", placeholder="Search...", show_label=False, max_lines=1,
                            elem_id="settings_search", scale=4)
        submit = gr.Button("Apply settings", variant="primary", elem_id="settings_submit", scale=2,
                           interactive=not shared.opts.frozen)
        reload_ui = gr.Button("Reload UI", elem_id="settings_restart_gradio", scale=1)
    frozen_note = " Settings are frozen (--freeze-settings): shown read-only." if shared.opts.frozen else ""
    result = gr.HTML(html.escape(frozen_note.strip()), elem_id="settings_result")
    page = gr.Radio([*titles, ALL_PAGES, DEFAULTS_PAGE], value=titles[0] if titles else ALL_PAGES,
                    label="Settings page", elem_id="settings_page")
    columns, keys, components = [], [], []
    for n, (sid, section_keys) in enumerate(pages.items()):
        with gr.Column(visible=n == 0, elem_id=f"settings_{sid}", elem_classes="serena-settings-page") as col:
            gr.Markdown(f"### {titles[n]}")
            for key in section_keys:
                info = labels[key]
                if isinstance(info, options.OptionHTML):
                    gr.HTML(str(info.default))
                    continue
                keys.append(key)
                components.append(create_setting_component(key))
        columns.append(col)
    with gr.Column(visible=False, elem_id="settings_tab_defaults") as defaults_col:
        gr.Markdown("### Settings changed from their defaults")
        defaults_html = gr.HTML(changed_from_defaults_html(), elem_id="settings_defaults_list")
    # Not in the generation queue: only a checkpoint/VAE change waits for the running job (queue lock).
    submit.click(lambda *v: run_settings(keys, *v), inputs=components, outputs=[result, *components],
                 show_progress="full").then(changed_from_defaults_html, outputs=defaults_html, show_progress="hidden")
    visibility_outputs = [*columns, defaults_col, *components]
    search.input(lambda p, q: page_visibility(p, q, pages, keys), inputs=[page, search], outputs=visibility_outputs,
                 show_progress="hidden", trigger_mode="always_last")
    page.input(lambda p: page_visibility(p, "", pages, keys), inputs=page, outputs=visibility_outputs,
               show_progress="hidden").then(changed_from_defaults_html, outputs=defaults_html, show_progress="hidden")
    page.input(lambda: "", outputs=search, show_progress="hidden")
    # A1111's Reload UI: the server rebuilds the app (extensions and scripts reloaded, the page built
    # anew, so "requires Reload UI" options take effect), and the page reloads when it answers again.
    reload_ui.click(lambda: ui_restart.request_restart(), show_progress="hidden") \
        .then(None, js=ui_restart.page_reload_js())
