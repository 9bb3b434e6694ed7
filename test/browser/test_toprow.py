"""The generation tab's top row in a real browser: the token counter follows typing, Ctrl+Enter in
the prompt generates (the gallery's infotext and the saved PNG's match the controls), and a style created in
the styles editor is applied to the prompt with 📋."""
from __future__ import annotations

import os
import time

from conftest import RunnerCalls, set_number, shot, small_txt2img

from PIL import Image
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from modules import infotext_utils, shared


def counter_text(page, elem_id: str = "txt2img_token_counter") -> str:
    return page.locator(f"#{elem_id}").inner_text().strip()


def _newest_png(folder: str, since: float) -> str | None:
    found = [os.path.join(root, n) for root, _dirs, names in os.walk(folder) for n in names if n.endswith(".png")]
    found = [f for f in found if os.path.getmtime(f) >= since]
    return max(found, key=os.path.getmtime) if found else None


def test_counter_updates_and_ctrl_enter_generates(page):
    started = time.time() - 1
    prompt = page.locator("#txt2img_prompt textarea")
    prompt.fill("a photo of a cat")
    page.wait_for_function("document.querySelector('#txt2img_token_counter').innerText.trim() === '5/75'",
                           timeout=15000)
    page.locator("#txt2img_neg_prompt textarea").fill("blurry BREAK ugly")
    page.wait_for_function(
        "document.querySelector('#txt2img_negative_token_counter').innerText.trim() === '76/150'", timeout=15000)
    for elem_id, value in (("txt2img_width", "64"), ("txt2img_height", "64"), ("txt2img_steps", "2")):
        set_number(page, elem_id, value)
    set_number(page, "txt2img_seed", "1234")
    prompt.click()
    prompt.press("Control+Enter")
    page.wait_for_function("document.querySelectorAll('#txt2img_gallery img').length > 0", timeout=120000)
    page.wait_for_function("document.querySelector('#txt2img_infotext textarea').value.includes('Steps: 2')",
                           timeout=30000)
    shot(page, "toprow-ctrl-enter")
    params = infotext_utils.parse_generation_parameters(page.locator("#txt2img_infotext textarea").input_value())
    assert params["Prompt"] == "a photo of a cat"
    assert params["Negative prompt"] == "blurry BREAK ugly"
    assert (params["Size-1"], params["Size-2"], params["Steps"], params["Seed"]) == ("64", "64", "2", "1234")
    outputs = os.path.join(shared.data_paths.data_path, "outputs")
    saved = _newest_png(outputs, started)  # the UI saves its images, as A1111's does
    assert saved is not None, "the job's image was saved"
    with Image.open(saved) as image:
        assert image.info["parameters"] == page.locator("#txt2img_infotext textarea").input_value()
    # notification.mp3 exists in the data folder: the page played it when the images arrived
    page.wait_for_function("(window.serena_notification_played || 0) >= 1", timeout=10000)
    assert page.serena_errors == []


def test_style_created_in_the_editor_is_applied(page):
    name = "toprow neon"
    try:
        page.locator("#txt2img_styles_edit_button").click()
        select = page.locator("#txt2img_styles_edit_select input").first
        select.fill(name)
        select.press("Enter")
        page.locator("#txt2img_edit_style_prompt textarea").fill("{prompt}, neon lights")
        page.locator("#txt2img_edit_style_neg_prompt textarea").fill("dull")
        page.locator("#txt2img_edit_style_save").click()
        page.wait_for_function(f"document.querySelector('#txt2img_edit_style_delete') !== null"
                               f" && document.querySelector('#txt2img_edit_style_delete').offsetParent !== null",
                               timeout=15000)
        saved = open(shared.prompt_styles.default_path, encoding="utf-8-sig").read()
        assert name in saved and "{prompt}, neon lights" in saved
        page.locator("#txt2img_edit_style_close").click()

        page.locator("#txt2img_prompt textarea").fill("a red cube")
        page.locator("#txt2img_neg_prompt textarea").fill("")
        page.locator("#txt2img_styles input").first.click()
        page.get_by_role("option", name=name).first.click()
        page.keyboard.press("Escape")
        page.locator("#txt2img_style_apply").click()
        page.wait_for_function("document.querySelector('#txt2img_prompt textarea').value"
                               " === 'a red cube, neon lights'", timeout=15000)
        assert page.locator("#txt2img_neg_prompt textarea").input_value() == "dull"
        shot(page, "toprow-style-applied")
        assert page.serena_errors == []
    finally:
        shared.prompt_styles.remove_style(name)
        if os.path.isfile(shared.prompt_styles.default_path) or shared.prompt_styles.loaded_files:
            shared.prompt_styles.save_styles()


def choose_from_generate_menu(page, label: str) -> None:
    """Right-click Generate and pick `label` from its menu. The menu comes from javascript/toprow.js,
    which Gradio adds to the page after load: wait for it, and right-click again if a busy machine
    let the first right-click land before the menu's handler was there."""
    page.wait_for_function("() => !!window.serenaGenerateForever", timeout=30000)
    item = page.get_by_text(label, exact=True)
    for _ in range(3):
        page.locator("#txt2img_generate").click(button="right")
        try:
            item.wait_for(state="visible", timeout=5000)
        except PlaywrightTimeoutError:
            continue
        item.click()
        return
    raise AssertionError(f"the Generate menu never showed {label!r}")


def test_generate_forever_repeats_until_cancelled(page, monkeypatch):
    runs = RunnerCalls(monkeypatch)
    small_txt2img(page, "a blue cube", 1)
    choose_from_generate_menu(page, "Generate forever")
    page.wait_for_function("() => window.serenaGenerateForever.running('txt2img')", timeout=5000)
    deadline_s = 60
    import time
    start = time.time()
    while len(runs.steps) < 2 and time.time() - start < deadline_s:
        page.wait_for_timeout(250)
    choose_from_generate_menu(page, "Cancel generate forever")
    assert len(runs.steps) >= 2
    page.wait_for_timeout(2000)  # a job started just before cancelling may still finish
    settled = len(runs.steps)
    page.wait_for_timeout(2000)
    assert len(runs.steps) == settled  # no new jobs after cancelling
    assert page.serena_errors == []
