"""Poor man's outpainting (A1111's built-in img2img script): grow the canvas, inpaint the border tiles.

The init image is placed on a larger black canvas (grown by `pixels` in each chosen direction, the
growth rounded up so each grown side is a multiple of 64 and split between opposite sides as
A1111 does), the new border is masked, and the canvas is cut into tiles of the job's width ×
height overlapping by `pixels` (`images.split_grid`). Each tile that touches the new border is
inpainted through `processing.process_images` with the chosen masked content; tiles wholly inside
the original image are kept. The tiles are stitched back with `images.combine_grid`.

Arguments, in the order API clients send them (A1111 v1.10): `pixels` (128), `mask_blur` (4),
`inpainting_fill` (an index 0–3 or its name: fill, original, latent noise, latent nothing; the
radio's value is a name, default "fill") and `direction` (a list of left/right/up/down, default
all four). `pixels` must be below the tile size, as the tiles overlap by that much.

Seeds as A1111: each tile's call takes the previous call's seed + 1; the infotext is the first
tile's. Difference: a side that is not grown is not rounded up to 64 either (A1111 pads it with
black), and results are saved only when the job saves samples.
"""
from __future__ import annotations

from typing import Any

import gradio as gr
from PIL import Image, ImageDraw

from modules import errors, images, processing, processing_scripts_common as common, scripts, shared

TITLE = "Poor man's outpainting"
DIRECTIONS = common.DIRECTIONS
FILLS = ("fill", "original", "latent noise", "latent nothing")


def parse_fill(value: Any) -> int:
    """Masked content as img2img's `inpainting_fill` index, from an index or its name."""
    if isinstance(value, str) and value.strip().lower() in FILLS:
        return FILLS.index(value.strip().lower())
    if not isinstance(value, bool) and isinstance(value, (int, float)) and value in range(len(FILLS)):
        return int(value)
    raise errors.InvalidParameter(f"{TITLE}: inpainting_fill must be 0-3 or one of {list(FILLS)}, got {value!r}",
                                  field="script_args")


def canvas_margins(width: int, height: int, pixels: int, directions: set[str]) -> tuple[int, int, int, int]:
    """(left, right, up, down) growth: each grown axis ends on a multiple of 64, split between its
    two sides in proportion to what each asked for (A1111's arithmetic)."""
    def asked(side: str) -> int:
        return pixels if side in directions else 0

    left, right = common.split_growth(width, asked("left"), asked("right"))
    up, down = common.split_growth(height, asked("up"), asked("down"))
    return left, right, up, down


def keep_mask(size: tuple[int, int], margins: tuple[int, int, int, int], inset: int) -> Image.Image:
    """An "L" mask of the grown canvas: white where new content goes, black over the original
    image shrunk by `inset` pixels on each grown side."""
    left, right, up, down = margins
    mask = Image.new("L", size, "white")
    ImageDraw.Draw(mask).rectangle((
        left + (inset if left else 0), up + (inset if up else 0),
        size[0] - right - (inset if right else 0), size[1] - down - (inset if down else 0)), fill="black")
    return mask


def is_inside(x: int, y: int, w: int, h: int, size: tuple[int, int], margins: tuple[int, int, int, int]) -> bool:
    """Whether the tile at (x, y) of w × h lies wholly within the original image."""
    left, right, up, down = margins
    return x >= left and x + w <= size[0] - right and y >= up and y + h <= size[1] - down


class Script(scripts.Script):
    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool) -> bool:
        return is_img2img

    def ui(self, is_img2img: bool) -> list:
        if not is_img2img:
            return []
        pixels = gr.Slider(minimum=8, maximum=256, step=8, value=128, label="Pixels to expand",
                           elem_id=self.elem_id("pixels"))
        mask_blur = gr.Slider(minimum=0, maximum=64, step=1, value=4, label="Mask blur",
                              elem_id=self.elem_id("mask_blur"))
        inpainting_fill = gr.Radio(choices=list(FILLS), value=FILLS[0], type="index", label="Masked content",
                                   elem_id=self.elem_id("inpainting_fill"))
        direction = gr.CheckboxGroup(choices=list(DIRECTIONS), value=list(DIRECTIONS), label="Outpainting direction",
                                     elem_id=self.elem_id("direction"))
        return [pixels, mask_blur, inpainting_fill, direction]

    def run(self, p: Any, pixels: Any = 128, mask_blur: Any = 4, inpainting_fill: Any = 0,
            direction: Any = DIRECTIONS) -> processing.Processed:
        pixels = common.checked_number(TITLE, pixels, "pixels", 1, integer=True)
        mask_blur = common.checked_number(TITLE, mask_blur, "mask_blur", 0, integer=True)
        fill, directions = parse_fill(inpainting_fill), set(common.parse_directions(TITLE, direction))
        if pixels >= min(p.width, p.height):
            raise errors.InvalidParameter(
                f"{TITLE}: pixels ({pixels}) must be below the tile size {min(p.width, p.height)} "
                f"(width x height {p.width}x{p.height}): the tiles overlap by that much", field="script_args")
        processing.fix_seed(p)
        p.mask_blur, p.inpainting_fill, p.inpaint_full_res = mask_blur * 2, fill, False
        grids, work = border_tiles(p, pixels, mask_blur, directions)
        save_samples = not p.do_not_save_samples
        p.n_iter, p.batch_size = 1, 1
        p.do_not_save_grid = p.do_not_save_samples = True
        seed, info = inpaint_tiles(p, work)

        combined = images.combine_grid(grids[0])
        common.stamp_and_save(p, combined, info, seed, save_samples, shared.opts.grid_format)
        return processing.Processed(p, [combined], seed, info)


def border_tiles(p: Any, pixels: int, mask_blur: int, directions: set[str]) -> tuple[list[images.Grid], list[tuple]]:
    """The grown canvas, its inpainting mask and its latent mask cut into the job's tiles, and the
    `(canvas cell, mask tile, latent mask tile)` of every tile touching the new border."""
    source = images.flatten(p.init_images[0], shared.opts.img2img_background_color)
    margins = canvas_margins(source.width, source.height, pixels, directions)
    left, right, up, down = margins
    size = (source.width + left + right, source.height + up + down)
    common.check_grown_size(TITLE, *size)
    canvas = Image.new("RGB", size)
    canvas.paste(source, (left, up))
    grids = [images.split_grid(im, tile_w=p.width, tile_h=p.height, overlap=pixels)
             for im in (canvas, keep_mask(size, margins, mask_blur * 2), keep_mask(size, margins, mask_blur // 2))]
    work = [(cell, mask_cell[2], latent_cell[2])
            for (y, h, row), (_, _, mask_row), (_, _, latent_row) in zip(*(g.tiles for g in grids))
            for cell, mask_cell, latent_cell in zip(row, mask_row, latent_row)
            if not is_inside(cell[0], y, cell[1], h, size, margins)]
    return grids, work


def inpaint_tiles(p: Any, work: list[tuple]) -> tuple[int, str]:
    """Inpaint each tile in place, one `process_images` call each with the previous seed + 1;
    returns the first call's seed and infotext. Stops early when the job is interrupted."""
    shared.state.job_count = len(work)
    seed, info = p.seed, ""
    for i, (cell, tile_mask, tile_latent_mask) in enumerate(work):
        if common.interrupted():
            break
        p.init_images, p.image_mask, p.latent_mask = [cell[2]], tile_mask, tile_latent_mask
        shared.state.job = f"Batch {i + 1} out of {len(work)}"
        processed = processing.process_images(p)
        if i == 0:
            seed, info = processed.seed, processed.info
        p.seed = processed.seed + 1
        if processed.images:
            cell[2] = processed.images[processed.index_of_first_image]
    return seed, info
