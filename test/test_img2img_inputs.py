"""img2img's sub-tabs → init image and mask (modules/img2img_inputs.py), and the UI handler's use of
them: what each A1111 mode sends to the job."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from modules import img2img_inputs as inputs

GREEN = (30, 160, 90)


def editor(background: Image.Image, strokes: list[tuple[int, int, int, int]], color=(255, 255, 255)) -> dict:
    """A Gradio editor value: `background`, one layer with opaque rectangles, and their composite."""
    layer = Image.new("RGBA", background.size, (0, 0, 0, 0))
    for box in strokes:
        layer.paste((*color, 255), box)
    composite = background.convert("RGBA")
    composite.alpha_composite(layer)
    return {"background": background, "layers": [layer], "composite": composite}


def test_img2img_mode_sends_the_upload_flattened_on_the_background_colour():
    rgba = Image.new("RGBA", (16, 16), (10, 20, 30, 0))
    rgba.paste((10, 20, 30, 255), (0, 0, 8, 16))
    got = inputs.resolve({"img2img_mode": 0, "init_image": rgba}, background="#ff0000")
    assert got.mask is None and got.image.mode == "RGB"
    assert got.image.getpixel((2, 2)) == (10, 20, 30) and got.image.getpixel((12, 2)) == (255, 0, 0)


def test_sketch_mode_paints_the_strokes_and_has_no_mask():
    value = editor(Image.new("RGB", (32, 32), GREEN), [(4, 4, 10, 10)], color=(200, 0, 0))
    got = inputs.resolve({"img2img_mode": 1, "sketch": value})
    assert got.mask is None
    assert got.image.getpixel((6, 6)) == (200, 0, 0) and got.image.getpixel((20, 20)) == GREEN


def test_inpaint_mode_keeps_the_image_and_masks_where_the_brush_drew():
    value = editor(Image.new("RGB", (32, 32), GREEN), [(4, 4, 10, 10), (20, 20, 24, 30)])
    got = inputs.resolve({"img2img_mode": 2, "init_img_with_mask": value})
    assert np.asarray(got.image).tolist() == np.asarray(Image.new("RGB", (32, 32), GREEN)).tolist()  # not painted
    mask = np.asarray(got.mask) > 0
    expected = np.zeros((32, 32), bool)
    expected[4:10, 4:10] = expected[20:30, 20:24] = True
    assert (mask == expected).all()
    empty = {"img2img_mode": 2, "init_img_with_mask": editor(Image.new("RGB", (8, 8)), [])}
    assert inputs.resolve(empty).mask is None  # nothing drawn: plain img2img of the image


def test_inpaint_sketch_masks_the_changed_pixels_and_blends_the_strokes():
    value = editor(Image.new("RGB", (32, 32), GREEN), [(8, 8, 16, 16)], color=(250, 250, 0))
    got = inputs.resolve({"img2img_mode": 3, "inpaint_color_sketch": value, "mask_alpha": 0, "mask_blur": 0})
    mask = np.asarray(got.mask)
    assert mask[8:16, 8:16].min() == 255 and mask.sum() == 255 * 64
    assert got.image.getpixel((10, 10)) == (250, 250, 0) and got.image.getpixel((20, 20)) == GREEN
    half = inputs.resolve({"img2img_mode": 3, "inpaint_color_sketch": value, "mask_alpha": 50, "mask_blur": 0})
    assert np.asarray(half.mask).max() in (127, 128)  # "Mask transparency" 50 % dims the mask


def test_inpaint_upload_reads_a_transparent_mask_by_its_alpha():
    mask = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    mask.paste((0, 0, 0, 200), (0, 0, 8, 16))
    got = inputs.resolve({"img2img_mode": 4, "init_img_inpaint": Image.new("RGB", (16, 16)), "init_mask_inpaint": mask})
    assert got.mask.getpixel((2, 2)) == 255 and got.mask.getpixel((12, 2)) == 0


@pytest.mark.parametrize("values,message", [
    ({"img2img_mode": 0}, "img2img needs an init image"),
    ({"img2img_mode": 1}, "Sketch: upload"),
    ({"img2img_mode": 2}, "Inpaint: upload"),
    ({"img2img_mode": 3}, "Inpaint sketch: upload"),
    ({"img2img_mode": 4, "init_img_inpaint": Image.new("RGB", (8, 8))}, "upload the mask"),
])
def test_an_empty_sub_tab_names_what_to_upload(values, message):
    with pytest.raises(inputs.MissingInput, match=message):
        inputs.resolve(values)


def test_sizes_for_resize_by_and_detect_size():
    assert inputs.scaled_size((100, 60), 1.5) == (144, 88)  # 150 → 144, 90 → 88: steps of 8
    assert inputs.snapped_size((100, 60)) == (96, 64)
    assert inputs.source_size({"img2img_mode": 2, "init_img_with_mask": editor(Image.new("RGB", (40, 24)), [])}) == (40, 24)
    assert inputs.source_size({"img2img_mode": 5}) is None


def test_detect_size_button_and_scale_preview():
    from modules import ui_img2img
    image = Image.new("RGB", (100, 60))
    assert ui_img2img.detect_size(0, image, None, None, None, None, 512, 512) == (96, 64)
    assert ui_img2img.detect_size(1, image, None, None, None, None, 512, 512) == (512, 512)  # Sketch is empty
    assert "from 100x60 to 200x120" in ui_img2img.scale_preview(0, image, None, None, None, None, 2.0)


def test_batch_sub_tab_runs_the_folder_through_the_batch(serena, tmp_path):
    """The Batch sub-tab's values reach img2img_batch: every input image is saved in the output folder."""
    from modules import shared, ui_handlers as h
    from test_ui import img2img_values
    data = shared.data_paths.data_path
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (64, 64), GREEN).save(src / name)
    values = img2img_values(img2img_mode=5, init_image=None, img2img_batch_input_dir=str(src),
                            img2img_batch_output_dir=str(out), steps=1)
    if not str(src).startswith(str(data)):
        with pytest.raises(Exception, match="outside the data folder"):
            h.generate_img2img(values)
        src, out = os.path.join(data, "batch-in"), os.path.join(data, "batch-out")
        os.makedirs(src, exist_ok=True)
        for name in ("a.png", "b.png"):
            Image.new("RGB", (64, 64), GREEN).save(os.path.join(src, name))
        values.update(img2img_batch_input_dir="batch-in", img2img_batch_output_dir="batch-out")
    result = h.generate_img2img(values)
    assert len(result.images) == 2
    assert sorted(n.split("-", 1)[-1] for n in os.listdir(out)) == ["a.png", "b.png"]

