"""The styles row of a generation tab: the styles dropdown, 📋 apply the chosen styles to the
prompts, and the 🖌️ styles editor that creates, edits and deletes styles in `styles.csv`
(`shared.prompt_styles`, saved atomically by `modules.styles.StyleDatabase.save_styles`)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import gradio as gr

from modules import shared

log = logging.getLogger("serena.ui")

styles_edit_symbol = "\U0001f58c\ufe0f"  # 🖌️
styles_materialize_symbol = "\U0001f4cb"  # 📋
styles_copy_symbol = "\U0001f4dd"  # 📝


def style_names() -> list[str]:
    """Names of the known styles, in file order."""
    styles = shared.prompt_styles
    return list(styles.styles) if styles is not None else []


def _database() -> Any:
    if shared.prompt_styles is None:
        raise _refuse("styles are not loaded (no styles.csv database)")
    return shared.prompt_styles


def _refuse(message: str) -> gr.Error:
    log.warning("styles editor: %s", message)
    return gr.Error(message, print_exception=False)


# --- handlers (pure enough to test without a browser) ----------------------------------------------
def select_style(name: str | None) -> tuple[Any, Any, Any]:
    """Editor: a chosen existing style fills the two text boxes; Delete shows only for one."""
    style = shared.prompt_styles.styles.get(name or "") if shared.prompt_styles is not None else None
    if style is None:
        return gr.update(), gr.update(), gr.update(visible=False)
    return style.prompt or "", style.negative_prompt or "", gr.update(visible=True)


def save_style(name: str | None, prompt: str | None, negative_prompt: str | None) -> tuple[Any, Any, Any]:
    """Create or replace style `name` and write its styles file.

    Returns: updates for the tab's styles dropdown, the editor's style selector, and Delete.

    Raises:
        gr.Error: no name, the reserved name "None", or the file cannot be written.
    """
    name = (name or "").strip()
    if not name:
        raise _refuse("give the style a name first")
    if name == "None" or name.startswith("#"):
        raise _refuse(f"{name!r} cannot be a style name")
    database = _database()
    database.add_style(name, prompt or "", negative_prompt or "")
    _save(database)
    log.info("style %r saved", name)
    gr.Info(f"Style “{name}” saved")
    names = style_names()
    return gr.update(choices=names), gr.update(choices=names, value=name), gr.update(visible=True)


def delete_style(name: str | None) -> tuple[Any, Any, Any, Any, Any, Any]:
    """Delete style `name` and write its styles file.

    Returns: updates for the styles dropdown, the selector, the two text boxes and Delete.
    """
    name = (name or "").strip()
    database = _database()
    if name not in database.styles:
        raise _refuse(f"there is no style named {name!r}")
    database.remove_style(name)
    _save(database)
    log.info("style %r deleted", name)
    gr.Info(f"Style “{name}” deleted")
    names = style_names()
    return (gr.update(choices=names, value=[]), gr.update(choices=names, value=None), "", "",
            gr.update(visible=False), gr.update())


def _save(database: Any) -> None:
    try:
        database.save_styles()
    except OSError as e:
        database.reload()
        raise _refuse(f"could not write the styles file: {e}") from e


def materialize_styles(prompt: str | None, negative_prompt: str | None,
                       styles: list[str] | None) -> tuple[str, str, list[str]]:
    """📋: write the chosen styles into the prompts and clear the selection (A1111)."""
    database = _database()
    chosen = list(styles or [])
    return (database.apply_styles_to_prompt(prompt or "", chosen),
            database.apply_negative_styles_to_prompt(negative_prompt or "", chosen), [])


def refresh_styles() -> tuple[Any, Any]:
    """Read the styles files again (edited outside the page); new choices for both dropdowns."""
    database = _database()
    database.reload()
    names = style_names()
    return gr.update(choices=names), gr.update(choices=names)


# --- layout -----------------------------------------------------------------------------------------
@dataclass
class UiPromptStyles:
    """The styles row and editor of one tab (A1111's class name and elem_ids)."""

    tabname: str
    dropdown: gr.Dropdown
    materialize: gr.Button
    edit_button: gr.Button
    dialog: gr.Group
    selection: gr.Dropdown
    prompt: gr.Textbox
    neg_prompt: gr.Textbox
    save: gr.Button
    delete: gr.Button
    close: gr.Button


def create_styles_ui(tabname: str, prompt: gr.Textbox, negative_prompt: gr.Textbox) -> UiPromptStyles:
    """Build the styles row (dropdown, 📋, 🖌️) and the hidden editor under it, and wire them."""
    names = style_names()
    with gr.Row(elem_id=f"{tabname}_styles_row"):
        dropdown = gr.Dropdown(names, value=[], multiselect=True, label="Styles", show_label=False,
                               elem_id=f"{tabname}_styles", scale=6)
        materialize = gr.Button(styles_materialize_symbol, elem_classes="serena-tool", scale=0, min_width=40,
                                elem_id=f"{tabname}_style_apply")
        edit_button = gr.Button(styles_edit_symbol, elem_classes="serena-tool", scale=0, min_width=40,
                                elem_id=f"{tabname}_styles_edit_button")
    with gr.Group(visible=False, elem_id=f"{tabname}_styles_dialog", elem_classes="popup-dialog") as dialog:
        selection = gr.Dropdown(names, value=None, label="Styles", allow_custom_value=True,
                                elem_id=f"{tabname}_styles_edit_select",
                                info="Type a new name to create a style. {prompt} in a style's text marks "
                                     "where the prompt goes; without it the style text is appended.")
        style_prompt = gr.Textbox(label="Prompt", lines=3, elem_id=f"{tabname}_edit_style_prompt")
        style_neg = gr.Textbox(label="Negative prompt", lines=3, elem_id=f"{tabname}_edit_style_neg_prompt")
        with gr.Row():
            save = gr.Button("Save", variant="primary", elem_id=f"{tabname}_edit_style_save")
            delete = gr.Button("Delete", variant="stop", visible=False, elem_id=f"{tabname}_edit_style_delete")
            close = gr.Button("Close", elem_id=f"{tabname}_edit_style_close")
    ui = UiPromptStyles(tabname, dropdown, materialize, edit_button, dialog, selection, style_prompt, style_neg,
                        save, delete, close)
    _wire(ui, prompt, negative_prompt)
    return ui


def _wire(ui: UiPromptStyles, prompt: gr.Textbox, negative_prompt: gr.Textbox) -> None:
    quick = dict(queue=False, show_progress="hidden")
    ui.edit_button.click(lambda: gr.update(visible=True), outputs=ui.dialog, **quick)
    ui.close.click(lambda: gr.update(visible=False), outputs=ui.dialog, **quick)
    ui.selection.change(select_style, inputs=ui.selection, outputs=[ui.prompt, ui.neg_prompt, ui.delete], **quick)
    ui.save.click(save_style, inputs=[ui.selection, ui.prompt, ui.neg_prompt],
                  outputs=[ui.dropdown, ui.selection, ui.delete], **quick)
    ui.delete.click(delete_style, inputs=ui.selection,
                    outputs=[ui.dropdown, ui.selection, ui.prompt, ui.neg_prompt, ui.delete, ui.dialog], **quick)
    ui.materialize.click(materialize_styles, inputs=[prompt, negative_prompt, ui.dropdown],
                         outputs=[prompt, negative_prompt, ui.dropdown], **quick)
