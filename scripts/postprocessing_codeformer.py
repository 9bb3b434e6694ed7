"""Extras postprocessing script "CodeFormer" (order 3000): restore faces, blend by "Visibility".

Controls (A1111's): ``enable`` (the accordion), ``codeformer_visibility`` (0..1, default 1) and
``codeformer_weight`` (0 = maximum effect, 1 = minimum effect; default 0). The restoration is
`modules.face_restoration` with CodeFormer's weights (models/Codeformer/codeformer-v0.1.0.pth and
the face detector; nothing is downloaded); infotext keys ``CodeFormer visibility``, ``CodeFormer weight``.
"""
from __future__ import annotations

from typing import Any

from modules import scripts_postprocessing, upscaling
from modules.scripts_postprocessing import PostprocessedImage


class ScriptPostprocessingCodeFormer(scripts_postprocessing.ScriptPostprocessing):
    name = "CodeFormer"
    order = 3000

    def ui(self) -> dict[str, Any]:
        import gradio as gr

        from modules.ui_components import InputAccordion
        with InputAccordion(False, label="CodeFormer", elem_id=self.elem_id_suffix("extras_codeformer")) as enable:
            with gr.Row():
                visibility = gr.Slider(minimum=0.0, maximum=1.0, step=0.001, value=1.0, label="Visibility",
                                       elem_id=self.elem_id_suffix("extras_codeformer_visibility"))
                weight = gr.Slider(minimum=0.0, maximum=1.0, step=0.001, value=0,
                                   label="Weight (0 = maximum effect, 1 = minimum effect)",
                                   elem_id=self.elem_id_suffix("extras_codeformer_weight"))
        return {"enable": enable, "codeformer_visibility": visibility, "codeformer_weight": weight}

    def process(self, pp: PostprocessedImage, enable: Any = None, codeformer_visibility: Any = None,
                codeformer_weight: Any = None) -> None:
        if not enable or not codeformer_visibility:
            return
        pp.image = upscaling.restore_faces_for_extras(pp.image, pp.info, "CodeFormer", codeformer_visibility,
                                                      0 if codeformer_weight is None else codeformer_weight)
