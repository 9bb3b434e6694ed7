"""The Settings tab in a real browser (issue 11): search, change, Apply → config.json → the next job."""
from __future__ import annotations

import json
import os
import urllib.request

from conftest import shot


def _txt2img_info(base: str) -> str:
    body = json.dumps({"prompt": "a red apple", "width": 64, "height": 64, "steps": 2, "seed": 5,
                       "sampler_name": "Euler"}).encode()
    request = urllib.request.Request(base + "/sdapi/v1/txt2img", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(json.loads(response.read())["info"])["infotexts"][0]


def test_setting_applied_in_page_is_saved_and_used_by_next_job(page, ui_server, serena):
    opts, config = serena.opts, serena.config_filename
    saved = dict(opts.data)
    before = open(config, encoding="utf8").read() if os.path.exists(config) else None
    try:
        assert page.locator("#quicksettings").count() == 1
        page.get_by_role("tab", name="Settings", exact=True).click()
        # typed, as a user does (Gradio's `input` event follows key presses)
        page.locator("#settings_search input, #settings_search textarea").first.press_sequentially(
            "model name to infotext")
        checkbox = page.locator("#setting_add_model_name_to_info input[type=checkbox]")
        checkbox.wait_for(state="visible", timeout=15000)
        page.wait_for_selector("#setting_samples_save", state="hidden", timeout=15000)  # the others hidden
        assert checkbox.is_checked()
        checkbox.uncheck()
        page.locator("#settings_submit").click()
        page.wait_for_function("document.querySelector('#settings_result').innerText.includes('1 settings changed')",
                               timeout=30000)
        assert "add_model_name_to_info" in page.locator("#settings_result").inner_text()
        shot(page, "settings-applied")
        with open(config, encoding="utf8") as f:
            assert json.load(f)["add_model_name_to_info"] is False
        info = _txt2img_info(ui_server)
        assert "Model:" not in info and "Model hash:" in info
        assert page.serena_errors == []
    finally:
        opts.data.clear()
        opts.data.update(saved)
        if before is not None:
            with open(config, "w", encoding="utf8") as f:
                f.write(before)
