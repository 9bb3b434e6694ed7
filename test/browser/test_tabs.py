"""Every tab of the page renders in a real browser without console errors (issue 11)."""
from __future__ import annotations

import pytest
from conftest import shot

TABS = ["txt2img", "img2img", "extras", "pnginfo", "modelmerger", "extensions", "settings"]


@pytest.mark.parametrize("tab", TABS)
def test_tab_renders_without_console_errors(page, tab):
    page.get_by_role("tab", name={"txt2img": "txt2img", "img2img": "img2img", "extras": "Extras",
                                  "pnginfo": "PNG Info", "modelmerger": "Checkpoint Merger",
                                  "extensions": "Extensions", "settings": "Settings"}[tab], exact=True).click()
    page.wait_for_selector(f"#tab_{tab}", state="visible", timeout=30000)
    page.wait_for_timeout(300)
    shot(page, f"tab-{tab}")
    assert page.serena_errors == []
