"""Small UI helpers A1111 extensions import from `modules.ui_common`.

Only the helpers that stand on their own are here (`create_refresh_button`, `plaintext_to_html`,
the button symbols). Serena's output panel is built by `modules.ui`; A1111's
`create_output_panel` is not provided.
"""
from __future__ import annotations

import html
from typing import Any, Callable

import gradio as gr

from modules.ui_components import ToolButton

folder_symbol = "\U0001f4c2"  # 📂
refresh_symbol = "\U0001f504"  # 🔄


def plaintext_to_html(text: str, classname: str | None = None) -> str:
    """`text` as one HTML paragraph: escaped, each newline a `<br>`."""
    content = "<br>\n".join(html.escape(line) for line in str(text).split("\n"))
    return f"<p class='{classname}'>{content}</p>" if classname else f"<p>{content}</p>"


def create_refresh_button(refresh_component: Any, refresh_method: Callable[[], Any],
                          refreshed_args: dict | Callable[[], dict], elem_id: str) -> ToolButton:
    """A 🔄 button that calls `refresh_method()`, then sets the properties `refreshed_args` (a dict,
    or a function returning one, e.g. `{"choices": [...]}`) on `refresh_component` (one component
    or a list) in the page and on the Python objects."""
    components = refresh_component if isinstance(refresh_component, list) else [refresh_component]
    label = None
    for component in components:
        label = getattr(component, "label", None)
        if label:
            break

    def refresh() -> Any:
        refresh_method()
        args = refreshed_args() if callable(refreshed_args) else refreshed_args
        for component in components:
            for key, value in args.items():
                setattr(component, key, value)
        updates = [gr.update(**args) for _ in components]
        return updates[0] if len(updates) == 1 else updates

    button = ToolButton(value=refresh_symbol, elem_id=elem_id, tooltip=f"{label}: refresh" if label else "Refresh")
    button.click(fn=refresh, inputs=[], outputs=components)
    return button
