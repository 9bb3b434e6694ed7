"""Every tab of the page renders in a real browser without console errors (issue 11)."""
from __future__ import annotations

import pytest
from conftest import shot

TABS = ["txt2img", "img2img", "extras", "pnginfo", "modelmerger", "extensions", "settings"]


@pytest.mark.parametrize("tab", TABS)
def test_tab_renders_without_console_errors(page, tab):
    page.locator(f"#tab_{tab}-button").click()
    page.wait_for_selector(f"#tab_{tab}", state="visible", timeout=30000)
    page.wait_for_timeout(300)
    shot(page, f"tab-{tab}")
    assert page.serena_errors == []


def test_img2img_sub_tabs_render_and_show_the_inpaint_options_only_when_inpainting(page):
    """Each img2img sub-tab renders (screenshot each); the inpaint options follow the sub-tab; the
    page's A1111 callbacks (onAfterUiUpdate, onUiTabChange) fire for extensions' scripts."""
    page.evaluate("() => { window.seen = {after: 0, tab: 0}; onAfterUiUpdate(() => window.seen.after++);"
                  " onUiTabChange(() => window.seen.tab++); }")
    page.locator("#tab_img2img-button").click()
    controls = page.locator("#inpaint_controls").first
    for label, elem_id in (("img2img", "img2img_img2img_tab"), ("Sketch", "img2img_img2img_sketch_tab"),
                           ("Inpaint", "img2img_inpaint_tab"), ("Inpaint sketch", "img2img_inpaint_sketch_tab"),
                           ("Inpaint upload", "img2img_inpaint_upload_tab"), ("Batch", "img2img_batch_tab")):
        page.locator(f"#{elem_id}-button").click()
        page.wait_for_selector(f"#{elem_id}", state="visible", timeout=30000)
        if label.startswith("Inpaint") or label == "Batch":
            controls.wait_for(state="visible", timeout=10000)
        else:
            controls.wait_for(state="hidden", timeout=10000)
        shot(page, f"tab-img2img-{elem_id.removeprefix('img2img_').removesuffix('_tab')}")
    page.wait_for_function("window.seen.after > 0 && window.seen.tab > 0", timeout=5000)
    assert page.serena_errors == []
