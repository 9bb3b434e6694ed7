"""The PNG Info tab: an image's generation parameters, and "Send to …" into the other tabs.

"Send to txt2img" pastes the parameters; "Send to img2img" and "Send to inpaint" also put the image
itself into img2img's image input; "Send to extras" puts the image into the Extras tab. Each button
then switches to its tab (A1111's buttons and elem_ids: ``txt2img_tab``, ``img2img_tab``, ``inpaint_tab``,
``extras_tab``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from modules import ui_handlers as h

if TYPE_CHECKING:
    from modules.ui import GenerationTab

IMAGE_FIELDS = ("init_image", "mask")
"""Fields of a generation tab that a pasted infotext never fills."""


def create_png_info_tab(tabs: gr.Tabs, targets: list["GenerationTab"]) -> None:
    """Upload an image, read its parameters; "Send to …" carries them (and the image) to a tab."""
    with gr.Row(equal_height=False):
        with gr.Column():
            image = gr.Image(type="pil", image_mode=None, label="Source", sources=["upload", "clipboard"],
                             height=480, elem_id="pnginfo_image")
        with gr.Column():
            text = gr.Textbox(label="Parameters", lines=8, interactive=False, buttons=["copy"],
                              elem_id="pnginfo_generation_info")
            with gr.Row():
                buttons = {name: gr.Button(f"Send to {name}", size="sm", elem_id=f"{name}_tab")
                           for name in send_targets(targets)}
            parsed = gr.JSON(label="Parsed parameters", open=True, elem_id="pnginfo_parsed")
    image.change(h.png_info, inputs=image, outputs=[text, parsed], show_progress="hidden")
    by_kind = {tab.kind: tab for tab in targets}
    for name, button in buttons.items():
        if name == "extras":
            _wire_send_to_extras(button, image, tabs)
        else:
            tab = by_kind["img2img" if name == "inpaint" else name]
            _wire_paste(button, text, image, tab, tabs, with_image=name != "txt2img")


def send_targets(targets: list["GenerationTab"]) -> list[str]:
    """The button names, in A1111's order: the generation tabs, inpaint (with img2img), extras
    (when the page has an Extras tab)."""
    from modules import ui_postprocessing
    kinds = [tab.kind for tab in targets]
    names = [k for k in ("txt2img", "img2img") if k in kinds]
    if "img2img" in kinds:
        names.append("inpaint")
    if _in_current_page(ui_postprocessing.built):
        names.append("extras")
    return names


def _in_current_page(extras: Any) -> bool:
    """True when `extras` (an Extras tab) belongs to the page being built now."""
    root = gr.context.Context.root_block
    return extras is not None and root is not None and extras.image is not None and extras.image._id in root.blocks


def paste_values(infotext: str | None, image: Any, names: list[str], script_fields: list,
                 with_image: bool, tab_id: str) -> list[Any]:
    """The outputs of a "Send to" button: the tab's fields from the infotext, then its scripts'
    fields, then (img2img / inpaint) the image, then the tab switch."""
    values = [*h.paste_infotext(infotext, names), *h.paste_script_fields(infotext, script_fields)]
    if with_image:
        values.append(image if image is not None else gr.update())
    return [*values, gr.Tabs(selected=tab_id)]


def _wire_paste(button: gr.Button, text: gr.Textbox, image: gr.Image, tab: "GenerationTab", tabs: gr.Tabs,
                with_image: bool) -> None:
    """Fill `tab`'s fields from the infotext in `text` (and its image input from `image`), then
    switch to that tab."""
    names = [name for name in tab.fields if name not in IMAGE_FIELDS]
    script_fields = list(tab.script_paste_fields)
    target_image = tab.fields.get("init_image") if with_image else None
    with_image = target_image is not None

    def paste(infotext: str, picture: Any) -> list[Any]:
        return paste_values(infotext, picture, names, script_fields, with_image, tab.kind)

    outputs = [*(tab.fields[n] for n in names), *(c for c, _ in script_fields)]
    if with_image:
        outputs.append(target_image)
    button.click(paste, inputs=[text, image], outputs=[*outputs, tabs], show_progress="hidden")


def _wire_send_to_extras(button: gr.Button, image: gr.Image, tabs: gr.Tabs) -> None:
    """Put the image into the Extras tab's image input and switch there."""
    from modules import ui_postprocessing
    extras = ui_postprocessing.built

    def send(picture: Any) -> list[Any]:
        return [picture if picture is not None else gr.update(), gr.Tabs(selected="extras")]

    button.click(send, inputs=image, outputs=[extras.image, tabs], show_progress="hidden")
