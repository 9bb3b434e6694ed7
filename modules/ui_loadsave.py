"""`ui-config.json`: users' defaults for the page's components (A1111's `ui_loadsave`).

Keys are A1111's: `<tab>/<label>/<field>` for a component in a main tab (`txt2img/Sampling steps/value`),
`customscript/<script file>/<tab>/<label>/<field>` for one a script's `ui()` made, and
`webui/Tabs@tabs/selected` for the selected tab. Fields: `visible`, `value`, `minimum`, `maximum`,
`step`. Components of the Settings and Extensions tabs and those above the tabs are not included
(A1111 leaves them out too).
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Iterator

import gradio as gr

from modules import shared

log = logging.getLogger(__name__)

FIELDS = ("visible", "value", "minimum", "maximum", "step")
SKIPPED_TABS = frozenset({"extensions", "settings"})
MAIN_TABS_ID = "tabs"


def config_path() -> str:
    """`--ui-config-file`, else `<data>/ui-config.json`."""
    given = getattr(shared.cmd_opts, "ui_config_file", None)
    return given or os.path.join(shared.data_paths.data_path, "ui-config.json")


def _json_value(value: Any) -> bool:
    """Can `value` be stored in ui-config.json as it is?"""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    return isinstance(value, list) and all(isinstance(v, (str, int, float, bool)) for v in value)


def _children(block: Any) -> list:
    return list(getattr(block, "children", None) or [])


def tab_components(blocks: gr.Blocks) -> Iterator[tuple[str, Any]]:
    """(path, component) for every labelled component inside a main tab: path is the tab's id."""
    def walk(block: Any, path: str | None) -> Iterator[tuple[str, Any]]:
        for child in _children(block):
            child_path = path
            if path is None and isinstance(child, gr.Tab) and isinstance(block, gr.Tabs) \
                    and getattr(block, "elem_id", None) == MAIN_TABS_ID:
                child_path = str(child.id if child.id is not None else child.label)
                if child_path in SKIPPED_TABS:
                    continue
            if child_path is not None and isinstance(child, gr.components.Component) \
                    and isinstance(getattr(child, "label", None), str) and child.label:
                yield child_path, child
            yield from walk(child, child_path)
    yield from walk(blocks, None)


def component_key(path: str, component: Any) -> str:
    """A1111's key prefix of a component (without the field)."""
    key = f"{path}/{component.label}"
    source = getattr(component, "custom_script_source", None)
    return f"customscript/{source}/{key}" if source else key


def _choice_values(component: Any) -> list:
    return [c[1] if isinstance(c, (tuple, list)) and len(c) == 2 else c for c in (getattr(component, "choices", None) or [])]


def valid_value(component: Any, value: Any) -> bool:
    """A saved value a Radio/Dropdown/CheckboxGroup can hold (every item among its choices, unless
    it takes custom values); any JSON value for other components."""
    if not _json_value(value):
        return False
    if isinstance(component, (gr.Radio, gr.Dropdown, gr.CheckboxGroup)) and not getattr(component, "allow_custom_value", False):
        choices = _choice_values(component)
        items = value if isinstance(value, list) else [value]
        return all(v in choices for v in items)
    return True


def apply_component(key: str, component: Any, saved: dict[str, Any], defaults: dict[str, Any]) -> int:
    """Apply the saved fields of one component; record its current fields missing from `saved` in
    `defaults`. Returns how many fields were applied."""
    applied = 0
    for field in FIELDS:
        if not hasattr(component, field):
            continue
        full = f"{key}/{field}"
        current = getattr(component, field)
        if full not in saved:
            if _json_value(current) and full not in defaults:
                defaults[full] = current
            continue
        value = saved[full]
        if field == "value" and not valid_value(component, value):
            log.warning("ui-config.json: %s = %r is not a valid value for it; ignored", full, value)
            continue
        if field != "value" and field != "visible" and not isinstance(value, (int, float)):
            log.warning("ui-config.json: %s = %r is not a number; ignored", full, value)
            continue
        setattr(component, field, bool(value) if field == "visible" else value)
        applied += 1
    return applied


def _main_tabs(blocks: gr.Blocks) -> Any:
    stack = [blocks]
    while stack:
        block = stack.pop()
        if isinstance(block, gr.Tabs) and getattr(block, "elem_id", None) == MAIN_TABS_ID:
            return block
        stack.extend(_children(block))
    return None


def read(path: str) -> dict[str, Any] | None:
    """The saved settings; {} for no file, None (and one log line) for a file that cannot be read."""
    if not os.path.exists(path):
        return {}
    try:
        with open(path, encoding="utf8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        log.error("ui-config.json %s cannot be read (%s): the page keeps its built-in defaults", path, e)
        return None
    if not isinstance(data, dict):
        log.error("ui-config.json %s must hold a JSON object: the page keeps its built-in defaults", path)
        return None
    return data


def apply(blocks: gr.Blocks, path: str | None = None) -> dict[str, Any]:
    """Apply ui-config.json to the built page and write the keys it lacks (atomically).

    Returns the file's settings after the update. A file that cannot be read is left as it is.
    """
    from modules.fileio import atomic_write_text
    path = path or config_path()
    saved = read(path)
    if saved is None:
        return {}
    defaults: dict[str, Any] = {}
    applied = 0
    for tab, component in tab_components(blocks):
        applied += apply_component(component_key(tab, component), component, saved, defaults)
    tabs = _main_tabs(blocks)
    if tabs is not None:
        key = f"webui/Tabs@{MAIN_TABS_ID}/selected"
        tab_ids = [str(c.id) for c in _children(tabs) if isinstance(c, gr.Tab)]
        if key in saved:
            if saved[key] in tab_ids:
                tabs.selected = saved[key]
                applied += 1
        else:
            defaults[key] = getattr(tabs, "selected", None)
    if getattr(blocks, "exited", False) and applied:
        blocks.config = blocks.get_config_file()  # the page's config was computed when the block closed
    if defaults or not os.path.exists(path):
        merged = {**saved, **defaults}
        atomic_write_text(path, json.dumps(merged, indent=4, ensure_ascii=False))
        return merged
    return saved
