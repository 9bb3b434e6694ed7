"""Write the golden suite's input images (init image and masks) deterministically.

Run once when the inputs change: `venv/bin/python test/golden/make_inputs.py`. The files are
committed; the golden test reads them.
"""
from __future__ import annotations

import os

from PIL import Image, ImageDraw

HERE = os.path.dirname(os.path.abspath(__file__))


def init_image(width: int = 64, height: int = 64) -> Image.Image:
    """A colour gradient with a dark disc: structure the img2img tests can see change."""
    img = Image.new("RGB", (width, height))
    img.putdata([(4 * x % 256, 4 * y % 256, (2 * x + 2 * y) % 256) for y in range(height) for x in range(width)])
    ImageDraw.Draw(img).ellipse((width // 4, height // 4, 3 * width // 4, 3 * height // 4), fill=(30, 40, 60))
    return img


def mask_image(width: int = 64, height: int = 64) -> Image.Image:
    """White (inpaint) rectangle in the middle of a black (keep) field."""
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).rectangle((width // 4, height // 4, 3 * width // 4 - 1, 3 * height // 4 - 1), fill=255)
    return mask


def main() -> None:
    out = os.path.join(HERE, "inputs")
    os.makedirs(out, exist_ok=True)
    init_image().save(os.path.join(out, "init.png"))
    mask_image().save(os.path.join(out, "mask.png"))


if __name__ == "__main__":
    main()
