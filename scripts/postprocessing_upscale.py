"""Extras postprocessing scripts "Upscale" and "Simple Upscale" (A1111's names, controls and infotext).

"Upscale" (order 1000) upscales with "Upscaler 1", optionally blends in "Upscaler 2" by its
visibility, either scaling by a factor ("Scale by": Resize, Max side length) or to a size
("Scale to": Width, Height, Crop to fit). Its first pass announces the target size in
``pp.shared`` for the scripts that split or crop to it. Infotext keys: ``Postprocess upscale by``
or ``Postprocess upscale to``, ``Max side length``, ``Postprocess crop to``, ``Postprocess
upscaler``, ``Postprocess upscaler 2``.

"Simple Upscale" (order 900) is the one-dropdown variant A1111 keeps for the txt2img/img2img
postprocessing; it is ``main_ui_only``, so the Extras runner leaves it out.

The upscale itself is `modules.upscaling.upscale_for_extras` (results are cached for the last
``upscaling_max_images_in_cache`` requests, as in A1111).
"""
from __future__ import annotations

import re
from typing import Any

from modules import scripts_postprocessing, shared, upscaling
from modules.scripts_postprocessing import PostprocessedImage

SWITCH_SYMBOL = "\u21c5"


def find_optional_upscaler(name: str | None) -> upscaling.UpscalerData | None:
    """The upscaler called ``name``; None for None or "None".

    Raises:
        errors.InvalidParameter: an unknown name (the message lists the valid ones).
    """
    if name is None or name == "None":
        return None
    return upscaling.find_upscaler(name)


def scale_from_upscaler_name(name: str | None) -> int | None:
    """The factor a name such as "4x-UltraSharp" or "ESRGAN x2" announces, else None."""
    match = re.search(r"(\d)[xX]|[xX](\d)", name or "")
    return int(match.group(1) or match.group(2)) if match else None


class ScriptPostprocessingUpscale(scripts_postprocessing.ScriptPostprocessing):
    name = "Upscale"
    order = 1000

    def ui(self) -> dict[str, Any]:
        import gradio as gr

        from modules.ui_components import FormRow, InputAccordion, ToolButton
        names = [u.name for u in shared.sd_upscalers]
        selected_tab = gr.Number(value=0, visible=False)
        with InputAccordion(True, label="Upscale", elem_id=self.elem_id_suffix("extras_upscale")) as enabled:
            with FormRow():
                upscaler_1 = gr.Dropdown(label="Upscaler 1", choices=names, value=names[0],
                                         elem_id=self.elem_id_suffix("extras_upscaler_1"))
            with FormRow():
                upscaler_2 = gr.Dropdown(label="Upscaler 2", choices=names, value=names[0],
                                         elem_id=self.elem_id_suffix("extras_upscaler_2"))
                upscaler_2_visibility = gr.Slider(minimum=0.0, maximum=1.0, step=0.001, value=0.0,
                                                  label="Upscaler 2 visibility",
                                                  elem_id=self.elem_id_suffix("extras_upscaler_2_visibility"))
            with gr.Tabs(elem_id=self.elem_id_suffix("extras_resize_mode")):
                with gr.TabItem("Scale by", elem_id=self.elem_id_suffix("extras_scale_by_tab")) as tab_by:
                    with gr.Row():
                        upscale_by = gr.Slider(minimum=1.0, maximum=8.0, step=0.05, value=4, label="Resize",
                                               elem_id=self.elem_id_suffix("extras_upscaling_resize"), scale=4)
                        max_side_length = gr.Number(value=0, label="Max side length", step=8, minimum=0,
                                                    info="0 = no limit", min_width=160,
                                                    elem_id=self.elem_id_suffix("extras_upscale_max_side_length"))
                with gr.TabItem("Scale to", elem_id=self.elem_id_suffix("extras_scale_to_tab")) as tab_to:
                    with FormRow():
                        with gr.Column(scale=4):
                            to_width = gr.Slider(minimum=64, maximum=8192, step=8, value=512, label="Width",
                                                 elem_id=self.elem_id_suffix("extras_upscaling_resize_w"))
                            to_height = gr.Slider(minimum=64, maximum=8192, step=8, value=512, label="Height",
                                                  elem_id=self.elem_id_suffix("extras_upscaling_resize_h"))
                        with gr.Column(scale=1, elem_classes="dimensions-tools"):
                            switch = ToolButton(value=SWITCH_SYMBOL,
                                                elem_id=self.elem_id_suffix("upscaling_res_switch_btn"))
                            crop = gr.Checkbox(label="Crop to fit", value=True,
                                               elem_id=self.elem_id_suffix("extras_upscaling_crop"))

        switch.click(lambda w, h: (h, w), inputs=[to_width, to_height], outputs=[to_width, to_height],
                     show_progress="hidden")
        tab_by.select(fn=lambda: 0, inputs=[], outputs=[selected_tab])
        tab_to.select(fn=lambda: 1, inputs=[], outputs=[selected_tab])
        upscaler_1.change(self._scale_for_upscaler, inputs=[upscaler_1], outputs=[upscale_by],
                          show_progress="hidden")
        return {
            "upscale_enabled": enabled,
            "upscale_mode": selected_tab,
            "upscale_by": upscale_by,
            "max_side_length": max_side_length,
            "upscale_to_width": to_width,
            "upscale_to_height": to_height,
            "upscale_crop": crop,
            "upscaler_1_name": upscaler_1,
            "upscaler_2_name": upscaler_2,
            "upscaler_2_visibility": upscaler_2_visibility,
        }

    @staticmethod
    def _scale_for_upscaler(name: str) -> Any:
        """With ``set_scale_by_when_changing_upscaler``, "Resize" follows the factor in the upscaler's name."""
        import gradio as gr
        scale = scale_from_upscaler_name(name) if shared.opts.set_scale_by_when_changing_upscaler else None
        return gr.update() if scale is None else gr.update(value=scale)

    def process_firstpass(self, pp: PostprocessedImage, upscale_enabled: Any = True, upscale_mode: Any = 1,
                          upscale_by: Any = 2.0, max_side_length: Any = 0, upscale_to_width: Any = None,
                          upscale_to_height: Any = None, upscale_crop: Any = False, upscaler_1_name: Any = None,
                          upscaler_2_name: Any = None, upscaler_2_visibility: Any = 0.0) -> None:
        if upscale_by is None and upscale_mode != 1:
            return
        pp.shared.target_width, pp.shared.target_height = upscaling.extras_target_size(
            pp.image.width, pp.image.height, int(upscale_mode or 0), float(upscale_by or 0),
            int(max_side_length or 0), upscale_to_width, upscale_to_height)

    def process(self, pp: PostprocessedImage, upscale_enabled: Any = True, upscale_mode: Any = 1,
                upscale_by: Any = 2.0, max_side_length: Any = 0, upscale_to_width: Any = None,
                upscale_to_height: Any = None, upscale_crop: Any = False, upscaler_1_name: Any = None,
                upscaler_2_name: Any = None, upscaler_2_visibility: Any = 0.0) -> None:
        if not upscale_enabled:
            return
        first = find_optional_upscaler(upscaler_1_name)
        second = find_optional_upscaler(upscaler_2_name)
        if first is None:
            return
        geometry = (upscale_mode or 0, upscale_by, max_side_length or 0, upscale_to_width, upscale_to_height,
                    upscale_crop)
        upscaled = upscaling.upscale_for_extras(pp.image, pp.info, first, *geometry)
        pp.info["Postprocess upscaler"] = first.name
        if shared.opts.use_upscaler_name_as_suffix:
            pp.nametags.append(first.name)
        visibility = upscaler_2_visibility or 0
        if second is not None and visibility > 0:
            other = upscaling.upscale_for_extras(pp.image, pp.info, second, *geometry)
            upscaled = upscaling.blend_upscales(upscaled, other, visibility)
            pp.info["Postprocess upscaler 2"] = second.name
            if shared.opts.use_upscaler_name_as_suffix:
                pp.nametags.append(f"{second.name} {visibility}")
        pp.image = upscaled

    def image_changed(self) -> None:
        upscaling.clear_upscale_cache()


class ScriptPostprocessingUpscaleSimple(ScriptPostprocessingUpscale):
    name = "Simple Upscale"
    order = 900
    main_ui_only = True

    def ui(self) -> dict[str, Any]:
        import gradio as gr

        from modules.ui_components import FormRow
        names = [u.name for u in shared.sd_upscalers]
        with FormRow():
            upscaler_name = gr.Dropdown(label="Upscaler", choices=names, value=names[0])
            upscale_by = gr.Slider(minimum=0.05, maximum=8.0, step=0.05, value=2, label="Upscale by")
        return {"upscale_by": upscale_by, "upscaler_name": upscaler_name}

    def process_firstpass(self, pp: PostprocessedImage, upscale_by: Any = 2.0,  # type: ignore[override]
                          upscaler_name: Any = None) -> None:
        pp.shared.target_width = int(pp.image.width * float(upscale_by or 0))
        pp.shared.target_height = int(pp.image.height * float(upscale_by or 0))

    def process(self, pp: PostprocessedImage, upscale_by: Any = 2.0,  # type: ignore[override]
                upscaler_name: Any = None) -> None:
        upscaler = find_optional_upscaler(upscaler_name)
        if upscaler is None:
            return
        pp.image = upscaling.upscale_for_extras(pp.image, pp.info, upscaler, 0, float(upscale_by), 0, 0, 0, False)
        pp.info["Postprocess upscaler"] = upscaler.name
