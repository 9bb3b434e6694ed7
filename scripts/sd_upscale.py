"""SD upscale (A1111's built-in img2img script): upscale, redraw tile by tile, stitch back.

The init image is enlarged by `scale_factor` with one of `shared.sd_upscalers` (None, Lanczos,
Nearest, then the model upscalers), cut into tiles of the job's width × height that overlap by
`overlap` pixels (`images.split_grid`), and every tile is redrawn by img2img through
`processing.process_images` — `batch_size` tiles per call, `n_iter` upscaled results. The redrawn
tiles are cross-faded back together (`images.combine_grid`).

Arguments, in the order API clients send them (A1111 v1.10): the info text (ignored), `overlap`
(64), `upscaler_index` (an index into `shared.sd_upscalers`, or an upscaler name as a client
sends it: the radio's value is a name; default the first upscaler) and `scale_factor` (2.0).

Seeds as in A1111: the seed is fixed first; result n starts at seed + n and each call after the
first takes the previous call's first seed + 1. The infotext is the first tile's, plus
`SD upscale overlap` and `SD upscale upscaler`; it is also written into the returned images.
Differences: results are saved only when the job saves samples (A1111 saves them even for API
calls that asked not to), a short last batch is run with its own size, and an interrupted job
returns the tiles redrawn so far.
"""
from __future__ import annotations

import math
from typing import Any

import gradio as gr
from PIL import Image

from modules import errors, images, processing, processing_scripts_common as common, scripts, shared
from modules.processing_validation import MAX_SIZE

TITLE = "SD upscale"


def _number(value: Any, name: str) -> float:
    """`value` as a finite number; InvalidParameter naming the argument otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise errors.InvalidParameter(f"{TITLE}: {name} must be a number, got {value!r}", field="script_args")
    return value


def resolve_upscaler(value: Any, upscalers: list) -> Any:
    """The upscaler chosen by an index into `upscalers` or by a name (case-insensitive), as A1111 accepts."""
    names = [u.name for u in upscalers]
    if isinstance(value, str):
        lowered = [name.lower() for name in names]
        if value.lower() in lowered:
            return upscalers[lowered.index(value.lower())]
    elif not isinstance(value, bool) and isinstance(value, (int, float)) and float(value).is_integer() \
            and 0 <= int(value) < len(upscalers):
        return upscalers[int(value)]
    raise errors.InvalidParameter(
        f"{TITLE}: upscaler {value!r} is neither an index 0..{len(names) - 1} nor one of {names}",
        field="script_args")


def check_args(p: Any, overlap: Any, scale_factor: Any) -> tuple[int, float]:
    """The overlap (an integer below the tile size) and the scale factor (positive); 4xx otherwise."""
    common.check_batch_size(TITLE, p)
    overlap = _number(overlap, "overlap")
    if not float(overlap).is_integer() or not 0 <= overlap < min(p.width, p.height):
        raise errors.InvalidParameter(
            f"{TITLE}: overlap must be an integer from 0 to below the tile size "
            f"{min(p.width, p.height)} (width x height {p.width}x{p.height}), got {overlap!r}", field="script_args")
    scale_factor = _number(scale_factor, "scale_factor")
    if scale_factor <= 0:
        raise errors.InvalidParameter(f"{TITLE}: scale_factor must be above 0, got {scale_factor!r}",
                                      field="script_args")
    return int(overlap), float(scale_factor)


def upscale_source(p: Any, upscaler: Any, scale_factor: float) -> Image.Image:
    """The first init image flattened on the background colour, enlarged unless the upscaler is "None"."""
    image = images.flatten(p.init_images[0], shared.opts.img2img_background_color)
    if upscaler.name == "None":
        return image
    width, height = int(image.width * scale_factor // 8 * 8), int(image.height * scale_factor // 8 * 8)
    if not (0 < width <= MAX_SIZE and 0 < height <= MAX_SIZE):
        raise errors.InvalidParameter(
            f"{TITLE}: {image.width}x{image.height} scaled by {scale_factor} is {width}x{height}; each side must "
            f"be between 1 and {MAX_SIZE}", field="script_args")
    return upscaler.upscale(image, scale_factor)


def tile_list(grid: images.Grid) -> list[list]:
    """The grid's `[x, w, tile]` cells, row by row (replacing `cell[2]` replaces the tile in the grid)."""
    return [cell for _y, _h, row in grid.tiles for cell in row]


def redraw_tiles(p: Any, cells: list[list], batch_size: int) -> str | None:
    """img2img every tile in batches of `batch_size`, in place; returns the first call's infotext.

    Stops early (keeping the remaining tiles as they were) when the job is interrupted.
    """
    info = None
    for start in range(0, len(cells), batch_size):
        if common.interrupted():
            break
        batch = cells[start:start + batch_size]
        p.batch_size = len(batch)
        p.init_images = [cell[2] for cell in batch]
        shared.state.job = f"Batch {start // batch_size + 1} out of {math.ceil(len(cells) / batch_size)}"
        processed = processing.process_images(p)
        info = processed.info if info is None else info
        p.seed = processed.seed + 1
        for cell, tile in zip(batch, processed.images[processed.index_of_first_image:]):
            cell[2] = tile
    return info


class Script(scripts.Script):
    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool) -> bool:
        return is_img2img

    def ui(self, is_img2img: bool) -> list:
        upscalers = [u.name for u in shared.sd_upscalers]
        info = gr.HTML("<p style=\"margin-bottom:0.75em\">Upscales the image by the scale factor, then redraws "
                       "it in tiles of the width and height set above.</p>")
        overlap = gr.Slider(minimum=0, maximum=256, step=16, value=64, label="Tile overlap",
                            elem_id=self.elem_id("overlap"))
        scale_factor = gr.Slider(minimum=1.0, maximum=4.0, step=0.05, value=2.0, label="Scale Factor",
                                 elem_id=self.elem_id("scale_factor"))
        upscaler_index = gr.Radio(choices=upscalers, value=upscalers[0], type="index", label="Upscaler",
                                  elem_id=self.elem_id("upscaler_index"))
        return [info, overlap, upscaler_index, scale_factor]

    def run(self, p: Any, _info: Any = None, overlap: Any = 64, upscaler_index: Any = 0,
            scale_factor: Any = 2.0) -> processing.Processed:
        upscaler = resolve_upscaler(upscaler_index, list(shared.sd_upscalers))
        overlap, scale_factor = check_args(p, overlap, scale_factor)
        seed = common.fixed_seed(p)
        p.extra_generation_params["SD upscale overlap"] = overlap
        p.extra_generation_params["SD upscale upscaler"] = upscaler.name
        source = upscale_source(p, upscaler, scale_factor)

        batch_size, upscale_count = p.batch_size, p.n_iter
        save_samples = not p.do_not_save_samples
        p.n_iter = 1
        p.do_not_save_grid = p.do_not_save_samples = True
        grid = images.split_grid(source, tile_w=p.width, tile_h=p.height, overlap=overlap)
        tiles = [cell[2] for cell in tile_list(grid)]
        shared.state.job_count = math.ceil(len(tiles) / batch_size) * upscale_count

        results, infotexts, seeds = [], [], []
        for n in range(upscale_count):
            if common.interrupted():
                break
            p.seed = seed + n
            cells = tile_list(grid)
            for cell, tile in zip(cells, tiles):
                cell[2] = tile
            info = redraw_tiles(p, cells, batch_size) or ""
            combined = images.combine_grid(grid)
            common.stamp_and_save(p, combined, info, seed + n, save_samples, shared.opts.samples_format)
            results.append(combined)
            infotexts.append(info)
            seeds.append(seed + n)
        return processing.Processed(p, results, seed, infotexts[0] if infotexts else "",
                                    all_seeds=seeds or [seed], infotexts=infotexts)
