"""What img2img's input sub-tabs hold, turned into an init image and a mask (A1111's img2img modes).

The page has one sub-tab per way of giving img2img its input (A1111 v1.10's order and numbers):

| mode | sub-tab        | init image                                   | mask                                      |
|------|----------------|----------------------------------------------|-------------------------------------------|
| 0    | img2img        | the uploaded image                           | none                                      |
| 1    | Sketch         | the image with the strokes painted on it     | none                                      |
| 2    | Inpaint        | the uploaded image (strokes are not painted) | where the brush drew (alpha over 128)     |
| 3    | Inpaint sketch | the strokes blended in through the mask      | where the strokes changed the image       |
| 4    | Inpaint upload | the uploaded base image                      | the uploaded mask                         |
| 5    | Batch          | each image of a folder (`img2img_batch`)     | the same-named file of the mask folder    |

An editor value is Gradio's `{"background", "layers", "composite"}` dict of PIL images. Everything
here is pure: values in, images out; the UI handler hands the result to the API request.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

MODE_NAMES = ("img2img", "Sketch", "Inpaint", "Inpaint sketch", "Inpaint upload", "Batch")
IMG2IMG, SKETCH, INPAINT, INPAINT_SKETCH, INPAINT_UPLOAD, BATCH = range(6)
INPAINT_MODES = (INPAINT, INPAINT_SKETCH, INPAINT_UPLOAD, BATCH)
"""Modes whose page shows the inpaint options (mask blur, mode, masked content, area, padding)."""
SOURCE_KEYS = ("init_image", "sketch", "init_img_with_mask", "inpaint_color_sketch", "init_img_inpaint")
"""The image input of each mode before Batch, in mode order (what 📐 and "Resize by" read)."""
INPUT_FIELDS = (
    "img2img_mode", "init_image", "sketch", "init_img_with_mask", "inpaint_color_sketch", "mask_alpha",
    "init_img_inpaint", "init_mask_inpaint", "img2img_batch_input_dir", "img2img_batch_output_dir",
    "img2img_batch_inpaint_mask_dir", "img2img_batch_use_png_info", "img2img_batch_png_info_props",
    "img2img_batch_png_info_dir", "selected_scale_tab", "scale_by",
)
"""The img2img tab's input fields (in the handler's order): images, folders, the chosen sub-tab and
resize choice. An infotext never fills them."""
INPUT_DEFAULTS = {
    "img2img_mode": 0, "init_image": None, "sketch": None, "init_img_with_mask": None, "inpaint_color_sketch": None,
    "mask_alpha": 0, "init_img_inpaint": None, "init_mask_inpaint": None, "img2img_batch_input_dir": "",
    "img2img_batch_output_dir": "", "img2img_batch_inpaint_mask_dir": "", "img2img_batch_use_png_info": False,
    "img2img_batch_png_info_props": [], "img2img_batch_png_info_dir": "", "selected_scale_tab": 0, "scale_by": 1.0,
}


@dataclass(frozen=True)
class ResolvedInput:
    """The init image and mask of an img2img job (mask None: plain img2img)."""

    image: Image.Image
    mask: Image.Image | None = None


class MissingInput(ValueError):
    """The chosen sub-tab holds no image (the message names what to upload)."""


def _editor_part(value: Any, key: str) -> Any:
    if isinstance(value, Mapping):
        return value.get(key)
    return value if key in ("background", "composite") else None


def editor_background(value: Any) -> Image.Image | None:
    """The uploaded image of an editor value (or a plain image)."""
    image = _editor_part(value, "background")
    return image if isinstance(image, Image.Image) else None


def editor_composite(value: Any) -> Image.Image | None:
    """The image with every stroke painted on it (Gradio's composite), else the background."""
    image = _editor_part(value, "composite")
    return image if isinstance(image, Image.Image) else editor_background(value)


def flatten(image: Image.Image, background: str = "#ffffff") -> Image.Image:
    """`image` as RGB, transparent parts filled with `background` (option img2img_background_color)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background)
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


def binary_mask(image: Image.Image) -> Image.Image:
    """A mask image as A1111 reads one: an RGBA image with real transparency → its alpha, white
    where over 128; anything else → its greyscale as is."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        return image.getchannel("A").point(lambda x: 255 if x > 128 else 0)
    return image.convert("L")


def strokes_mask(value: Any) -> Image.Image | None:
    """Where the brush drew on an editor (the union of its layers' alpha, white over 128), or None
    when nothing was drawn."""
    layers = [layer for layer in (_editor_part(value, "layers") or []) if isinstance(layer, Image.Image)]
    background = editor_background(value)
    if not layers or background is None:
        return None
    alpha = np.zeros((background.height, background.width), dtype=np.uint8)
    for layer in layers:
        layer_alpha = np.asarray(layer.convert("RGBA").getchannel("A").resize(background.size, Image.NEAREST))
        alpha = np.maximum(alpha, layer_alpha)
    mask = np.where(alpha > 128, 255, 0).astype(np.uint8)
    return Image.fromarray(mask, "L") if mask.any() else None


def sketch_changes(original: Image.Image, sketched: Image.Image, mask_alpha: float, mask_blur: int
                   ) -> ResolvedInput:
    """Inpaint sketch: the mask is where `sketched` differs from `original`, dimmed by the mask
    transparency (percent); the strokes are blended into the original through the blurred mask."""
    original = original.convert("RGB")
    sketched = sketched.convert("RGB").resize(original.size)
    changed = np.any(np.asarray(sketched) != np.asarray(original), axis=-1)
    mask = Image.fromarray(changed.astype(np.uint8) * 255, "L")
    mask = ImageEnhance.Brightness(mask).enhance(1 - max(0.0, min(float(mask_alpha), 100.0)) / 100)
    blur = ImageFilter.GaussianBlur(max(int(mask_blur), 0))
    image = Image.composite(sketched.filter(blur), original, mask.filter(blur))
    return ResolvedInput(image, mask)


def resolve(values: Mapping[str, Any], background: str = "#ffffff") -> ResolvedInput:
    """The init image and mask the chosen sub-tab (`values["img2img_mode"]`) holds.

    Keys read: `init_image` (mode 0), `sketch` (1), `init_img_with_mask` (2), `inpaint_color_sketch`
    and `mask_alpha`, `mask_blur` (3), `init_img_inpaint` and `init_mask_inpaint` (4).

    Raises:
        MissingInput: the sub-tab has no image (or Inpaint upload has no mask).
    """
    mode = int(values.get("img2img_mode") or 0)
    if mode == SKETCH:
        sketched = editor_composite(values.get("sketch"))
        if sketched is None:
            raise MissingInput("Sketch: upload an image to draw on first")
        return ResolvedInput(flatten(sketched, background))
    if mode == INPAINT:
        editor = values.get("init_img_with_mask")
        image = editor_background(editor)
        if image is None:
            raise MissingInput("Inpaint: upload an image and draw the mask on it first")
        return ResolvedInput(flatten(image, background), strokes_mask(editor))
    if mode == INPAINT_SKETCH:
        editor = values.get("inpaint_color_sketch")
        original, sketched = editor_background(editor), editor_composite(editor)
        if original is None or sketched is None:
            raise MissingInput("Inpaint sketch: upload an image to draw on first")
        original = flatten(original, background)
        return sketch_changes(original, flatten(sketched, background), values.get("mask_alpha") or 0,
                              values.get("mask_blur") or 0)
    if mode == INPAINT_UPLOAD:
        image, mask = values.get("init_img_inpaint"), values.get("init_mask_inpaint")
        if image is None:
            raise MissingInput("Inpaint upload: upload the image to inpaint")
        if mask is None:
            raise MissingInput("Inpaint upload: upload the mask (white = area to repaint)")
        return ResolvedInput(flatten(image, background), binary_mask(mask))
    image = values.get("init_image")
    if image is None:
        raise MissingInput("img2img needs an init image: upload one first")
    return ResolvedInput(flatten(image, background), None)


def source_size(values: Mapping[str, Any]) -> tuple[int, int] | None:
    """(width, height) of the chosen sub-tab's image, for 📐 and "Resize by"; None without one."""
    mode = int(values.get("img2img_mode") or 0)
    key = SOURCE_KEYS[mode] if 0 <= mode < len(SOURCE_KEYS) else None
    image = editor_background(values.get(key)) if key else None
    return image.size if image is not None else None


def scaled_size(size: tuple[int, int], scale_by: float) -> tuple[int, int]:
    """"Resize by": (width, height) × scale_by, each truncated (as A1111) down to a multiple of 8,
    at least 8 — Serena's jobs take sizes in steps of 8."""
    return max(8, int(size[0] * scale_by) // 8 * 8), max(8, int(size[1] * scale_by) // 8 * 8)


def snapped_size(size: tuple[int, int]) -> tuple[int, int]:
    """📐: an image's size rounded to the nearest multiple of 8 (the width/height sliders' step)."""
    return max(8, round(size[0] / 8) * 8), max(8, round(size[1] / 8) * 8)
