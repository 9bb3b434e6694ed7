"""Extras postprocessing script "GFPGAN" (order 2000): restore faces, blend by "Visibility".

Controls (A1111's): ``enable`` (the accordion) and ``gfpgan_visibility`` (0..1, default 1). The
restoration is `modules.face_restoration` with GFPGAN's weights (models/GFPGAN/GFPGANv1.4.pth and
the face detector; nothing is downloaded); infotext key ``GFPGAN visibility``.
"""
from __future__ import annotations

from typing import Any

from modules import scripts_postprocessing, upscaling
from modules.scripts_postprocessing import PostprocessedImage


class ScriptPostprocessingGfpGan(scripts_postprocessing.ScriptPostprocessing):
    name = "GFPGAN"
    order = 2000

    def ui(self) -> dict[str, Any]:
        import gradio as gr

        from modules.ui_components import InputAccordion
        with InputAccordion(False, label="GFPGAN", elem_id=self.elem_id_suffix("extras_gfpgan")) as enable:
            visibility = gr.Slider(minimum=0.0, maximum=1.0, step=0.001, value=1.0, label="Visibility",
                                   elem_id=self.elem_id_suffix("extras_gfpgan_visibility"))
        return {"enable": enable, "gfpgan_visibility": visibility}

    def process(self, pp: PostprocessedImage, enable: Any = None, gfpgan_visibility: Any = None) -> None:
        if not enable or not gfpgan_visibility:
            return
        pp.image = upscaling.restore_faces_for_extras(pp.image, pp.info, "GFPGAN", gfpgan_visibility)
