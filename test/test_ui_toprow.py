"""The generation tabs' top row without a browser: token counts as A1111 counts them (chunks of 75,
BREAK, embeddings, the `before_token_counter` callback), the styles editor writing `styles.csv`, and
the page's <head> files and the route that serves only them."""
from __future__ import annotations

import base64
import os

import pytest

from modules import demo_checkpoint, script_callbacks, shared, styles, ui_head, ui_prompt_styles, ui_toprow
from modules.textual_inversion import textual_inversion
from job_helpers import empty_folder
from test_processing_helpers import env  # noqa: F401  (fixture)


def counter(text, **kw):
    return ui_toprow.token_counter_html(text, **kw)


# --- token counter ------------------------------------------------------------------------------------
def test_token_counter_counts_chunks_of_75(env):
    assert counter("") == "<span class='gr-box gr-text-input'>0/75</span>"
    tokens, limit = ui_toprow.count_tokens("a photo of a cat")
    assert (tokens, limit) == (5, 75)
    tokens, limit = ui_toprow.count_tokens(", ".join(["cat"] * 60))  # 119 tokens: two chunks
    assert tokens > 75 and limit == 150


def test_break_starts_a_new_chunk(env):
    tokens, limit = ui_toprow.count_tokens("a cat BREAK a dog")
    assert limit == 150 and tokens == 75 + 2


def test_prompt_editing_counts_the_longest_text_and_ignores_extra_network_tags(env):
    plain, _ = ui_toprow.count_tokens("a cat")
    assert ui_toprow.count_tokens("a cat <lora:nothing:1>") == (plain, 75)
    long_, _ = ui_toprow.count_tokens("a [cat:very big fluffy orange cat with stripes:0.5]")
    assert long_ == ui_toprow.count_tokens("a very big fluffy orange cat with stripes")[0]


def test_embedding_counts_its_vectors(env):
    with empty_folder(textual_inversion.embeddings_dir()) as folder:
        demo_checkpoint.write_demo_embedding(os.path.join(folder, "sernemb.safetensors"), vectors=3)
        textual_inversion.embedding_db.load_textual_inversion_embeddings(shared.sd_model, force_reload=True)
        assert ui_toprow.count_tokens("a sernemb")[0] == 1 + 3
    textual_inversion.embedding_db.load_textual_inversion_embeddings(shared.sd_model, force_reload=True)


def test_before_token_counter_callback_can_change_the_prompt(env):
    seen = []

    def longer(params):
        seen.append((params.prompt, params.steps, params.is_positive))
        params.prompt += ", extra words here"
    script_callbacks.on_before_token_counter(longer, name="test_ui_toprow")
    try:
        assert "5/75" in counter("cat")  # cat , extra words here
    finally:
        script_callbacks.remove_callbacks_for_function(longer)
    assert seen == [("cat", 20, True)]
    assert "1/75" in counter("cat")


def test_styles_count_toward_the_counter(env, tmp_path, monkeypatch):
    db = styles.StyleDatabase(str(tmp_path / "styles.csv"))
    db.add_style("wide", "{prompt}, very wide angle shot", "blurry, ugly")
    monkeypatch.setattr(shared, "prompt_styles", db)
    assert "6/75" in counter("cat", styles=["wide"])  # cat , very wide angle shot
    assert "3/75" in counter("", styles=["wide"], is_positive=False)  # blurry , ugly


# --- styles editor -----------------------------------------------------------------------------------
@pytest.fixture()
def style_db(tmp_path, monkeypatch):
    path = tmp_path / "styles.csv"
    path.write_text("name,prompt,negative_prompt\nold,\"{prompt}, old style\",\n", encoding="utf8")
    db = styles.StyleDatabase(str(path))
    monkeypatch.setattr(shared, "prompt_styles", db)
    return path


def test_styles_editor_saves_edits_and_deletes_in_styles_csv(style_db):
    ui_prompt_styles.save_style("neon", "{prompt}, neon lights", "dull")
    assert styles.StyleDatabase(str(style_db)).styles["neon"].prompt == "{prompt}, neon lights"
    ui_prompt_styles.save_style("neon", "{prompt}, neon glow", "dull")
    reread = styles.StyleDatabase(str(style_db)).styles
    assert (reread["neon"].prompt, reread["neon"].negative_prompt) == ("{prompt}, neon glow", "dull")
    assert "old" in reread
    assert ui_prompt_styles.select_style("neon")[:2] == ("{prompt}, neon glow", "dull")
    ui_prompt_styles.delete_style("neon")
    assert set(styles.StyleDatabase(str(style_db)).styles) == {"old"}
    assert not [p for p in os.listdir(style_db.parent) if p.endswith(".tmp")]


def test_styles_editor_refuses_bad_names_with_a_message(style_db):
    import gradio as gr
    with pytest.raises(gr.Error, match="name"):
        ui_prompt_styles.save_style("  ", "x", "")
    with pytest.raises(gr.Error, match="no style"):
        ui_prompt_styles.delete_style("missing")


def test_apply_styles_writes_them_into_the_prompts(style_db):
    ui_prompt_styles.save_style("neon", "{prompt}, neon lights", "dull")
    assert ui_prompt_styles.materialize_styles("a cat", "bad", ["old", "neon"]) == \
        ("a cat, old style, neon lights", "bad, dull", [])


# --- <head> and its route ----------------------------------------------------------------------------
@pytest.fixture()
def install(tmp_path):
    root, ext = tmp_path / "root", tmp_path / "ext1"
    (root / "javascript").mkdir(parents=True)
    (ext / "javascript").mkdir(parents=True)
    (root / "javascript" / "aaa.js").write_text("// a")
    (root / "javascript" / "ui.js").write_text("// helpers")
    (ext / "javascript" / "ext.js").write_text("window.extLoaded = 1;")
    (ext / "javascript" / "mod.mjs").write_text("export const x = 1;")
    (ext / "style.css").write_text("#ext { color: red }")
    (root / "user.css").write_text("body { }")
    (tmp_path / "secret.txt").write_text("no")
    return root, ext


def test_head_lists_serena_extension_and_user_files(install, tmp_path, monkeypatch):
    root, ext = install
    monkeypatch.setattr(ui_head, "_served", [])
    monkeypatch.setattr(ui_head, "_routes_added", False)
    inline = ui_head.head_html(ui_head.head_files(str(root), [str(ext)], data_path=str(tmp_path / "nodata")),
                               translations={}, options={})
    assert "<script type=\"text/javascript\">window.extLoaded = 1;</script>" in inline  # no route yet: inlined
    monkeypatch.setattr(ui_head, "_routes_added", True)
    files = ui_head.head_files(str(root), [str(ext)], data_path=str(tmp_path / "nodata"))
    assert [(os.path.basename(f.path), f.kind) for f in files] == [
        ("ui.js", "script"), ("aaa.js", "script"), ("ext.js", "script"), ("mod.mjs", "module"),
        ("style.css", "style"), ("user.css", "style")]
    page = ui_head.head_html(files, translations={"Generate": "Générer"}, options={"samples_format": "png"})
    assert '<script type="module" src="/serena-asset/3/mod.mjs?' in page
    assert '<link rel="stylesheet" property="stylesheet" href="/serena-asset/4/style.css?' in page
    assert "window.localization = {\"Generate\": \"Générer\"}" in page and '"samples_format": "png"' in page


def test_localization_comes_from_the_data_folder_and_extensions(tmp_path):
    (tmp_path / "localizations").mkdir()
    (tmp_path / "localizations" / "fr.json").write_text('{"Generate": "Générer"}', encoding="utf8")
    ext = tmp_path / "ext" / "localizations"
    ext.mkdir(parents=True)
    (ext / "de.json").write_text('{"Generate": "Erzeugen"}', encoding="utf8")
    files = ui_head.localization_files([str(tmp_path / "ext")], data_path=str(tmp_path))
    assert set(files) == {"fr", "de"}
    assert ui_head.localization_dict("de", files) == {"Generate": "Erzeugen"}
    assert ui_head.localization_dict("None", files) == {}


@pytest.fixture(autouse=True)
def _keep_head_state(monkeypatch):
    """The module's served list and route flag belong to the real page: restore them after a test."""
    monkeypatch.setattr(ui_head, "_served", list(ui_head._served))
    monkeypatch.setattr(ui_head, "_routes_added", ui_head._routes_added)


def _app(credentials=None):
    from fastapi import FastAPI
    app = FastAPI()
    app.state.serena_credentials = credentials
    ui_head.add_routes(app)
    return app


def test_route_serves_listed_files_only(install, tmp_path):
    from fastapi.testclient import TestClient
    root, ext = install
    ui_head.head_html(ui_head.head_files(str(root), [str(ext)], data_path=str(tmp_path)), translations={}, options={})
    client = TestClient(_app())
    response = client.get("/serena-asset/2/ext.js")
    assert response.status_code == 200 and response.text == "window.extLoaded = 1;"
    assert response.headers["content-type"].startswith("text/javascript")
    assert client.get("/serena-asset/4/style.css").headers["content-type"].startswith("text/css")
    for bad in ("/serena-asset/2/secret.txt", "/serena-asset/2/..%2F..%2Fsecret.txt", "/serena-asset/9/ext.js",
                "/serena-asset/x/ext.js", "/serena-asset/../secret.txt", "/serena-asset/2/../../secret.txt"):
        assert client.get(bad).status_code == 404, bad


def test_route_is_behind_the_api_credentials(install, tmp_path):
    from fastapi.testclient import TestClient
    root, ext = install
    ui_head.head_html(ui_head.head_files(str(root), [str(ext)], data_path=str(tmp_path)), translations={}, options={})
    client = TestClient(_app([("user", "pw")]))
    assert client.get("/serena-asset/2/ext.js").status_code == 401
    auth = {"Authorization": "Basic " + base64.b64encode(b"user:pw").decode()}
    assert client.get("/serena-asset/2/ext.js", headers=auth).status_code == 200


def test_notification_sound_is_listed_served_and_follows_its_option(install, tmp_path, monkeypatch):
    from fastapi.testclient import TestClient
    root, ext = install
    (tmp_path / "notification.mp3").write_bytes(b"ID3 sound")
    monkeypatch.setattr(ui_head, "_routes_added", True)
    files = ui_head.head_files(str(root), [], data_path=str(tmp_path))
    assert (os.path.basename(files[-1].path), files[-1].kind) == ("notification.mp3", "audio")
    page = ui_head.head_html(files, translations={}, options={})
    assert f'window.serena_notification_url = "/serena-asset/{len(files) - 1}/notification.mp3?' in page
    response = TestClient(_app()).get(f"/serena-asset/{len(files) - 1}/notification.mp3")
    assert response.status_code == 200 and response.headers["content-type"] == "audio/mpeg"
    monkeypatch.setitem(shared.opts.data, "notification_audio", False)  # the option turns it off
    assert all(f.kind != "audio" for f in ui_head.head_files(str(root), [], data_path=str(tmp_path)))


# --- ↙ paste -----------------------------------------------------------------------------------------
INFOTEXT = ("a red cube, studio light\nNegative prompt: blurry\n"
            "Steps: 7, Sampler: Euler a, Schedule type: Automatic, CFG scale: 5.5, Seed: 4321, Size: 96x64")


def test_paste_reads_the_infotext_typed_in_the_prompt_box(env):
    names = ["prompt", "negative_prompt", "steps", "cfg_scale", "seed", "width", "height", "sampler_name"]
    values = dict(zip(names, ui_toprow.paste_from_prompt(INFOTEXT, names, [])))
    assert values == {"prompt": "a red cube, studio light", "negative_prompt": "blurry", "steps": 7, "cfg_scale": 5.5,
                      "seed": 4321, "width": 96, "height": 64, "sampler_name": "Euler a"}


def test_paste_with_an_empty_box_uses_params_txt_and_plain_text_changes_nothing(env):
    path = os.path.join(shared.data_paths.data_path, "params.txt")
    with open(path, "w", encoding="utf8") as f:
        f.write(INFOTEXT)
    try:
        assert ui_toprow.paste_from_prompt("", ["steps"], []) == [7]
    finally:
        os.remove(path)
    import gradio as gr
    with pytest.warns(UserWarning, match="Steps"):  # gr.Warning outside a page request
        assert ui_toprow.paste_from_prompt("just a prompt", ["prompt", "steps"], []) == [gr.update(), gr.update()]


def test_toprow_builds_with_a1111_ids_and_wires_paste(env):
    import gradio as gr

    from modules.ui import GenerationTab
    with gr.Blocks() as blocks:
        tab = GenerationTab("img2img")
        ui_toprow.create_toprow(tab)
        tab.fields["steps"] = gr.Slider(1, 150, value=20, step=1, label="Sampling steps")
        ui_toprow.wire_toprow(tab, ["prompt", "negative_prompt", "steps", "not_in_this_tab"])
    ids = {getattr(block, "elem_id", None) for block in blocks.blocks.values()}
    assert {"img2img_prompt", "img2img_neg_prompt", "img2img_token_counter", "img2img_negative_token_counter",
            "img2img_generate", "img2img_interrupt", "img2img_skip", "img2img_paste", "img2img_clear_prompt",
            "img2img_styles", "img2img_style_apply", "img2img_styles_edit_button", "img2img_styles_dialog",
            "img2img_styles_edit_select", "img2img_edit_style_prompt", "img2img_edit_style_neg_prompt",
            "img2img_edit_style_save", "img2img_edit_style_delete"} <= ids
    assert tab.fields["styles"] is tab.toprow["styles"].dropdown
