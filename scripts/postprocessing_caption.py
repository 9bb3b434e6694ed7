"""Extras postprocessing script "Caption" (order 4000): A1111's controls, refused when used.

A1111 captions each image with Deepbooru tags and/or a BLIP caption (``pp.caption``, saved as a
``.txt`` beside the image, merged with an existing one as ``postprocessing_existing_caption_action``
says). Both need interrogator models Serena does not include (``/sdapi/v1/interrogate`` refuses
them too), so the script keeps its place, name and controls, does nothing while disabled (the
API's extras requests leave it disabled) and, when enabled, stops the run with an error naming
what is missing instead of saving images without the caption the user asked for.
"""
from __future__ import annotations

from typing import Any

from modules import errors, scripts_postprocessing
from modules.scripts_postprocessing import PostprocessedImage

CHOICES = ("Deepbooru", "BLIP")


class CaptionUnavailable(errors.NotFound):
    """Captioning was asked for; Serena has no interrogator model."""


class ScriptPostprocessingCeption(scripts_postprocessing.ScriptPostprocessing):
    name = "Caption"
    order = 4000

    def ui(self) -> dict[str, Any]:
        import gradio as gr

        from modules.ui_components import InputAccordion
        with InputAccordion(False, label="Caption") as enable:
            option = gr.CheckboxGroup(value=["Deepbooru"], choices=list(CHOICES), show_label=False)
        return {"enable": enable, "option": option}

    def process(self, pp: PostprocessedImage, enable: Any = None, option: Any = None) -> None:
        if not enable or not option:
            return
        chosen = ", ".join(str(x) for x in option)
        raise CaptionUnavailable(
            f"Caption ({chosen}) needs an interrogator model (Deepbooru / BLIP), which Serena does not include; "
            "disable Caption in the Extras tab", field="option")
