"""Extras postprocessing script "Create flipped copies" (order 4000).

Adds mirrored copies of the image as extra images, in this order: "Horizontal" (left-right
mirror), "Vertical" (top-bottom flip), "Both" (rotated half a turn). Controls (A1111's):
``enable`` and ``option`` (a checkbox group, default ["Horizontal"]).
"""
from __future__ import annotations

from typing import Any

from PIL import Image

from modules import scripts_postprocessing
from modules.scripts_postprocessing import PostprocessedImage

CHOICES = ("Horizontal", "Vertical", "Both")
_TRANSFORMS = {
    "Horizontal": (Image.Transpose.FLIP_LEFT_RIGHT,),
    "Vertical": (Image.Transpose.FLIP_TOP_BOTTOM,),
    "Both": (Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.FLIP_LEFT_RIGHT),
}


def flipped(image: Image.Image, choice: str) -> Image.Image:
    """``image`` flipped as the choice "Horizontal", "Vertical" or "Both" says."""
    for transform in _TRANSFORMS[choice]:
        image = image.transpose(transform)
    return image


class ScriptPostprocessingCreateFlippedCopies(scripts_postprocessing.ScriptPostprocessing):
    name = "Create flipped copies"
    order = 4000

    def ui(self) -> dict[str, Any]:
        import gradio as gr

        from modules.ui_components import InputAccordion
        with InputAccordion(False, label="Create flipped copies") as enable:
            with gr.Row():
                option = gr.CheckboxGroup(value=["Horizontal"], choices=list(CHOICES), show_label=False)
        return {"enable": enable, "option": option}

    def process(self, pp: PostprocessedImage, enable: Any = None, option: Any = None) -> None:
        if not enable:
            return
        chosen = list(option or [])
        pp.extra_images.extend(flipped(pp.image, choice) for choice in CHOICES if choice in chosen)
