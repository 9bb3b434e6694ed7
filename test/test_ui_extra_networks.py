"""The extra-networks panel (issue 11): card tags and their toggling, search/sort/limit, user
metadata saved beside the model, and the preview/metadata routes refusing paths outside the model
folders. The browser side is in test/browser/test_extra_networks.py."""
from __future__ import annotations

import base64
import json
import os
import time

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.torch import save_file

from modules import ui_extra_networks as uen


@pytest.fixture()
def lora_folder(serena, tmp_path, monkeypatch):
    """An empty `--lora-dir` in tmp_path, with the built-in pages registered."""
    from modules import lora_networks, shared
    folder = tmp_path / "Lora"
    folder.mkdir()
    monkeypatch.setattr(shared.cmd_opts, "lora_dir", str(folder), raising=False)
    lora_networks.list_available_networks(force=True)
    uen.ensure_pages()
    yield folder
    monkeypatch.undo()
    lora_networks.list_available_networks(force=True)


def write_lora(folder, name: str, mtime: float | None = None, **metadata) -> str:
    path = str(folder / f"{name}.safetensors")
    save_file({"x": torch.zeros(1)}, path, metadata={"ss_network_module": "networks.lora", **metadata})
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def lora_page():
    return uen.find_page("lora")


def test_toggle_in_prompt_adds_and_removes_like_a1111():
    assert uen.toggle_in_prompt("", "<lora:a:1>", " ") == "<lora:a:1>"
    assert uen.toggle_in_prompt("a cat", "<lora:a:1>", " ") == "a cat <lora:a:1>"
    assert uen.toggle_in_prompt("a cat, ", "emb", ", ") == "a cat, , emb"
    # a second click removes the tag, whatever weight the user typed since
    assert uen.toggle_in_prompt("a cat <lora:a:0.4>", "<lora:a:1>", " ") == "a cat"
    assert uen.toggle_in_prompt("<lora:a:1>, a cat", "<lora:a:1>", " ") == "a cat"
    assert uen.toggle_in_prompt("x <lora:a:1> trigger y", "<lora:a:1> trigger", " ") == "x y"
    # another network, or a name that merely contains the embedding's, is not removed
    assert uen.toggle_in_prompt("<lora:ab:1>", "<lora:a:1>", " ") == "<lora:ab:1> <lora:a:1>"
    assert uen.toggle_in_prompt("myembedding", "emb", " ") == "myembedding emb"
    assert uen.toggle_in_prompt("a emb b", "emb", " ") == "a b"


def test_lora_cards_search_sort_and_limit(lora_folder):
    now = time.time()
    write_lora(lora_folder, "zebra", now - 300)
    write_lora(lora_folder, "apple", now - 100)
    (lora_folder / "sub").mkdir()
    write_lora(lora_folder / "sub", "mango", now - 200, ss_output_name="tropical")
    Image.new("RGB", (8, 8), "red").save(lora_folder / "apple.preview.png")
    page = lora_page()
    page.refresh()
    html = page.create_html("txt2img")
    names = [i["name"] for i in uen.sort_items(list(page.items.values()))]
    assert names == ["apple", "mango", "zebra"]
    assert html.index("data-name='apple'") < html.index("data-name='mango'") < html.index("data-name='zebra'")
    assert "./sd_extra_networks/thumb?filename=" in html and "apple.preview.png" in html
    desc = page.create_html("txt2img", sort="Date Modified", descending=True)
    assert desc.index("'apple'") < desc.index("'mango'") < desc.index("'zebra'")
    # search: by name, by folder (search terms) and by alias; every word must match
    assert "'mango'" in page.create_html("txt2img", search="SUB") and "'apple'" not in page.create_html(
        "txt2img", search="sub")
    assert "'mango'" in page.create_html("txt2img", search="tropical")
    assert "No card matches" in page.create_html("txt2img", search="apple zebra")
    limited = page.create_html("txt2img", limit=2)
    assert limited.count("class='card") == 2 and "Showing 2 of 3" in limited
    assert page.items["mango"]["prompt"] == '"<lora:tropical:1>"'


def test_lora_card_click_tag_preferred_weight_and_activation_text(lora_folder):
    path = write_lora(lora_folder, "demo")
    lora_page().refresh()
    prompt = uen.card_clicked("lora", "demo", "a photo")
    assert prompt == "a photo <lora:demo:1>"
    assert uen.card_clicked("lora", "demo", prompt) == "a photo"
    # the editor writes <model>.json; the card then uses its weight and activation text
    status = uen.save_editor({"page": "lora", "name": "demo"}, "a demo", "shiny", 0.7, "mine")
    assert status == "Saved demo.json"
    assert uen.editor_values("lora", "demo") == ("a demo", "shiny", 0.7, "mine")
    lora_page().create_html("txt2img")
    prompt = uen.card_clicked("lora", "demo", "a photo")
    assert prompt == "a photo <lora:demo:0.7> shiny"
    assert uen.card_clicked("lora", "demo", prompt) == "a photo"
    with pytest.raises(LookupError):
        uen.card_clicked("lora", "gone", "")
    assert os.path.exists(os.path.splitext(path)[0] + ".json")


def test_user_metadata_saved_atomically_and_merged(tmp_path):
    model = tmp_path / "net.pt"
    model.write_bytes(b"x")
    (tmp_path / "net.json").write_text(json.dumps({"sd version": "SD1", "notes": "old"}))
    item = {"name": "net", "filename": str(model)}
    saved = uen.save_user_metadata(item, {"description": "d", "activation text": "t", "preferred weight": "0.5",
                                          "notes": "new"})
    on_disk = json.loads((tmp_path / "net.json").read_text())
    assert on_disk == saved == {"sd version": "SD1", "notes": "new", "description": "d", "activation text": "t",
                                "preferred weight": 0.5}
    assert sorted(os.listdir(tmp_path)) == ["net.json", "net.pt"]  # no temporary file left behind
    with pytest.raises(LookupError):
        uen.save_editor(None, "", "", 0, "")


def test_hypernetwork_and_embedding_tags(serena, tmp_path, monkeypatch):
    from modules import shared
    from modules.hypernetworks import hypernetwork
    from modules.textual_inversion import textual_inversion
    folder = tmp_path / "hypernetworks"
    folder.mkdir()
    (folder / "hyper.pt").write_bytes(b"x")
    monkeypatch.setattr(shared.cmd_opts, "hypernetwork_dir", str(folder), raising=False)
    monkeypatch.setattr(hypernetwork, "hypernetworks", {})
    uen.ensure_pages()
    uen.find_page("hypernetworks").refresh()
    assert uen.card_clicked("hypernetworks", "hyper", "x") == "x <hypernet:hyper:1>"
    emb = textual_inversion.Embedding(torch.zeros(1, 8), "myemb")
    emb.filename = str(tmp_path / "myemb.pt")
    monkeypatch.setitem(textual_inversion.embedding_db.word_embeddings, "myemb", emb)
    assert "data-name='myemb'" in uen.find_page("textual inversion").create_html("img2img")
    assert uen.card_clicked("textual inversion", "myemb", "a") == "a myemb"
    assert uen.card_clicked("textual inversion", "myemb", "a myemb") == "a"
    checkpoints = uen.find_page("checkpoints")
    assert "class='card" in checkpoints.create_html("txt2img")  # the session's demo checkpoint
    chosen = []
    from modules import ui_handlers
    monkeypatch.setattr(ui_handlers, "change_checkpoint", chosen.append)
    first = next(iter(checkpoints.items.values()))
    assert uen.card_clicked("checkpoints", first["name"], "a prompt") == "a prompt"  # a checkpoint card loads it
    assert chosen == [first["title"]] and first["title"] in ui_handlers.checkpoint_titles()


def _app(credentials=None) -> TestClient:
    app = FastAPI()
    app.state.serena_credentials = credentials
    uen.add_routes(app)
    return TestClient(app)


def test_thumb_route_serves_only_images_inside_model_folders(lora_folder, tmp_path):
    write_lora(lora_folder, "demo", ss_output_name="demo", ss_base_model_version="sd_v1")
    Image.new("RGB", (8, 8), "blue").save(lora_folder / "demo.png")
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    (lora_folder / "link.png").symlink_to(outside)
    client = _app()
    ok = client.get("/sd_extra_networks/thumb", params={"filename": str(lora_folder / "demo.png")})
    assert ok.status_code == 200 and ok.content == (lora_folder / "demo.png").read_bytes()
    for refused in (str(outside), str(lora_folder / ".." / "secret.png"), str(lora_folder / "link.png"),
                    str(lora_folder / "demo.safetensors"), "/etc/passwd", ""):
        assert client.get("/sd_extra_networks/thumb", params={"filename": refused}).status_code == 404, refused
    meta = client.get("/sd_extra_networks/metadata", params={"page": "lora", "item": "demo"}).json()
    assert json.loads(meta["metadata"])["ss_base_model_version"] == "sd_v1"
    assert client.get("/sd_extra_networks/metadata", params={"page": "lora", "item": "nope"}).json() == {
        "metadata": None}


def test_routes_are_behind_the_api_credentials(lora_folder):
    Image.new("RGB", (8, 8)).save(lora_folder / "x.png")
    client = _app([("user", "pw")])
    params = {"filename": str(lora_folder / "x.png")}
    assert client.get("/sd_extra_networks/thumb", params=params).status_code == 401
    assert client.get("/sd_extra_networks/metadata", params={"page": "lora", "item": "x"}).status_code == 401
    auth = {"Authorization": "Basic " + base64.b64encode(b"user:pw").decode()}
    assert client.get("/sd_extra_networks/thumb", params=params, headers=auth).status_code == 200


def test_create_ui_builds_the_panel_with_a1111_ids(serena):
    import gradio as gr

    from modules.ui import GenerationTab
    with gr.Blocks() as blocks:
        tab = GenerationTab("txt2img")
        tab.fields["prompt"] = gr.Textbox(elem_id="txt2img_prompt")
        tab.fields["negative_prompt"] = gr.Textbox(elem_id="txt2img_neg_prompt")
        panel = uen.create_ui(tab)
    ids = {getattr(b, "elem_id", None) for b in blocks.blocks.values()}
    titles = [p.title for p in panel.pages[:4]]
    assert titles == ["Textual Inversion", "Hypernetworks", "Checkpoints", "Lora"]
    for elem_id in ("txt2img_extra_networks", "txt2img_lora", "txt2img_lora_extra_search", "txt2img_lora_extra_sort",
                    "txt2img_lora_extra_refresh", "txt2img_checkpoints", "txt2img_textual_inversion"):
        assert elem_id in ids, elem_id
