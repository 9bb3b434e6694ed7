"""Inpainting masks: decoding, blur, crop regions for "only masked", fill and overlay (spec §1.3).

All functions are pure (PIL / numpy in, PIL / numpy out) so each can be tested alone; processing
calls them in A1111's order.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter, ImageOps

from modules import errors


def create_binary_mask(image: Image.Image, round: bool = True) -> Image.Image:
    """An "L" mask from a user mask: the alpha channel of an RGBA mask that uses alpha, else luminance.

    With `round`, alpha values above 128 become 255 and the rest 0; a luminance mask keeps its grey
    levels either way (A1111 rounds only the alpha branch).
    """
    if not isinstance(image, Image.Image):
        raise errors.InvalidImage(f"mask must be a PIL image, got {type(image).__name__}", field="mask")
    if not (image.mode == "RGBA" and image.getextrema()[-1] != (255, 255)):
        return image.convert("L")
    mask = image.split()[-1].convert("L")
    return mask.point(lambda v: 255 if v > 128 else 0) if round else mask


def fit_to_image(mask: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The mask stretched over an image of `size`; the same mask when it already fits.

    A mask covers its init image whatever resolution it was drawn at, so it is brought to the
    image's size before anything else (blur, crop region, resize mode) is applied to it. Bilinear,
    not Lanczos: a non-negative kernel leaves no faint ring around the selected area.
    """
    size = (int(size[0]), int(size[1]))
    if mask.size == size:
        return mask
    return mask.resize(size, resample=Image.Resampling.BILINEAR)


def gaussian_kernel(sigma: float) -> np.ndarray:
    """A normalised 1-D Gaussian of size 2·int(2.5σ+0.5)+1 (A1111's kernel size for mask blur)."""
    size = 2 * int(2.5 * sigma + 0.5) + 1
    centre = (size - 1) / 2
    xs = np.arange(size, dtype=np.float64) - centre
    kernel = np.exp(-(xs ** 2) / (2 * sigma * sigma))
    return kernel / kernel.sum()


def blur_axis(mask: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """Gaussian blur of a 2-D array along one axis, mirrored at the borders (reflect-101)."""
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (radius, radius)
    mode = "reflect" if mask.shape[axis] > radius else "symmetric"
    padded = np.pad(mask.astype(np.float64), pad, mode=mode)
    out = np.zeros(mask.shape, dtype=np.float64)
    length = mask.shape[axis]
    for i, weight in enumerate(kernel):
        window = padded[i:i + length, :] if axis == 0 else padded[:, i:i + length]
        out += weight * window
    return out


def blur_mask(mask: Image.Image, blur_x: float, blur_y: float) -> Image.Image:
    """Blur horizontally by `blur_x` then vertically by `blur_y` (σ in pixels; 0 skips an axis)."""
    arr = np.array(mask.convert("L"), dtype=np.float64)
    if blur_x > 0:
        arr = blur_axis(arr, blur_x, axis=1)
    if blur_y > 0:
        arr = blur_axis(arr, blur_y, axis=0)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="L")


def get_crop_region_v2(mask: Image.Image, pad: int = 0) -> tuple[int, int, int, int] | None:
    """The bounding box (x1, y1, x2, y2) of the mask's non-zero pixels grown by `pad`; None if blank."""
    box = mask.convert("L").getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return (max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.width), min(y2 + pad, mask.height))


def get_crop_region(mask: np.ndarray | Image.Image, pad: int = 0) -> tuple[int, int, int, int]:
    """A1111's older helper: like v2 but a blank mask gives the whole image."""
    image = mask if isinstance(mask, Image.Image) else Image.fromarray(np.asarray(mask).astype(np.uint8))
    region = get_crop_region_v2(image, pad)
    return region if region is not None else (0, 0, image.width, image.height)


def _grow(lo: int, hi: int, wanted: int, limit: int) -> tuple[int, int]:
    """Grow [lo, hi) to `wanted` length around its centre, shifted to stay inside [0, limit)."""
    diff = wanted - (hi - lo)
    lo -= diff // 2
    hi += diff - diff // 2
    if hi >= limit:
        lo -= hi - limit
        hi = limit
    if lo < 0:
        hi -= lo
        lo = 0
    return lo, min(hi, limit)


def expand_crop_region(crop_region: tuple[int, int, int, int], processing_width: int, processing_height: int,
                       image_width: int, image_height: int) -> tuple[int, int, int, int]:
    """Grow the crop region so its aspect ratio matches the processing size, inside the image."""
    x1, y1, x2, y2 = crop_region
    ratio_crop = (x2 - x1) / (y2 - y1)
    ratio_processing = processing_width / processing_height
    if ratio_crop > ratio_processing:
        wanted = int((x2 - x1) / ratio_processing)
        y1, y2 = _grow(y1, y2, wanted, image_height)
    else:
        wanted = int((y2 - y1) * ratio_processing)
        x1, x2 = _grow(x1, x2, wanted, image_width)
    return x1, y1, x2, y2


def fill(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Fill the masked area with the surrounding colours ("fill" content): repeated blurs composited."""
    result = Image.new("RGBA", image.size)
    keep = Image.new("RGBa", image.size)
    keep.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert("L")))
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = keep.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            result.alpha_composite(blurred)
    return result.convert("RGB")


def overlay_image(image: Image.Image, mask_for_overlay: Image.Image) -> Image.Image:
    """The original outside the mask as RGBA (transparent where the mask is white)."""
    masked = Image.new("RGBa", image.size)
    masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask_for_overlay.convert("L")))
    return masked.convert("RGBA")


def latent_mask(mask: Image.Image, latent_h: int, latent_w: int, channels: int, round: bool) -> np.ndarray:
    """The mask at latent size as floats in [0, 1], tiled to `channels` (1 where inpainting happens)."""
    small = mask.convert("RGB").resize((latent_w, latent_h))
    arr = np.asarray(small, dtype=np.float32)[:, :, 0] / 255.0
    if round:
        arr = np.around(arr)
    return np.tile(arr[None], (channels, 1, 1))


def is_blank(mask: Image.Image) -> bool:
    """Whether the mask selects nothing."""
    return mask.convert("L").getbbox() is None
