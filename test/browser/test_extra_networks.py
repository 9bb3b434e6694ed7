"""The extra-networks panel in a browser (issue 11): with a demo LoRA file present, 🎴 opens the
panel, a click on the LoRA's card adds `<lora:name:1>` to the prompt and a second click removes it.

The panel is served on a small page of its own (a prompt box plus `ui_extra_networks.create_ui`,
with `add_routes` for the previews), so this test does not depend on where modules/ui.py places it.
"""
from __future__ import annotations

import socket

import pytest
from conftest import shot
from PIL import Image


@pytest.fixture(scope="module")
def panel_server(serena, tmp_path_factory):
    import gradio as gr
    from fastapi import FastAPI

    from modules import demo_lycoris, lora_networks, shared, ui_extra_networks
    from modules.api.app import serve
    from modules.ui import GenerationTab
    folder = tmp_path_factory.mktemp("browser-lora")
    demo_lycoris.write_demo_lycoris(str(folder / "browserdemo.safetensors"), "locon")
    Image.new("RGB", (16, 16), "green").save(folder / "browserdemo.preview.png")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shared.cmd_opts, "lora_dir", str(folder), raising=False)
        with gr.Blocks() as blocks:
            tab = GenerationTab("txt2img")
            tab.fields["prompt"] = gr.Textbox(label="Prompt", elem_id="txt2img_prompt")
            tab.fields["negative_prompt"] = gr.Textbox(label="Negative prompt", elem_id="txt2img_neg_prompt")
            ui_extra_networks.create_ui(tab)
        app = FastAPI()
        ui_extra_networks.add_routes(app)
        blocks.queue()
        app = gr.mount_gradio_app(app, blocks, path="/", ssr_mode=False)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = serve(app, "127.0.0.1", port, background=True)
        yield f"http://127.0.0.1:{port}"
        server.should_exit = True
    lora_networks.list_available_networks(force=True)


def test_lora_card_click_adds_then_removes_its_tag(browser, panel_server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(panel_server + "/", wait_until="load")
        page.wait_for_selector("#txt2img_prompt textarea", timeout=60000)
        page.locator("#txt2img_prompt textarea").fill("a cat")
        page.locator("#txt2img_extra_networks").click()
        page.get_by_role("tab", name="Lora").click()
        card = page.locator("#txt2img_lora_cards .card[data-name='browserdemo']")
        card.wait_for(timeout=30000)
        page.wait_for_function("() => { const i = document.querySelector(\"#txt2img_lora_cards .card img\");"
                               " return i && i.complete && i.naturalWidth > 0; }", timeout=15000)
        shot(page, "extra-networks-lora")
        card.click()
        prompt = page.locator("#txt2img_prompt textarea")
        page.wait_for_function("() => document.querySelector('#txt2img_prompt textarea').value"
                               ".includes('<lora:browserdemo:1>')", timeout=15000)
        assert prompt.input_value() == "a cat <lora:browserdemo:1>"
        card.click()
        page.wait_for_function("() => !document.querySelector('#txt2img_prompt textarea').value"
                               ".includes('<lora:')", timeout=15000)
        assert prompt.input_value() == "a cat"
        # the search box filters the cards; 🔄 reads the folder again; 🎴 hides the panel
        page.locator("#txt2img_lora_extra_search input, #txt2img_lora_extra_search textarea").first.fill("zzz")
        page.get_by_text("No card matches the search.").wait_for(timeout=15000)
        assert card.count() == 0
        page.locator("#txt2img_lora_extra_search input, #txt2img_lora_extra_search textarea").first.fill("")
        page.locator("#txt2img_lora_extra_refresh").click()
        card.wait_for(timeout=15000)
        assert page.locator("#txt2img_extra_tabs [role=tab]").count() == 4
        page.locator("#txt2img_extra_networks").click()
        card.wait_for(state="hidden", timeout=15000)
        assert errors == []
    finally:
        context.close()
