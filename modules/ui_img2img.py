"""img2img's input sub-tabs, its "Resize to" / "Resize by" size section and the inpaint options.

A1111 v1.10's layout and elem_ids: sub-tabs img2img (`img2img_image`), Sketch (`img2img_sketch`),
Inpaint (`img2maskimg`: draw the mask with a brush whose size the editor's brush tool sets), Inpaint
sketch (`inpaint_sketch`, with "Mask transparency"), Inpaint upload (`img_inpaint_base`,
`img_inpaint_mask`) and Batch (input/output/inpaint-mask folders, PNG info from the inputs). The
chosen sub-tab is kept in the `img2img_mode` field; `modules.img2img_inputs.resolve` turns what it
holds into the init image and mask. The inpaint options show only on the inpaint sub-tabs.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import gradio as gr

from modules import img2img_inputs as inputs, shared, ui_handlers as h
from modules.img2img_batch import PNG_INFO_PROPS

if TYPE_CHECKING:
    from modules.ui import GenerationTab

SUB_TABS = (  # (label, elem_id = Tab id) in mode order
    ("img2img", "img2img_img2img_tab"),
    ("Sketch", "img2img_img2img_sketch_tab"),
    ("Inpaint", "img2img_inpaint_tab"),
    ("Inpaint sketch", "img2img_inpaint_sketch_tab"),
    ("Inpaint upload", "img2img_inpaint_upload_tab"),
    ("Batch", "img2img_batch_tab"),
)
SOURCE_KEYS = inputs.SOURCE_KEYS


def _opt(name: str, default: Any) -> Any:
    value = getattr(shared.opts, name, default)
    return default if value is None else value


def _editor_height() -> int:
    return int(_opt("img2img_editor_height", 720)) // 2


def _editor(kind: type, label: str, elem_id: str, color_option: str, fixed: bool) -> Any:
    """An image editor with PNG values (no lossy round trip) and the option's brush colour."""
    color = str(_opt(color_option, "#ffffff"))
    brush = gr.Brush(default_size="auto", colors=[color], default_color=color, color_mode="fixed" if fixed else "defaults")
    return kind(type="pil", label=label, elem_id=elem_id, sources=["upload", "clipboard"], format="png",
                brush=brush, height=_editor_height(), transforms=(), layers=False)


def create_input_tabs(tab: "GenerationTab") -> gr.Tabs:
    """The sub-tabs; each one's select sets `img2img_mode` and shows or hides the inpaint options."""
    f = tab.fields
    f["img2img_mode"] = gr.State(inputs.IMG2IMG)
    height = _editor_height()
    with gr.Tabs(elem_id="mode_img2img") as mode_tabs:
        tab_items = []
        for mode, (label, elem_id) in enumerate(SUB_TABS):
            with gr.Tab(label, id=elem_id, elem_id=elem_id) as item:
                tab_items.append(item)
                _sub_tab_inputs(tab, mode, height)
    tab.mode_tabs, tab.mode_tab_items = mode_tabs, tab_items
    tab.image_targets = {"img2img": (f["init_image"], inputs.IMG2IMG),
                         "inpaint": (f["init_img_with_mask"], inputs.INPAINT)}
    return mode_tabs


def _sub_tab_inputs(tab: "GenerationTab", mode: int, height: int) -> None:
    f = tab.fields
    if mode == inputs.IMG2IMG:
        f["init_image"] = gr.Image(type="pil", image_mode="RGBA", format="png", label="Image for img2img", height=height,
                                   sources=["upload", "clipboard"], elem_id="img2img_image")
    elif mode == inputs.SKETCH:
        f["sketch"] = _editor(gr.ImageEditor, "Image for img2img", "img2img_sketch",
                              "img2img_sketch_default_brush_color", fixed=False)
    elif mode == inputs.INPAINT:
        f["init_img_with_mask"] = _editor(gr.ImageMask, "Image for inpainting with mask", "img2maskimg",
                                          "img2img_inpaint_mask_brush_color", fixed=True)
    elif mode == inputs.INPAINT_SKETCH:
        f["inpaint_color_sketch"] = _editor(gr.ImageEditor, "Color sketch inpainting", "inpaint_sketch",
                                            "img2img_inpaint_sketch_default_brush_color", fixed=False)
        f["mask_alpha"] = gr.Slider(0, 100, value=0, step=1, label="Mask transparency", elem_id="img2img_mask_alpha")
    elif mode == inputs.INPAINT_UPLOAD:
        f["init_img_inpaint"] = gr.Image(type="pil", image_mode="RGBA", format="png", label="Image for img2img", height=height,
                                         sources=["upload", "clipboard"], elem_id="img_inpaint_base")
        f["init_mask_inpaint"] = gr.Image(type="pil", image_mode="RGBA", format="png", label="Mask", height=height,
                                          sources=["upload", "clipboard"], elem_id="img_inpaint_mask")
    else:
        _batch_inputs(tab)


def _batch_inputs(tab: "GenerationTab") -> None:
    f = tab.fields
    hidden = bool(getattr(shared.cmd_opts, "hide_ui_dir_config", False))
    gr.HTML("<p style='padding-bottom: 1em;' class='text-gray-500'>Process images in a directory on the machine "
            "where the server runs (relative paths are inside the data folder). Leave the output directory "
            "empty to save to the normal img2img folder. With an inpaint mask directory, each image uses the "
            "mask of the same name, or the only mask there.</p>"
            + ("<p>Disabled when launched with --hide-ui-dir-config.</p>" if hidden else ""),
            elem_id="img2img_batch_html")
    f["img2img_batch_input_dir"] = gr.Textbox(label="Input directory", interactive=not hidden,
                                              elem_id="img2img_batch_input_dir")
    f["img2img_batch_output_dir"] = gr.Textbox(label="Output directory", interactive=not hidden,
                                               elem_id="img2img_batch_output_dir")
    f["img2img_batch_inpaint_mask_dir"] = gr.Textbox(label="Inpaint batch mask directory (required for inpaint "
                                                     "batch processing only)", interactive=not hidden,
                                                     elem_id="img2img_batch_inpaint_mask_dir")
    with gr.Accordion("PNG info", open=False, elem_id="img2img_batch_png_info"):
        f["img2img_batch_use_png_info"] = gr.Checkbox(label="Append png info to prompts",
                                                      elem_id="img2img_batch_use_png_info")
        f["img2img_batch_png_info_props"] = gr.CheckboxGroup(list(PNG_INFO_PROPS), label="Parameters to take from "
                                                             "png info", elem_id="img2img_batch_png_info_props")
        f["img2img_batch_png_info_dir"] = gr.Textbox(label="PNG info directory", placeholder="Leave empty to use "
                                                     "input directory", interactive=not hidden,
                                                     elem_id="img2img_batch_png_info_dir")


def create_size_section(tab: "GenerationTab", size_fields: Callable[["GenerationTab"], gr.Button]) -> None:
    """"Resize to" (width/height from `size_fields`, with ⇅ and 📐 detect size) and "Resize by"
    (scale of the input image's own size, with a from → to preview)."""
    f = tab.fields
    f["selected_scale_tab"] = gr.State(0)
    with gr.Tabs(elem_id="img2img_tabs_resize"):
        with gr.Tab("Resize to", id="img2img_tab_resize_to", elem_id="img2img_tab_resize_to") as resize_to:
            detect = size_fields(tab)
        with gr.Tab("Resize by", id="img2img_tab_resize_by", elem_id="img2img_tab_resize_by") as resize_by:
            f["scale_by"] = gr.Slider(0.05, 4.0, value=1.0, step=0.05, label="Scale", elem_id="img2img_scale")
            preview = gr.HTML("", elem_id="img2img_scale_resolution_preview")
    resize_to.select(lambda: 0, outputs=f["selected_scale_tab"], queue=False, show_progress="hidden")
    resize_by.select(lambda: 1, outputs=f["selected_scale_tab"], queue=False, show_progress="hidden")
    sources = [f["img2img_mode"], *(f[k] for k in SOURCE_KEYS)]
    detect.click(detect_size, inputs=[*sources, f["width"], f["height"]], outputs=[f["width"], f["height"]],
                 queue=False, show_progress="hidden")
    for trigger in (f["scale_by"].change, resize_by.select):
        trigger(scale_preview, inputs=[*sources, f["scale_by"]], outputs=preview, queue=False,
                show_progress="hidden")


def _source_values(mode: int, images: tuple) -> dict[str, Any]:
    return {"img2img_mode": mode, **dict(zip(SOURCE_KEYS, images))}


def detect_size(mode: int, *values: Any) -> tuple[Any, Any]:
    """📐: width and height from the chosen sub-tab's image (unchanged when it has none)."""
    *images, width, height = values
    size = inputs.source_size(_source_values(mode, tuple(images)))
    return inputs.snapped_size(size) if size else (width, height)


def scale_preview(mode: int, *values: Any) -> str:
    """The "resize: from W×H to W×H" line under the Scale slider."""
    *images, scale_by = values
    size = inputs.source_size(_source_values(mode, tuple(images)))
    if size is None:
        return "<span class='resolution'>no image selected</span>"
    to = inputs.scaled_size(size, float(scale_by or 1.0))
    return f"<span class='resolution'>resize: from {size[0]}x{size[1]} to {to[0]}x{to[1]}</span>"


def create_inpaint_controls(tab: "GenerationTab") -> gr.Group:
    """Mask blur, mask mode, masked content, inpaint area and its padding (inpaint sub-tabs only)."""
    f = tab.fields
    with gr.Group(visible=False, elem_id="inpaint_controls") as group:
        f["mask_blur"] = gr.Slider(0, 64, value=4, step=1, label="Mask blur", elem_id="img2img_mask_blur")
        f["inpainting_mask_invert"] = gr.Radio(list(h.MASK_MODES), value=h.MASK_MODES[0], type="index",
                                               label="Mask mode", elem_id="img2img_mask_mode")
        f["inpainting_fill"] = gr.Radio(list(h.MASKED_CONTENT), value="original", type="index",
                                        label="Masked content", elem_id="img2img_inpainting_fill")
        with gr.Row():
            f["inpaint_full_res"] = gr.Radio(list(h.INPAINT_AREAS), value=h.INPAINT_AREAS[0], type="index",
                                             label="Inpaint area", elem_id="img2img_inpaint_full_res")
            f["inpaint_full_res_padding"] = gr.Slider(0, 256, value=32, step=4, label="Only masked padding, pixels",
                                                      elem_id="img2img_inpaint_full_res_padding")
    return group


def wire_modes(tab: "GenerationTab", inpaint_controls: gr.Group) -> None:
    """Selecting a sub-tab records its mode and shows the inpaint options on the inpaint ones."""
    for mode, item in enumerate(tab.mode_tab_items):
        item.select(lambda m=mode: mode_outputs(m), outputs=[tab.fields["img2img_mode"], inpaint_controls],
                    queue=False, show_progress="hidden")


def mode_outputs(mode: int) -> tuple[int, Any]:
    """The mode state and the inpaint options' visibility for sub-tab `mode`."""
    return mode, gr.update(visible=mode in inputs.INPAINT_MODES)
