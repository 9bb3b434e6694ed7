"""What sits under a generation tab's gallery: 📂 open the output folder, 💾 save, 🗃️ zip, and the
"Send to img2img / inpaint / extras" buttons, with the log line of what was saved.

Send-to carries the image itself (the selected one, else the first real image after a grid) and,
into the generation tabs, the parameters of its infotext — seed and size only while the options
`send_seed` / `send_size` are on, as in A1111. PNG Info's buttons use the same targets
(:class:`SendTarget`, :func:`wire_send`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import gradio as gr

from modules import img2img_inputs, shared, ui_common, ui_handlers as h
from modules.ui_common import SEND_BUTTONS, folder_symbol, save_symbol, zip_symbol
from modules.ui_components import ToolButton

if TYPE_CHECKING:
    from modules.ui import GenerationTab

log = logging.getLogger("serena.ui")


@dataclass
class ResultsPanel:
    """The buttons and boxes of one tab's results (A1111's elem_ids)."""

    kind: str
    open_folder: Any = None
    save: Any = None
    save_zip: Any = None
    send: dict[str, Any] = field(default_factory=dict)
    generation_info: Any = None
    """Hidden: the job's `Processed.js()` JSON."""
    selected: Any = None
    """The index of the gallery image the user clicked (-1: none since the last job)."""
    infotexts: Any = None
    """Every image's infotext (a `gr.State` the tab's generation fills)."""
    download: Any = None
    html_log: Any = None


def create_buttons(kind: str) -> ResultsPanel:
    """The row of buttons under the gallery; 📂 is hidden with `--hide-ui-dir-config`."""
    panel = ResultsPanel(kind)
    with gr.Row(elem_id=f"image_buttons_{kind}", elem_classes="image-buttons"):
        panel.open_folder = ToolButton(folder_symbol, elem_id=f"{kind}_open_folder",
                                       visible=not getattr(shared.cmd_opts, "hide_ui_dir_config", False))
        panel.save = ToolButton(save_symbol, elem_id=f"save_{kind}")
        panel.save_zip = ToolButton(zip_symbol, elem_id=f"save_zip_{kind}")
        panel.send = {name: ToolButton(symbol, elem_id=f"{kind}_send_to_{name}")
                      for name, (symbol, _tip) in SEND_BUTTONS.items()}
    panel.generation_info = gr.Textbox(visible=False, elem_id=f"generation_info_{kind}")
    panel.selected = gr.State(-1)
    return panel


def create_log(panel: ResultsPanel) -> None:
    """The files the save buttons wrote (for download) and their "Saved: …" line."""
    panel.download = gr.File(None, file_count="multiple", interactive=False, show_label=False, visible=False,
                             elem_id=f"download_files_{panel.kind}")
    panel.html_log = gr.HTML(elem_id=f"html_log_{panel.kind}", elem_classes="html-log")


# --- which image -------------------------------------------------------------------------------------------
def first_image_index(generation_info: str | None) -> int:
    """`index_of_first_image` of the job's JSON (1 after a grid), else 0."""
    try:
        return max(int(json.loads(generation_info or "{}").get("index_of_first_image", 0)), 0)
    except (TypeError, ValueError, AttributeError):
        return 0


def chosen_image(gallery: Sequence[Any] | None, selected: int, generation_info: str | None) -> Any:
    """The image a send-to button carries: the selected gallery image, else the first real one
    (after a grid); None for an empty gallery."""
    items = list(gallery or [])
    if not items:
        return None
    index = selected if 0 <= selected < len(items) else min(first_image_index(generation_info), len(items) - 1)
    return ui_common._as_image(items[index])


def chosen_infotext(infotexts: Sequence[str] | None, selected: int, generation_info: str | None) -> str:
    """The infotext that belongs to :func:`chosen_image`."""
    texts = list(infotexts or [])
    if not texts:
        return ""
    index = selected if 0 <= selected < len(texts) else min(first_image_index(generation_info), len(texts) - 1)
    return texts[index]


# --- send to --------------------------------------------------------------------------------------------------
@dataclass
class SendTarget:
    """Where a "Send to …" button puts things: the page tab to switch to, the fields an infotext
    fills, and the image input (with the img2img sub-tab it lives on)."""

    name: str
    tab_id: str
    fields: dict[str, Any] = field(default_factory=dict)
    script_fields: list = field(default_factory=list)
    image: Any = None
    mode: int | None = None
    mode_state: Any = None
    mode_tabs: Any = None
    mode_tab_id: str | None = None
    inpaint_controls: Any = None

    def outputs(self) -> list[Any]:
        out = [*self.fields.values(), *(c for c, _ in self.script_fields)]
        if self.image is not None:
            out.append(self.image)
        if self.mode_state is not None:
            out += [self.mode_state, self.mode_tabs, self.inpaint_controls]
        return out


def generation_target(tab: "GenerationTab", name: str) -> SendTarget:
    """The target for "Send to `name`" on a generation tab (inpaint: img2img's Inpaint sub-tab)."""
    from modules import ui_img2img
    names = [n for n in tab.fields if n not in img2img_inputs.INPUT_FIELDS]
    target = SendTarget(name, tab.kind, {n: tab.fields[n] for n in names}, list(tab.script_paste_fields))
    if name in tab.image_targets:
        target.image, target.mode = tab.image_targets[name]
        target.mode_state, target.mode_tabs = tab.fields["img2img_mode"], tab.mode_tabs
        target.mode_tab_id = ui_img2img.SUB_TABS[target.mode][1]
        target.inpaint_controls = tab.inpaint_controls
    return target


def extras_target(extras: Any) -> SendTarget:
    return SendTarget("extras", "extras", image=extras.image)


def send_values(target: SendTarget, infotext: str, image: Any, keep_seed: bool = True,
                keep_size: bool = True) -> list[Any]:
    """The outputs of a send-to button for `target` (in `target.outputs()` order), then the page
    tab switch: pasted fields (seed / size left alone unless kept), the scripts' fields, the image,
    and img2img's sub-tab (mode, the sub-tabs' selection, the inpaint options' visibility)."""
    from modules import ui_img2img
    names = list(target.fields)
    values = h.paste_infotext(infotext, names) if names else []
    skipped = set() if keep_seed else {"seed"}
    skipped |= set() if keep_size else {"width", "height"}
    values = [gr.update() if n in skipped else v for n, v in zip(names, values)]
    values += h.paste_script_fields(infotext, target.script_fields) if target.script_fields else []
    if target.image is not None:
        values.append(image if image is not None else gr.update())
    if target.mode_state is not None:
        mode, controls = ui_img2img.mode_outputs(target.mode)
        values += [mode, gr.Tabs(selected=target.mode_tab_id), controls]
    return [*values, gr.Tabs(selected=target.tab_id)]


def wire_send(button: Any, target: SendTarget, tabs: gr.Tabs, inputs: list[Any],
              pick: Callable[..., tuple[str, Any]], from_gallery: bool) -> None:
    """`button` → `send_values` for `target`; `pick(*inputs)` gives (infotext, image). Sent from a
    gallery, seed and size follow the options `send_seed` / `send_size`."""
    def send(*values: Any) -> list[Any]:
        infotext, image = pick(*values)
        keep_seed = bool(shared.opts.send_seed) if from_gallery else True
        keep_size = bool(shared.opts.send_size) if from_gallery else True
        return send_values(target, infotext, image, keep_seed, keep_size)

    button.click(send, inputs=inputs, outputs=[*target.outputs(), tabs], show_progress="hidden")


# --- folders ------------------------------------------------------------------------------------------------
def output_folder(kind: str) -> str:
    """The folder this tab's images are saved in (the UI's choice: `generation.output_folders`)."""
    from modules.runtime import jobs as generation
    folder = generation.output_folders(kind, None, ui=True)[0]
    return folder if os.path.isabs(folder) else os.path.join(shared.data_paths.data_path, folder)


def opener_command(folder: str, platform: str | None = None) -> list[str] | None:
    """The command that shows `folder` in the server machine's file manager, or None."""
    platform = platform or sys.platform
    if platform == "darwin":
        return ["open", folder]
    if platform.startswith("win"):
        return ["explorer", folder]
    found = shutil.which("xdg-open")
    return [found, folder] if found else None


def open_folder(kind: str, run: Callable[[list[str]], Any] = subprocess.Popen) -> str:
    """📂: open the tab's output folder in a file manager on the server machine (A1111's button;
    hidden with --hide-ui-dir-config). Returns the log line shown under the gallery."""
    if getattr(shared.cmd_opts, "hide_ui_dir_config", False):
        raise h.user_error("opening folders is disabled (--hide-ui-dir-config)")
    folder = output_folder(kind)
    if not os.path.isdir(folder):
        return ui_common.plaintext_to_html(f'Folder "{folder}" does not exist yet: it is made with the first image.')
    command = opener_command(folder)
    if command is None:
        return ui_common.plaintext_to_html(f"No file manager on the server; the images are in {folder}")
    try:
        run(command)
    except OSError as e:
        log.warning("opening %s failed: %s", folder, e)
        return ui_common.plaintext_to_html(f"Could not open {folder}: {e}")
    return ui_common.plaintext_to_html(f"Opened {folder}")


# --- wiring --------------------------------------------------------------------------------------------------
def wire(tab: "GenerationTab", tabs: gr.Tabs, targets: dict[str, SendTarget]) -> None:
    """The tab's results buttons: gallery selection, save / zip, 📂, and send-to for each target."""
    panel = tab.results
    tab.gallery.select(_index, None, panel.selected, queue=False, show_progress="hidden")
    tab.gallery.change(lambda: -1, None, panel.selected, queue=False, show_progress="hidden")
    for button, make_zip in ((panel.save, False), (panel.save_zip, True)):
        button.click(lambda info, gallery, index, z=make_zip: _save(info, gallery, z, index),
                     [panel.generation_info, tab.gallery, panel.selected], [panel.download, panel.html_log],
                     show_progress="hidden")
    panel.open_folder.click(lambda: open_folder(tab.kind), outputs=panel.html_log, show_progress="hidden")

    def pick(gallery: Any, selected: int, infotexts: Any, info: str) -> tuple[str, Any]:
        return chosen_infotext(infotexts, selected, info), chosen_image(gallery, selected, info)

    inputs = [tab.gallery, panel.selected, panel.infotexts, panel.generation_info]
    for name, button in panel.send.items():
        if name in targets:
            wire_send(button, targets[name], tabs, inputs, pick, from_gallery=True)
        else:
            button.visible = False


def _index(evt: gr.SelectData) -> int:
    index = evt.index
    return int(index[0] if isinstance(index, (list, tuple)) else index)


def _save(info: str, gallery: Any, make_zip: bool, index: int) -> tuple[Any, str]:
    if not gallery or not info:
        return gr.update(), ui_common.plaintext_to_html("Nothing to save: generate images first")
    return ui_common.save_files(info, list(gallery), make_zip, index)
