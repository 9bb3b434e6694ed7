"""img2img's sub-tabs in the browser (issue 11): a mask drawn with the Inpaint brush repaints only
what it covers; the gallery's "Send to img2img" carries the image itself into img2img."""
from __future__ import annotations

import numpy as np
from PIL import Image

from conftest import RunnerCalls, set_number, shot

GREEN = (30, 160, 90)


def _open_img2img(page, sub_tab_id: str) -> None:
    page.locator("#tab_img2img-button").click()
    page.locator(f"#{sub_tab_id}-button").click()
    page.wait_for_selector(f"#{sub_tab_id}", state="visible", timeout=30000)


def _upload_into_editor(page, sub_tab_id: str, elem_id: str, path: str) -> None:
    """Open the sub-tab, upload `path` into its image editor and wait until the editor shows it.

    The editor first shows a blank 800×800 canvas (zoom under 100 %); the small test image then fills
    the view at a zoom over 100 %. Headless Chromium draws the editor with software WebGL: an upload
    that reaches the editor before it has finished setting up is lost with a console error, so the
    upload waits for the editor's zoom display, and a page that still lost it is reloaded once."""
    ready = f"document.querySelector('#{elem_id} .zoom-number span') !== null"
    shown = ("(() => { const z = document.querySelector('#%s .zoom-number span');"
             " return z !== null && parseInt(z.textContent) > 100; })()" % elem_id)
    for attempt in range(2):
        if attempt:
            page.reload(wait_until="load")
            page.wait_for_selector("#txt2img_prompt", timeout=60000)
        _open_img2img(page, sub_tab_id)
        page.wait_for_function(ready, timeout=60000)
        page.wait_for_timeout(500)
        page.locator(f"#{elem_id} input[type=file]").first.set_input_files(path)
        try:
            page.wait_for_function(shown, timeout=30000)
            if attempt:
                page.serena_errors.clear()  # what the lost first attempt logged
            return
        except Exception:  # noqa: BLE001 - tried again on a fresh page, then reported below
            continue
    shot(page, f"{elem_id}-upload-not-shown")
    zoom = page.locator(f"#{elem_id} .zoom-number").all_inner_texts()
    raise AssertionError(f"the uploaded image did not show in #{elem_id} (zoom {zoom}, console {page.serena_errors})")


def _small_job(page, steps: int = 2) -> None:
    for elem_id, value in (("img2img_width", "64"), ("img2img_height", "64"), ("img2img_steps", str(steps))):
        set_number(page, elem_id, value)


def test_inpaint_mask_drawn_with_the_brush_changes_only_the_masked_area(page, monkeypatch, tmp_path):
    runs = RunnerCalls(monkeypatch)
    source = tmp_path / "green.png"
    Image.new("RGB", (64, 64), GREEN).save(source)
    _upload_into_editor(page, "img2img_inpaint_tab", "img2maskimg", str(source))
    page.locator("#img2maskimg button[aria-label='Brush']").first.click()
    page.locator("#img2maskimg [aria-label='Brush Size']").first.click()  # the editor's brush size
    page.locator("#img2maskimg .size_picker input[type=range]").first.fill("6")
    page.locator("#img2maskimg [aria-label='Brush Size']").first.click()
    box = page.locator("#img2maskimg canvas").first.bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx - 90, cy - 40)
    page.mouse.down()
    for step in range(1, 11):  # a short stroke in the image's upper-left part
        page.mouse.move(cx - 90 + step * 6, cy - 40 + step * 2)
    page.mouse.up()
    page.locator("#img2img_prompt textarea").fill("a red flower")
    _small_job(page)
    set_number(page, "img2img_mask_blur", "0")
    shot(page, "img2img-inpaint-brush")
    page.locator("#img2img_generate").click()
    page.wait_for_function("document.querySelectorAll('#img2img_gallery img').length > 0", timeout=120000)
    assert len(runs.jobs) == 1
    p, result = runs.jobs[0], runs.results[0]
    mask = np.asarray(p.image_mask.convert("L")) > 0
    assert 0 < mask.mean() < 0.25, "the stroke (brush size 6) became a mask covering a small part of the image"
    ys, xs = np.nonzero(mask)
    assert xs.mean() < 32 and ys.mean() < 32, "the mask lies where the stroke was drawn (upper left)"
    out = np.asarray(result.images[0].convert("RGB")).astype(int)
    assert (out[~mask] == GREEN).all(), "pixels outside the drawn mask are unchanged"
    assert np.abs(out[mask] - GREEN).max() > 0, "the masked area was repainted"
    assert page.serena_errors == []


def test_send_to_img2img_from_the_gallery_carries_the_image(page, monkeypatch):
    runs = RunnerCalls(monkeypatch)
    page.locator("#txt2img_prompt textarea").fill("a blue bird")
    for elem_id, value in (("txt2img_width", "64"), ("txt2img_height", "64"), ("txt2img_steps", "1")):
        set_number(page, elem_id, value)
    page.locator("#txt2img_generate").click()
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery img').length > 0", timeout=120000)
    made = runs.results[0].images[0]
    page.locator("#txt2img_send_to_img2img").click()
    page.wait_for_function("document.querySelectorAll('#img2img_image img').length > 0", timeout=30000)
    assert page.locator("#img2img_prompt textarea").input_value() == "a blue bird"  # parameters came too
    shot(page, "send-to-img2img")
    _small_job(page, steps=1)
    page.locator("#img2img_generate").click()
    page.wait_for_function("document.querySelectorAll('#img2img_gallery img').length > 0", timeout=120000)
    sent = runs.jobs[-1].init_images[0].convert("RGB")
    assert np.array_equal(np.asarray(sent), np.asarray(made.convert("RGB"))), "img2img got the generated image itself"
    assert page.serena_errors == []
