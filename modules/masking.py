"""Inpainting masks: decoding, blur, crop regions for "only masked", fill and overlay (spec §1.3).

All functions are pure (PIL / numpy in, PIL / numpy out) so each can be tested alone; processing
calls them in A1111's order.
"""
from __future__ import annotations

import cv2
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


def blur_kernel_size(sigma: float) -> int:
    """A1111's Gaussian kernel length for a mask blur of σ pixels: 2·int(2.5σ+0.5)+1."""
    return 2 * int(2.5 * sigma + 0.5) + 1


def blur_mask(mask: Image.Image, blur_x: float, blur_y: float) -> Image.Image:
    """Blur horizontally by `blur_x`, then vertically by `blur_y` (σ in pixels; 0 skips an axis).

    Bit for bit what A1111 does: OpenCV's Gaussian blur of the 8-bit mask (its fixed-point
    arithmetic, borders mirrored without repeating the edge pixel), one axis per pass, with
    A1111's kernel size. Every mask blur of a job goes through here.
    """
    arr = np.array(mask.convert("L"))
    if blur_x > 0:
        arr = cv2.GaussianBlur(arr, (blur_kernel_size(blur_x), 1), blur_x)
    if blur_y > 0:
        arr = cv2.GaussianBlur(arr, (1, blur_kernel_size(blur_y)), blur_y)
    return Image.fromarray(arr)


def _as_image(mask: np.ndarray | Image.Image) -> Image.Image:
    """The mask as a PIL image, converted as A1111 does (`Image.fromarray`) when it is an array.

    An array Pillow has no mode for (int64, as `np.array` makes from Python ints) is read as
    "non-zero in any band", the meaning A1111's array-based `get_crop_region` gave it.
    """
    if isinstance(mask, Image.Image):
        return mask
    arr = np.asarray(mask)
    try:
        return Image.fromarray(arr)
    except TypeError:
        selected = arr != 0 if arr.ndim == 2 else (arr != 0).any(axis=tuple(range(2, arr.ndim)))
        return Image.fromarray(selected.astype(np.uint8) * 255)


def get_crop_region_v2(mask: np.ndarray | Image.Image, pad: int = 0) -> tuple[int, int, int, int] | None:
    """The bounding box (x1, y1, x2, y2) of the mask's non-zero pixels grown by `pad`; None if blank.

    A1111's function: the mask is read as given (every band of an RGB mask counts, the alpha
    band alone of an RGBA one, as Pillow's `getbbox` does); an array is converted first.
    """
    image = _as_image(mask)
    box = image.getbbox()
    if box is None:
        return None
    x1, y1, x2, y2 = box
    return (max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, image.width), min(y2 + pad, image.height))


def get_crop_region(mask: np.ndarray | Image.Image, pad: int = 0) -> tuple[int, int, int, int]:
    """A1111's older helper: v2's box, and for a blank mask `(w-pad, h-pad, pad, pad)` clamped.

    The blank-mask box is inverted (x1 > x2) unless `pad` is large enough; callers check it.
    Serena's jobs call `get_crop_region_v2` and handle the blank mask themselves, as A1111's do.
    """
    image = _as_image(mask)
    region = get_crop_region_v2(image, pad)
    if region is not None:
        return region
    width, height = image.size
    return max(width - pad, 0), max(height - pad, 0), min(pad, width), min(pad, height)


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
