"""The PNG Info tab: an image's generation parameters, and "Send to …" into the other tabs.

"Send to txt2img" pastes the parameters; "Send to img2img" and "Send to inpaint" also put the image
itself into img2img's image input or the Inpaint sub-tab's editor; "Send to extras" puts the image
into the Extras tab (the targets are `modules.ui_results`'s, shared with the gallery buttons). Each
button then switches to its tab (A1111's buttons and elem_ids: ``txt2img_tab``, ``img2img_tab``, ``inpaint_tab``,
``extras_tab``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gradio as gr

from modules import ui_handlers as h, ui_postprocessing, ui_results

if TYPE_CHECKING:
    from modules.ui import GenerationTab


def create_png_info_tab(tabs: gr.Tabs, targets: list["GenerationTab"]) -> None:
    """Upload an image, read its parameters; "Send to …" carries them (and the image) to a tab."""
    with gr.Row(equal_height=False):
        with gr.Column():
            image = gr.Image(type="pil", image_mode=None, format="png", label="Source", sources=["upload", "clipboard"],
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
            target = ui_results.extras_target(ui_postprocessing.built)
        else:
            target = ui_results.generation_target(by_kind["img2img" if name == "inpaint" else name], name)
        ui_results.wire_send(button, target, tabs, [text, image], lambda info, picture: (info, picture),
                             from_gallery=False)


def send_targets(targets: list["GenerationTab"]) -> list[str]:
    """The button names, in A1111's order: the generation tabs, inpaint (with img2img), extras
    (when the page has an Extras tab)."""
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
