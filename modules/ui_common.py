"""UI helpers A1111 extensions import from `modules.ui_common`.

`create_refresh_button`, `plaintext_to_html`, the button symbols, and `create_output_panel`: the
gallery + infotext + save buttons block an extension's own tab shows its results in, built
with Gradio 6 components and returning A1111's `OutputPanel` fields. (Serena's txt2img and
img2img tabs build their own panel in `modules.ui`.)
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import zipfile
from typing import Any, Callable

import gradio as gr

from modules.ui_components import ToolButton
from modules.util import plaintext_to_html  # noqa: F401  (one home; A1111 exports it from here too)

folder_symbol = "\U0001f4c2"  # 📂
refresh_symbol = "\U0001f504"  # 🔄
save_symbol = "\U0001f4be"  # 💾
zip_symbol = "\U0001f5c3\ufe0f"  # 🗃️
upscale_symbol = "\u2728"  # ✨
# The symbols A1111's `modules.ui` defines for its tool buttons (extensions reuse them).
random_symbol = "\U0001f3b2\ufe0f"  # 🎲️
reuse_symbol = "\u267b\ufe0f"  # ♻️
paste_symbol = "\u2199\ufe0f"  # ↙️
save_style_symbol = "\U0001f4be"  # 💾
apply_style_symbol = "\U0001f4cb"  # 📋
clear_prompt_symbol = "\U0001f5d1\ufe0f"  # 🗑️
extra_networks_symbol = "\U0001f3b4"  # 🎴
switch_values_symbol = "\u21c5"  # ⇅
restore_progress_symbol = "\U0001f300"  # 🌀
detect_image_size_symbol = "\U0001f4d0"  # 📐
SEND_BUTTONS = {"img2img": ("\U0001f5bc\ufe0f", "Send image and generation parameters to img2img tab."),
                "inpaint": ("\U0001f3a8\ufe0f", "Send image and generation parameters to img2img inpaint tab."),
                "extras": ("\U0001f4d0", "Send image and generation parameters to extras tab.")}


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


# --- output panel ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class OutputPanel:
    """What `create_output_panel` built (A1111's fields): the gallery, the job's JSON generation info
    (hidden textbox; an HTML block on the extras tab), the selected image's infotext (HTML), the
    log line of the save buttons (HTML), and the ✨ upscale button (txt2img only, else None)."""

    gallery: Any = None
    generation_info: Any = None
    infotext: Any = None
    html_log: Any = None
    button_upscale: Any = None


def update_generation_info(generation_info: str, html_info: str, img_index: int) -> tuple[str, Any]:
    """The infotext of image `img_index` from the job's JSON generation info (`Processed.js()`) as
    HTML, or `html_info` unchanged when the JSON or the index does not fit (A1111's handler)."""
    try:
        infotexts = json.loads(generation_info)["infotexts"]
        if 0 <= img_index < len(infotexts):
            return plaintext_to_html(infotexts[img_index]), gr.update()
    except (TypeError, ValueError, KeyError):
        pass
    return html_info, gr.update()


def _save_folder() -> str:
    from modules import shared
    folder = shared.opts.outdir_save or "log/images"
    return folder if os.path.isabs(folder) else os.path.join(shared.data_paths.data_path, folder)


def _as_image(item: Any) -> Any:
    """A gallery entry (image, `(image, caption)`, or a file path) as a PIL image."""
    from PIL import Image
    if isinstance(item, (tuple, list)):
        item = item[0]
    if isinstance(item, dict):  # Gradio's FileData as a dict
        item = item.get("path") or item.get("name")
    return item if isinstance(item, Image.Image) else Image.open(item)


def save_files(js_data: str, images: list, do_make_zip: bool, index: int) -> tuple[Any, str]:
    """The 💾 / 🗃️ buttons: save the gallery's images (only image `index` when the option
    `save_selected_only` is on and an image, not the grid, is selected) into the option
    `outdir_save` folder with their infotexts, add a row to its `log.csv`, and with `do_make_zip`
    also pack them into a zip. Returns the files for the download box and a "Saved: …" line."""
    from types import SimpleNamespace

    from modules import images as images_module, shared
    data = json.loads(js_data)
    p = SimpleNamespace(**data)
    folder = _save_folder()
    os.makedirs(folder, exist_ok=True)
    first_image = int(data.get("index_of_first_image", 0))
    start = 0
    if index > -1 and shared.opts.save_selected_only and index >= first_image:
        images, start = [images[index]], index
    filenames: list[str] = []
    fullfns: list[str] = []
    for image_index, item in enumerate(images, start):
        is_grid = image_index < first_image
        i = 0 if is_grid else image_index - first_image
        seeds, prompts, infotexts = data.get("all_seeds") or [None], data.get("all_prompts") or [""], \
            data.get("infotexts") or [""]
        fullfn, txt_fullfn = images_module.save_image(
            _as_image(item), folder, "", seed=seeds[min(i, len(seeds) - 1)], prompt=prompts[min(i, len(prompts) - 1)],
            extension=shared.opts.samples_format, info=infotexts[min(image_index, len(infotexts) - 1)],
            grid=is_grid, p=p, save_to_dirs=shared.opts.use_save_to_dirs_for_ui)
        filenames.append(os.path.relpath(fullfn, folder))
        fullfns.append(fullfn)
        if txt_fullfn:
            filenames.append(os.path.basename(txt_fullfn))
            fullfns.append(txt_fullfn)
    if not fullfns:
        return gr.update(), plaintext_to_html("Nothing to save")
    log_path = os.path.join(folder, "log.csv")
    with open(log_path, "a", encoding="utf8", newline="") as file:
        writer = csv.writer(file)
        if file.tell() == 0:
            writer.writerow(["prompt", "seed", "width", "height", "sampler", "cfgs", "steps", "filename",
                             "negative_prompt"])
        writer.writerow([data.get("prompt"), data.get("seed"), data.get("width"), data.get("height"),
                         data.get("sampler_name"), data.get("cfg_scale"), data.get("steps"), filenames[0],
                         data.get("negative_prompt")])
    if do_make_zip:
        zip_path = os.path.join(folder, os.path.splitext(os.path.basename(fullfns[0]))[0] + ".zip")
        with zipfile.ZipFile(zip_path, "w") as archive:
            for name, path in zip(filenames, fullfns):
                archive.write(path, name)
        fullfns.insert(0, zip_path)
    return gr.update(value=fullfns, visible=True), plaintext_to_html(f"Saved: {filenames[0]}")


def create_output_panel(tabname: str, outdir: str, toprow: Any = None) -> OutputPanel:
    """The results block of a generation tab (A1111 name and fields; see `OutputPanel`).

    Selecting an image shows its infotext (from the JSON in `generation_info`, which the tab's
    generate handler fills with `Processed.js()`); 💾 and 🗃️ save the images (`save_files`); the
    send buttons are registered as paste bindings for the img2img, inpaint and extras tabs. The
    📂 button is hidden: Serena is a server, and a file manager would open on its machine.
    """
    from modules import infotext_utils
    res = OutputPanel()
    with gr.Column(elem_id=f"{tabname}_results"):
        if toprow is not None and hasattr(toprow, "create_inline_toprow_image"):
            toprow.create_inline_toprow_image()
        with gr.Column(variant="panel", elem_id=f"{tabname}_results_panel"):
            with gr.Group(elem_id=f"{tabname}_gallery_container"):
                res.gallery = gr.Gallery(label="Output", show_label=False, elem_id=f"{tabname}_gallery", columns=4,
                                         preview=True, type="pil", format="png", interactive=False)
            with gr.Row(elem_id=f"image_buttons_{tabname}", elem_classes="image-buttons"):
                ToolButton(folder_symbol, elem_id=f"{tabname}_open_folder", visible=False,
                           tooltip="Open images output directory.")
                if tabname != "extras":
                    save = ToolButton(save_symbol, elem_id=f"save_{tabname}",
                                      tooltip="Save the image to a dedicated directory.")
                    save_zip = ToolButton(zip_symbol, elem_id=f"save_zip_{tabname}",
                                          tooltip="Save zip archive with images to a dedicated directory.")
                buttons = {name: ToolButton(symbol, elem_id=f"{tabname}_send_to_{name}", tooltip=tip)
                           for name, (symbol, tip) in SEND_BUTTONS.items()}
                if tabname == "txt2img":
                    res.button_upscale = ToolButton(upscale_symbol, elem_id=f"{tabname}_upscale",
                                                    tooltip="Create an upscaled version of the current image "
                                                            "using hires fix settings.")
            if tabname != "extras":
                download_files = gr.File(None, file_count="multiple", interactive=False, show_label=False,
                                         visible=False, elem_id=f"download_files_{tabname}")
                with gr.Group():
                    res.infotext = gr.HTML(elem_id=f"html_info_{tabname}", elem_classes="infotext")
                    res.html_log = gr.HTML(elem_id=f"html_log_{tabname}", elem_classes="html-log")
                    res.generation_info = gr.Textbox(visible=False, elem_id=f"generation_info_{tabname}")
                _wire_output_panel(res, save, save_zip, download_files)
            else:
                res.generation_info = gr.HTML(elem_id=f"html_info_x_{tabname}")
                res.infotext = gr.HTML(elem_id=f"html_info_{tabname}", elem_classes="infotext")
                res.html_log = gr.HTML(elem_id=f"html_log_{tabname}")
            for paste_tabname, button in buttons.items():
                infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
                    paste_button=button, tabname=paste_tabname,
                    source_tabname="txt2img" if tabname == "txt2img" else None, source_image_component=res.gallery))
    return res


def _wire_output_panel(res: OutputPanel, save: Any, save_zip: Any, download_files: Any) -> None:
    """Gallery selection → infotext; 💾 / 🗃️ → `save_files` for the selected image (or all)."""
    def on_select(generation_info: str, html_info: str, evt: gr.SelectData) -> str:
        return update_generation_info(generation_info, html_info, int(evt.index))[0]

    selected = gr.State(-1)
    res.gallery.select(_selected_index, None, selected, queue=False, show_progress="hidden")
    res.gallery.select(on_select, [res.generation_info, res.infotext], res.infotext, queue=False,
                       show_progress="hidden")
    for button, make_zip in ((save, False), (save_zip, True)):
        button.click(lambda info, gallery, index, z=make_zip: save_files(info, gallery or [], z, index),
                     [res.generation_info, res.gallery, selected], [download_files, res.html_log],
                     show_progress="hidden")


def _selected_index(evt: gr.SelectData) -> int:
    return int(evt.index)
