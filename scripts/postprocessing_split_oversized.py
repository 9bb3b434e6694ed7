"""Extras postprocessing script "Split oversized images" (order 4000).

When the image is much longer than the target size another script announced (Upscale's
``pp.shared.target_width/height``), it is resized so its short side fits the target and cut
into overlapping target-sized tiles along its long side: the first tile replaces the image,
the others become extra images. Controls (A1111's): ``enable``, ``split_threshold`` ("Threshold",
0.5) and ``overlap_ratio`` ("Overlap ratio", 0.2).

A1111's rule, kept: with ``ratio`` = the target's aspect over the image's (long side over short
side, so below 1 means "longer than the target"), nothing happens when ``ratio >= 1`` and
``ratio > threshold``; the tile count is ``ceil((L - T·overlap) / (T·(1 - overlap)))`` for a
resized long side ``L`` and tile length ``T``, the tiles spread evenly from one end to the other.
"""
from __future__ import annotations

import math
from typing import Any, Iterator

from PIL import Image

from modules import scripts_postprocessing
from modules.scripts_postprocessing import PostprocessedImage


def split_pic(image: Image.Image, inverse_xy: bool, width: int, height: int,
              overlap_ratio: float) -> Iterator[Image.Image]:
    """Tiles of ``width``×``height`` along the long side of ``image`` (resized to fit the short side).

    ``inverse_xy`` False splits a tall image top to bottom; True splits a wide one left to right.
    """
    if inverse_xy:
        source_short, source_long, tile_short, tile_long = image.height, image.width, height, width
    else:
        source_short, source_long, tile_short, tile_long = image.width, image.height, width, height
    long_side = source_long * tile_short // source_short
    image = image.resize((long_side, tile_short) if inverse_xy else (tile_short, long_side))
    count = math.ceil((long_side - tile_long * overlap_ratio) / (tile_long * (1.0 - overlap_ratio)))
    step = (long_side - tile_long) / (count - 1) if count > 1 else 0
    for i in range(count):
        offset = int(step * i)
        if inverse_xy:
            yield image.crop((offset, 0, offset + tile_long, tile_short))
        else:
            yield image.crop((0, offset, tile_short, offset + tile_long))


class ScriptPostprocessingSplitOversized(scripts_postprocessing.ScriptPostprocessing):
    name = "Split oversized images"
    order = 4000

    def ui(self) -> dict[str, Any]:
        import gradio as gr

        from modules.ui_components import InputAccordion
        with InputAccordion(False, label="Split oversized images") as enable:
            with gr.Row():
                threshold = gr.Slider(label="Threshold", value=0.5, minimum=0.0, maximum=1.0, step=0.05,
                                      elem_id="postprocess_split_threshold")
                overlap = gr.Slider(label="Overlap ratio", value=0.2, minimum=0.0, maximum=0.9, step=0.05,
                                    elem_id="postprocess_overlap_ratio")
        return {"enable": enable, "split_threshold": threshold, "overlap_ratio": overlap}

    def process(self, pp: PostprocessedImage, enable: Any = None, split_threshold: Any = 0.5,
                overlap_ratio: Any = 0.2) -> None:
        if not enable:
            return
        width, height = pp.shared.target_width, pp.shared.target_height
        if not width or not height:
            return
        if pp.image.height > pp.image.width:
            ratio = (pp.image.width * height) / (pp.image.height * width)
            inverse_xy = False
        else:
            ratio = (pp.image.height * width) / (pp.image.width * height)
            inverse_xy = True
        if ratio >= 1.0 and ratio > split_threshold:
            return
        first, *others = split_pic(pp.image, inverse_xy, width, height, overlap_ratio)
        pp.image = first
        pp.extra_images = [pp.create_copy(tile) for tile in others]
