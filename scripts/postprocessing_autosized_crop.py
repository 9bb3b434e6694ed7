"""Extras postprocessing script "Auto-sized crop" (order 4000; A1111's ``processing_autosized_crop.py``).

Centre-crops each image to the width×height (multiples of 64 between the dimension bounds, with
an area between the area bounds) whose aspect ratio is within "Error threshold" of the image's,
choosing the largest area ("Maximize area") or the smallest aspect error ("Minimize error"),
and resizes the crop to that size with Lanczos. An image with no such size is left as it is.
"""
from __future__ import annotations

import logging
from typing import Any

from PIL import Image

from modules import scripts_postprocessing
from modules.scripts_postprocessing import PostprocessedImage

log = logging.getLogger(__name__)
OBJECTIVES = ("Maximize area", "Minimize error")


def center_crop(image: Image.Image, w: int, h: int) -> Image.Image:
    """The largest centred ``w:h`` region of ``image``, resized to ``w``×``h`` (Lanczos)."""
    iw, ih = image.size
    if ih / h < iw / w:
        sw = w * ih / h
        box = ((iw - sw) / 2, 0, iw - (iw - sw) / 2, ih)
    else:
        sh = h * iw / w
        box = (0, (ih - sh) / 2, iw, ih - (ih - sh) / 2)
    return image.resize((w, h), Image.Resampling.LANCZOS, box)


def aspect_error(image_w: int, image_h: int, w: int, h: int) -> float:
    """1 minus the ratio of the smaller to the larger of the two aspect ratios (0 = same shape)."""
    ratio = (image_w / image_h) / (w / h)
    return 1 - (ratio if ratio < 1 else 1 / ratio)


def choose_size(image_w: int, image_h: int, mindim: int, maxdim: int, minarea: int, maxarea: int,
                objective: str, threshold: float) -> tuple[int, int] | None:
    """The crop size for ``objective`` among the allowed sizes, or None when none fits."""
    candidates = [(w, h) for w in range(mindim, maxdim + 1, 64) for h in range(mindim, maxdim + 1, 64)
                  if minarea <= w * h <= maxarea and aspect_error(image_w, image_h, w, h) <= threshold]
    if not candidates:
        return None

    def score(wh: tuple[int, int]) -> tuple[float, float]:
        area, error = wh[0] * wh[1], -aspect_error(image_w, image_h, *wh)
        return (area, error) if objective == "Maximize area" else (error, area)

    return max(candidates, key=score)


def multicrop_pic(image: Image.Image, mindim: int, maxdim: int, minarea: int, maxarea: int, objective: str,
                  threshold: float) -> Image.Image | None:
    size = choose_size(image.width, image.height, int(mindim), int(maxdim), minarea, maxarea, objective, threshold)
    return None if size is None else center_crop(image, *size)


class ScriptPostprocessingAutosizedCrop(scripts_postprocessing.ScriptPostprocessing):
    name = "Auto-sized crop"
    order = 4000

    def ui(self) -> dict[str, Any]:
        import gradio as gr

        from modules.ui_components import InputAccordion
        with InputAccordion(False, label="Auto-sized crop") as enable:
            gr.Markdown("Each image is center-cropped with an automatically chosen width and height.")
            with gr.Row():
                mindim = gr.Slider(minimum=64, maximum=2048, step=8, label="Dimension lower bound", value=384,
                                   elem_id="postprocess_multicrop_mindim")
                maxdim = gr.Slider(minimum=64, maximum=2048, step=8, label="Dimension upper bound", value=768,
                                   elem_id="postprocess_multicrop_maxdim")
            with gr.Row():
                minarea = gr.Slider(minimum=64 * 64, maximum=2048 * 2048, step=1, label="Area lower bound",
                                    value=64 * 64, elem_id="postprocess_multicrop_minarea")
                maxarea = gr.Slider(minimum=64 * 64, maximum=2048 * 2048, step=1, label="Area upper bound",
                                    value=640 * 640, elem_id="postprocess_multicrop_maxarea")
            with gr.Row():
                objective = gr.Radio(list(OBJECTIVES), value="Maximize area", label="Resizing objective",
                                     elem_id="postprocess_multicrop_objective")
                threshold = gr.Slider(minimum=0, maximum=1, step=0.01, label="Error threshold", value=0.1,
                                      elem_id="postprocess_multicrop_threshold")
        return {"enable": enable, "mindim": mindim, "maxdim": maxdim, "minarea": minarea, "maxarea": maxarea,
                "objective": objective, "threshold": threshold}

    def process(self, pp: PostprocessedImage, enable: Any = None, mindim: Any = 384, maxdim: Any = 768,
                minarea: Any = 64 * 64, maxarea: Any = 640 * 640, objective: Any = "Maximize area",
                threshold: Any = 0.1) -> None:
        if not enable:
            return
        cropped = multicrop_pic(pp.image, mindim, maxdim, minarea, maxarea, objective, threshold)
        if cropped is None:
            log.info("Auto-sized crop: skipped %dx%d image (no size within the error threshold)",
                     pp.image.width, pp.image.height)
            return
        pp.image = cropped
