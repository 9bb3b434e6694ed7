"""Outpainting mk2 (A1111's built-in img2img script): grow the image one side at a time, seeding
the new area with noise that matches the picture's spectrum and colours.

For each chosen side (left, right, up, down, in that order) the image is put on a canvas grown on
that side, the new strip is filled with "matched noise" (:func:`matched_noise`), and a window of
at most the job's width × height at that edge is inpainted with masked content "original"
through `processing.process_images`; the result is pasted back and the next side starts from it.
The growth is rounded so each grown axis ends on a multiple of 64, as A1111 does.

Arguments, in the order API clients send them (A1111 v1.10): the info text (ignored), `pixels`
(128), `mask_blur` (8), `direction` (a list of left/right/up/down, default all four), `noise_q`
(the fall-off exponent, 1.0) and `color_variation` (0.05).

With batch size b each call inpaints b images; n_iter repeats the whole growth, and a grid comes
first when there are several results. The job's seed and infotext are the first call's; each image
carries the infotext of its own first call. Differences from A1111: the seed is fixed before the
first call and batch i starts at seed + i × b (A1111 reuses one seed for every batch, so fixed
seeds gave identical batches), each image has its own infotext (A1111 gives all the first one),
and the results are saved only when the job saves samples / grids.
"""
from __future__ import annotations

import math
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image, ImageDraw

from modules import images, processing, processing_scripts_common as common, scripts, shared

TITLE = "Outpainting mk2"
DIRECTIONS = common.DIRECTIONS


# --- matched noise -----------------------------------------------------------------------------------
def _spectrum(x: np.ndarray) -> np.ndarray:
    """Orthonormal 2-D FFT over the first two axes, zero frequency in the centre."""
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=(0, 1)), axes=(0, 1), norm="ortho"), axes=(0, 1))


def _inverse_spectrum(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_spectrum`."""
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(x, axes=(0, 1)), axes=(0, 1), norm="ortho"), axes=(0, 1))


def _falloff_window(height: int, width: int) -> np.ndarray:
    """1 / ((x² + 1)(y² + 1)) over centred coordinates in [-1, 1) stretched by the aspect ratio:
    a low-pass weight for a centred spectrum."""
    shortest = min(height, width)
    y = (np.arange(height) / height * 2.0 - 1.0) * (height / shortest)
    x = (np.arange(width) / width * 2.0 - 1.0) * (width / shortest)
    return 1.0 / np.outer(y ** 2 + 1.0, x ** 2 + 1.0)


def match_histogram(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """`values` (N×C) remapped channel by channel so their distribution is that of `reference` (M×C)."""
    out = np.empty_like(values)
    for c in range(values.shape[1]):
        src_values, src_index, src_counts = np.unique(values[:, c], return_inverse=True, return_counts=True)
        ref_values, ref_counts = np.unique(reference[:, c], return_counts=True)
        src_quantiles = np.cumsum(src_counts) / values.shape[0]
        ref_quantiles = np.cumsum(ref_counts) / reference.shape[0]
        out[:, c] = np.interp(src_quantiles, ref_quantiles, ref_values)[src_index.reshape(-1)]
    return out


def matched_noise(image: np.ndarray, mask: np.ndarray, noise_q: float = 1.0, color_variation: float = 0.05,
                  seed: int = 0) -> np.ndarray:
    """Fill the masked area of `image` with noise shaped like the unmasked picture.

    The noise's spectrum takes the magnitude (raised to `noise_q`: lower keeps more fine detail)
    and the phase of the picture's spectrum, whose masked area is first filled with the mean
    colour; it is then histogram-matched per channel to the unmasked pixels. `color_variation`
    blends the starting noise from grey (0) to fully coloured (1). A fixed `seed` keeps the result
    a function of the inputs alone.

    Args:
        image: H×W×3 floats in [0, 1].
        mask: H×W floats in [0, 1]; 1 where new content goes.

    Returns:
        H×W×3 floats in [0, 1]: `image` outside the mask, the noise inside (blended at soft edges).
    """
    mask3 = mask[..., None]
    known = mask < 1e-3
    windowed = image * (1.0 - mask3)
    windowed = windowed / max(float(windowed.max()), 1e-8)
    fill_colour = image[known].mean(axis=0) if known.any() else image.reshape(-1, 3).mean(axis=0)
    windowed = windowed + fill_colour * mask3
    source = _spectrum(windowed)
    magnitude = np.abs(source)
    phase = source / np.where(magnitude > 0, magnitude, 1.0)

    noise = np.random.default_rng(seed).random(image.shape)
    noise = noise * color_variation + noise.mean(axis=2, keepdims=True) * (1.0 - color_variation)
    noise = np.real(_inverse_spectrum(_spectrum(noise) * _falloff_window(*image.shape[:2])[..., None]))
    shaped = np.abs(_spectrum(noise)) ** 2 * magnitude ** noise_q * phase
    shaped = np.real(_inverse_spectrum(shaped))
    shaped = (shaped - shaped.min()) / max(float(shaped.max() - shaped.min()), 1e-8)

    unknown = mask > 1e-6
    if known.any() and unknown.any():
        shaped[unknown] = match_histogram(shaped[unknown], image[known])
    return np.clip(image * (1.0 - mask3) + shaped * mask3, 0.0, 1.0)


# --- arguments ---------------------------------------------------------------------------------------
def _number(value: Any, name: str, low: float, high: float | None = None, integer: bool = False) -> float:
    """`value` as a finite number in [low, high] (an integer when asked); 4xx otherwise."""
    return common.checked_number(TITLE, value, name, low, high, integer)


def growth(width: int, height: int, pixels: int, directions: list[str]) -> dict[str, int]:
    """Pixels added on each chosen side: each grown axis ends on a multiple of 64, split between its
    two sides in proportion to what each asked for (A1111's arithmetic)."""
    asked = {d: (pixels if d in directions else 0) for d in DIRECTIONS}
    left, right = common.split_growth(width, asked["left"], asked["right"])
    up, down = common.split_growth(height, asked["up"], asked["down"])
    return {d: n for d, n in zip(DIRECTIONS, (left, right, up, down)) if n > 0}


# --- one side ----------------------------------------------------------------------------------------
def _round64(n: int) -> int:
    return math.ceil(n / 64) * 64


def _mask(size: tuple[int, int], keep: tuple[int, int, int, int]) -> Image.Image:
    """An "L" mask of `size`: black (kept) inside the `keep` rectangle, white (new content) elsewhere."""
    mask = Image.new("L", size, "white")
    ImageDraw.Draw(mask).rectangle(keep, fill="black")
    return mask


def _keep_box(side: str, amount: int, inset: int, res_w: int, res_h: int) -> tuple[int, int, int, int]:
    """The kept part of the image grown by `amount` on `side` (to res_w × res_h), `inset` into it."""
    return (amount + inset if side == "left" else 0, amount + inset if side == "up" else 0,
            res_w - amount - inset if side == "right" else res_w, res_h - amount - inset if side == "down" else res_h)


def expand_side(p: Any, imgs: list[Image.Image], side: str, amount: int, blur: int, tile_size: tuple[int, int],
                noise_q: float, color_variation: float) -> tuple[list[Image.Image], Any]:
    """Grow every image by `amount` on `side`: matched noise in the new strip, then one
    `process_images` call inpaints the edge window of at most `tile_size`. Returns the grown
    images and the call's `Processed`."""
    horizontal = side in ("left", "right")
    res_w = imgs[0].width + (amount if horizontal else 0)
    res_h = imgs[0].height + (0 if horizontal else amount)
    canvas_w, canvas_h = _round64(res_w), _round64(res_h)
    window_w = min(tile_size[0], canvas_w) if horizontal else canvas_w
    window_h = canvas_h if horizontal else min(tile_size[1], canvas_h)
    left = 0 if side == "left" else canvas_w - window_w
    top = 0 if side == "up" else canvas_h - window_h
    window = (left, top, left + window_w, top + window_h)
    mask = _mask((canvas_w, canvas_h), _keep_box(side, amount, blur, res_w, res_h))

    noised = []
    for img in imgs:
        canvas = Image.new("RGB", (canvas_w, canvas_h))
        canvas.paste(img, (amount if side == "left" else 0, amount if side == "up" else 0))
        filled = matched_noise(np.asarray(canvas, dtype=np.float64) / 255.0,
                               np.asarray(mask, dtype=np.float64) / 255.0, noise_q, color_variation)
        noised.append(Image.fromarray((filled * 255.0).round().astype(np.uint8), mode="RGB"))

    p.width, p.height = window_w, window_h
    p.init_images = [im.crop(window) for im in noised]
    p.image_mask = mask.crop(window)
    p.latent_mask = _mask((canvas_w, canvas_h), _keep_box(side, amount, blur * 2, res_w, res_h)).crop(window)
    processed = processing.process_images(p)
    results = processed.images[processed.index_of_first_image:]
    grown = []
    for im, result in zip(noised, results):
        im.paste(result, window[:2])
        grown.append(im.crop((0, 0, res_w, res_h)))
    return grown, processed


class Script(scripts.Script):
    def title(self) -> str:
        return TITLE

    def show(self, is_img2img: bool) -> bool:
        return is_img2img

    def ui(self, is_img2img: bool) -> list:
        if not is_img2img:
            return []
        info = gr.HTML("<p style=\"margin-bottom:0.75em\">Works best with many sampling steps (80-100), "
                       "Euler a and a denoising strength around 0.8.</p>")
        pixels = gr.Slider(minimum=8, maximum=256, step=8, value=128, label="Pixels to expand",
                           elem_id=self.elem_id("pixels"))
        mask_blur = gr.Slider(minimum=0, maximum=64, step=1, value=8, label="Mask blur",
                              elem_id=self.elem_id("mask_blur"))
        direction = gr.CheckboxGroup(choices=list(DIRECTIONS), value=list(DIRECTIONS), label="Outpainting direction",
                                     elem_id=self.elem_id("direction"))
        noise_q = gr.Slider(minimum=0.0, maximum=4.0, step=0.01, value=1.0,
                            label="Fall-off exponent (lower=higher detail)", elem_id=self.elem_id("noise_q"))
        color_variation = gr.Slider(minimum=0.0, maximum=1.0, step=0.01, value=0.05, label="Color variation",
                                    elem_id=self.elem_id("color_variation"))
        return [info, pixels, mask_blur, direction, noise_q, color_variation]

    def run(self, p: Any, _info: Any = None, pixels: Any = 128, mask_blur: Any = 8, direction: Any = DIRECTIONS,
            noise_q: Any = 1.0, color_variation: Any = 0.05) -> processing.Processed:
        pixels = _number(pixels, "pixels", 1, integer=True)
        mask_blur = _number(mask_blur, "mask_blur", 0, 64, integer=True)
        directions = common.parse_directions(TITLE, direction)
        noise_q = _number(noise_q, "noise_q", 0.0)
        color_variation = _number(color_variation, "color_variation", 0.0, 1.0)
        common.check_batch_size(TITLE, p)
        source = images.flatten(p.init_images[0], shared.opts.img2img_background_color)
        amounts = growth(source.width, source.height, pixels, directions)
        common.check_grown_size(TITLE, source.width + amounts.get("left", 0) + amounts.get("right", 0),
                                source.height + amounts.get("up", 0) + amounts.get("down", 0))
        horizontal, vertical = any(d in amounts for d in ("left", "right")), any(d in amounts for d in ("up", "down"))
        p.mask_blur_x, p.mask_blur_y = (mask_blur * 4 if horizontal else 0), (mask_blur * 4 if vertical else 0)
        p.inpaint_full_res, p.inpainting_fill = False, 1
        seed = common.fixed_seed(p)
        save_samples, save_grid = not p.do_not_save_samples, not p.do_not_save_grid
        p.do_not_save_samples = p.do_not_save_grid = True
        tile_size, batch_count, batch_size = (p.width, p.height), p.n_iter, p.batch_size
        p.n_iter = 1
        shared.state.job_count = batch_count * len(amounts)

        first: Any = None
        results: list[Image.Image] = []
        infotexts: list[str] = []
        for i in range(batch_count):
            if common.interrupted():
                break
            shared.state.job = f"Batch {i + 1} out of {batch_count}"
            p.seed = seed + i * batch_size
            imgs, texts = [source] * batch_size, None
            for side, amount in amounts.items():
                imgs, processed = expand_side(p, imgs, side, amount, mask_blur, tile_size, noise_q, color_variation)
                first = processed if first is None else first
                texts = texts or processed.infotexts[processed.index_of_first_image:]
            results += imgs
            infotexts += texts or []
        return finish(p, results, infotexts, first, save_samples, save_grid)


def finish(p: Any, results: list[Image.Image], infotexts: list[str], first: Any, save_samples: bool,
           save_grid: bool) -> processing.Processed:
    """The `Processed` of the grown images (a grid first when the options ask), saved as the job asked.

    Each image carries the infotext of its first pass (its own seed); the grid, the job's first.
    """
    opts = shared.opts
    seed = first.seed if first is not None else p.seed
    info = first.info if first is not None else ""
    texts = [infotexts[i] if i < len(infotexts) else info for i in range(len(results))]
    for img, text in zip(results, texts):
        common.stamp_and_save(p, img, text, seed, save_samples, opts.samples_format)
    wants_grid = len(results) > 1 or not opts.grid_only_if_multiple
    grid = images.image_grid(results) if results and wants_grid and (opts.return_grid or opts.grid_save) else None
    if grid is not None and opts.enable_pnginfo:
        grid.info["parameters"] = info
    if grid is not None and save_grid and opts.grid_save:
        images.save_image(grid, p.outpath_grids, "grid", seed, p.prompt, opts.grid_format, info=info,
                          short_filename=not opts.grid_extended_filename, grid=True, p=p)
    if grid is not None and opts.return_grid:
        return processing.Processed(p, [grid, *results], seed, info, index_of_first_image=1, infotexts=[info, *texts])
    return processing.Processed(p, results, seed, info, infotexts=texts)
